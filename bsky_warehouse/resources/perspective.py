"""Google Perspective API client: one paid `comments:analyze` call per post, paced to the project's quota.

The quota is the binding constraint (1 QPS by default, a few tens when raised), so the client is built
around a token bucket that keeps the request rate at the configured QPS, with enough concurrent requests
in flight to fill it despite ~0.2-1 s latency. Every post ends in exactly one `ScoreResult`, reported
through the callback as soon as it is known so the asset can checkpoint it before the next call returns;
a 429 or a transient failure is retried (never dropped) until `max_retries` is spent.

The API key is a secret: it travels only in the `x-goog-api-key` header (never in a URL, which proxies,
httpx's request log and error messages quote) and is never logged, raised or recorded. A response that
rejects the request itself (a wrong or unauthorised key, a malformed request, a wrong endpoint) stops the
run with `PerspectiveConfigError` instead of recording every post as failed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
import orjson
from dagster import ConfigurableResource
from pydantic import Field

from bsky_warehouse.http_retry import backoff_delay, retry_after_s
from bsky_warehouse.records import (
    PERSPECTIVE_ATTRIBUTES,
    PERSPECTIVE_PRODUCTION,
    PostText,
    ScoreResult,
    prob_column,
)

log = logging.getLogger(__name__)

API_VERSION = "v1alpha1"
ANALYZE_PATH = f"/{API_VERSION}/comments:analyze"
API_KEY_HEADER = "x-goog-api-key"
# The detail type of Perspective's per-comment errors (its `errorType`s): facts about one comment, so the
# post gets a row with a reason. Any other client error (bad key, no permission, malformed request, unknown
# endpoint) is about the request.
PERSPECTIVE_ERROR_DETAIL = "type.googleapis.com/google.commentanalyzer.v1alpha1.Error"
# Perspective rejects comments over 20 KB of UTF-8 with COMMENT_TOO_LONG; checking locally saves a call.
MAX_COMMENT_BYTES = 20480

REASON_TEXT_TOO_SHORT = "text_too_short"
REASON_COMMENT_TOO_LONG = "comment_too_long"
REASON_COMMENT_EMPTY = "comment_empty"
REASON_LANGUAGE_NOT_SUPPORTED = "language_not_supported"
REASON_API_ERROR = "api_error"


class MalformedResponse(ValueError):
    """A 200 response whose body is not a usable AnalyzeCommentResponse (treated as transient)."""


class PerspectiveConfigError(RuntimeError):
    """Perspective rejects the request as a whole (API_KEY_INVALID, PERMISSION_DENIED, a malformed request,
    a wrong base URL): a configuration error, not a fact about posts, so the run stops and no failed rows
    are written; every post would otherwise be recorded `failed/api_error` in a "successful" run."""


class ErrorClass(NamedTuple):
    """How to react to a non-200 response.

    `reason` is what the post is recorded with if we give up; `retryable` says whether the same request
    may succeed later; `unsupported_attribute` names the attribute a LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE
    error blames (the fix is then a different request, not a retry); `rejects_request` marks an error
    about the request or the key rather than the post: the run stops (PerspectiveConfigError).
    """

    reason: str
    retryable: bool
    unsupported_attribute: str | None
    rejects_request: bool = False


# --------------------------------------------------------------------------------------------------
# Pure helpers (unit-tested without a server)
# --------------------------------------------------------------------------------------------------


def build_request(text: str, attributes: Iterable[str], languages: Sequence[str] = ()) -> dict[str, Any]:
    """The AnalyzeCommentRequest body. `doNotStore` because research posts must not be retained by Google;
    `languages` is omitted when empty so the API auto-detects."""
    body: dict[str, Any] = {
        "comment": {"text": text},
        "requestedAttributes": {attribute: {} for attribute in attributes},
        "doNotStore": True,
    }
    if languages:
        body["languages"] = list(languages)
    return body


def _as_json(body: Mapping[str, Any] | bytes | str | None) -> Any:
    if body is None or isinstance(body, Mapping):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def parse_scores(body: Mapping[str, Any] | bytes | str, expected: Iterable[str] | None = None) -> dict[str, float]:
    """`attributeScores.<ATTR>.summaryScore.value` keyed by `prob_*` column.

    Raises MalformedResponse when the body is not JSON, lacks attributeScores, has a score that is not a
    number in [0, 1], or (when `expected` is given) misses a requested attribute: a partial row would be
    indistinguishable from an attribute we never asked for.
    """
    data = body if isinstance(body, Mapping) else _as_json(body)
    if not isinstance(data, Mapping):
        raise MalformedResponse("response body is not a JSON object")
    scores = data.get("attributeScores")
    if not isinstance(scores, Mapping) or not scores:
        raise MalformedResponse("response has no attributeScores")
    probs: dict[str, float] = {}
    for attribute, entry in scores.items():
        try:
            value = entry["summaryScore"]["value"]
        except (KeyError, TypeError):
            raise MalformedResponse(f"attribute {attribute} has no summaryScore.value") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise MalformedResponse(f"attribute {attribute} has an invalid score {value!r}")
        probs[prob_column(attribute)] = float(value)
    if expected is not None:
        missing = [a for a in expected if prob_column(a) not in probs]
        if missing:
            raise MalformedResponse(f"response lacks requested attributes {missing}")
    return probs


def _error_types(error: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = error.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, Mapping)]


def classify_error(status_code: int, body: Mapping[str, Any] | bytes | str | None) -> ErrorClass:
    """Map a Perspective error response to (reason, retryable, unsupported_attribute, rejects_request).

    Perspective reports its per-comment errors as 400 INVALID_ARGUMENT with a commentanalyzer `Error`
    detail carrying an `errorType` (LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE, COMMENT_EMPTY, COMMENT_TOO_LONG,
    ...): those become the post's row. Quota errors are 429 RESOURCE_EXHAUSTED (RATE_LIMIT_EXCEEDED) and
    5xx/408 the server's transient failures: retried. Every other client error is about the request, not
    the post: a bad key is 400 INVALID_ARGUMENT with reason API_KEY_INVALID (and no errorType), a key
    without access 403 PERMISSION_DENIED, a missing key 403, a wrong URL 404, a malformed body 400.
    Recording those per post would turn a configuration mistake into a "successful" run of failed rows.
    """
    data = _as_json(body)
    error = data.get("error") if isinstance(data, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    details = _error_types(error)
    error_types = {d.get("errorType") for d in details} | {d.get("reason") for d in details}
    message = str(error.get("message", ""))

    if status_code == 429 or error.get("status") == "RESOURCE_EXHAUSTED":
        return ErrorClass(REASON_API_ERROR, True, None)
    if status_code >= 500 or status_code == 408:
        return ErrorClass(REASON_API_ERROR, True, None)
    if "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE" in error_types:
        attribute = None
        for detail in details:
            info = detail.get("languageNotSupportedByAttributeError")
            if isinstance(info, Mapping) and isinstance(info.get("attribute"), str):
                attribute = info["attribute"]
                break
        if attribute is None and message.startswith("Attribute "):
            attribute = message.split()[1]
        return ErrorClass(REASON_LANGUAGE_NOT_SUPPORTED, False, attribute)
    if "COMMENT_EMPTY" in error_types:
        return ErrorClass(REASON_COMMENT_EMPTY, False, None)
    if "COMMENT_TOO_LONG" in error_types or "too many bytes" in message:
        return ErrorClass(REASON_COMMENT_TOO_LONG, False, None)
    if status_code == 400 and any(d.get("@type") == PERSPECTIVE_ERROR_DETAIL for d in details):
        # Another of Perspective's per-comment errors: this post fails, the next one may not.
        return ErrorClass(REASON_API_ERROR, False, None)
    return ErrorClass(REASON_API_ERROR, False, None, rejects_request=True)


def rejection_message(status_code: int, body: Mapping[str, Any] | bytes | str | None) -> str:
    """What to tell the user when Perspective rejects the request itself: Google's status, reason and
    message, and which setting to look at. The caller redacts it: Google quotes the key in some messages
    (`Consumer 'api_key:…' has been suspended`)."""
    data = _as_json(body)
    error = data.get("error") if isinstance(data, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    reasons = [str(d["reason"]) for d in _error_types(error) if isinstance(d.get("reason"), str)]
    status = str(error.get("status") or "")
    message = _error_message(body)
    if "API_KEY_INVALID" in reasons or "API key not valid" in message:
        hint = "the API key is not valid: check PERSPECTIVE_API_KEY"
    elif status_code in (401, 403) or status == "PERMISSION_DENIED":
        hint = (
            "the key is missing or not allowed to call the Comment Analyzer API: check PERSPECTIVE_API_KEY, the "
            "key's API restrictions and that the API is enabled for its project"
        )
    elif status_code == 404:
        hint = "no Perspective API at this address: check PERSPECTIVE_BASE_URL"
    else:
        hint = "the request itself was rejected (check the scorer's attributes and languages)"
    what = " ".join(part for part in (status, ", ".join(reasons)) if part)
    return f"Perspective rejected the request (HTTP {status_code}{' ' + what if what else ''}): {hint}. {message}"


def redact(text: str, secret: str) -> str:
    """`text` with the API key removed, for error messages and logs (a transport error could quote a
    request's headers one day; the key is never worth the risk)."""
    return text.replace(secret, "REDACTED") if secret else text


# --------------------------------------------------------------------------------------------------
# Rate limiting
# --------------------------------------------------------------------------------------------------


class TokenBucket:
    """Async token bucket at `rate` tokens/s with AIMD adaptation to 429s.

    A small capacity (2 tokens) absorbs event-loop wake-up lateness so the long-run rate really reaches
    `rate`, without ever bursting more than a couple of requests past the quota. Waiters are served in
    FIFO order through a lock. On a 429 the bucket pauses (for Retry-After when given) and cuts the rate;
    successes then creep it back to the configured maximum, so a quota lower than configured settles
    instead of being hammered.
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        min_rate_fraction: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = rate
        self.rate = rate
        self.min_rate = rate * min_rate_fraction
        self.capacity = capacity if capacity is not None else min(2.0, max(1.0, rate))
        self._clock = clock
        self._tokens = 1.0
        self._last = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        """Wait until one request may be sent."""
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)

    def on_throttled(self, pause_s: float) -> None:
        """A 429: stop sending for `pause_s`, drop saved tokens and cut the rate by a fifth."""
        now = self._clock()
        self._refill(now)
        self._tokens = 0.0
        # 429s for requests already in flight when the first one arrived are the same episode: cut once.
        if now >= self._paused_until:
            self.rate = max(self.min_rate, self.rate * 0.8)
        self._paused_until = max(self._paused_until, now + pause_s)

    def on_success(self) -> None:
        """Additive recovery: ~50 successes bring a halved rate back to the maximum."""
        if self.rate < self.max_rate:
            self._refill(self._clock())
            self.rate = min(self.max_rate, self.rate + self.max_rate * 0.01)


# --------------------------------------------------------------------------------------------------
# Scoring loop
# --------------------------------------------------------------------------------------------------


@dataclass
class ScoreStats:
    """What one `score` call cost and how it went (requests include retries; each is one quota unit)."""

    posts: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    requests: int = 0
    http_429: int = 0
    http_5xx: int = 0
    timeouts: int = 0
    transport_errors: int = 0
    malformed: int = 0
    retries: int = 0
    language_fallbacks: int = 0
    elapsed_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def achieved_qps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class ClientSettings:
    """Plain copy of the resource's config, so the async loop needs nothing from Dagster. The key is left
    out of the repr: settings end up in tracebacks and debug logs."""

    api_key: str = field(repr=False)
    base_url: str
    qps: float
    max_concurrency: int
    timeout_s: float
    max_retries: int
    attributes: tuple[str, ...]
    languages: tuple[str, ...]
    min_text_length: int
    use_post_langs: bool = False
    max_language_fallbacks: int = 3
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0


class _Attempt(NamedTuple):
    """Outcome of one HTTP exchange: exactly one of probs / error / transient is meaningful; `rejection`
    is the user-facing message when the error rejects the request itself."""

    probs: dict[str, float] | None
    error: ErrorClass | None
    retry_after: float | None
    transient: str | None
    rejection: str | None = None


class PerspectiveClient:
    """The asyncio scoring loop: a pool of `max_concurrency` workers sharing one token bucket."""

    def __init__(self, settings: ClientSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.stats = ScoreStats()
        self._transport = transport
        self._rng = random.Random()
        self._url = f"{settings.base_url.rstrip('/')}{ANALYZE_PATH}"

    async def run(self, posts: Sequence[PostText], on_result: Callable[[ScoreResult], None]) -> ScoreStats:
        """Score every post; `on_result` is called once per post, in completion order.

        If `on_result` raises (e.g. the checkpoint write failed) the remaining work is cancelled and the
        error propagates: spending quota on results that cannot be stored is pointless. So does a
        PerspectiveConfigError, before any result is reported for the post that met it.
        """
        s = self.settings
        self.stats = ScoreStats(posts=len(posts))
        started = time.monotonic()
        bucket = TokenBucket(s.qps)
        queue: asyncio.Queue[PostText] = asyncio.Queue()
        for post in posts:
            queue.put_nowait(post)
        limits = httpx.Limits(max_connections=s.max_concurrency, max_keepalive_connections=s.max_concurrency)
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(s.timeout_s),
            limits=limits,
            transport=self._transport,
            headers=request_headers(s.api_key),
        ) as client:

            async def worker() -> None:
                while True:
                    try:
                        post = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    result = await self._score_one(client, bucket, post)
                    self._record(result)
                    on_result(result)

            workers = [asyncio.create_task(worker()) for _ in range(min(s.max_concurrency, len(posts)))]
            try:
                await asyncio.gather(*workers)
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                self.stats.elapsed_s = time.monotonic() - started
        return self.stats

    def _record(self, result: ScoreResult) -> None:
        stats = self.stats
        if result.status == "ok":
            stats.ok += 1
        elif result.status == "failed":
            stats.failed += 1
        else:
            stats.skipped += 1
        if result.reason:
            stats.reasons[result.reason] = stats.reasons.get(result.reason, 0) + 1

    async def _score_one(self, client: httpx.AsyncClient, bucket: TokenBucket, post: PostText) -> ScoreResult:
        s = self.settings
        if len(post.text.strip()) < s.min_text_length:
            return ScoreResult(post.uri, "skipped", REASON_TEXT_TOO_SHORT)
        if len(post.text.encode("utf-8")) > MAX_COMMENT_BYTES:
            return ScoreResult(post.uri, "failed", REASON_COMMENT_TOO_LONG)

        attributes = list(s.attributes)
        languages = post.langs if s.use_post_langs and post.langs else s.languages
        retries = 0
        fallbacks = 0
        while True:
            await bucket.acquire()
            attempt = await self._post(client, post.text, attributes, languages)
            if attempt.probs is not None:
                bucket.on_success()
                return ScoreResult(post.uri, "ok", None, attempt.probs)
            if attempt.rejection is not None:
                raise PerspectiveConfigError(attempt.rejection)
            if attempt.error is not None and not attempt.error.retryable:
                error = attempt.error
                if error.reason == REASON_LANGUAGE_NOT_SUPPORTED and fallbacks < s.max_language_fallbacks:
                    narrowed = self._narrow(attributes, error.unsupported_attribute, first=fallbacks == 0)
                    if narrowed and narrowed != attributes:
                        fallbacks += 1
                        self.stats.language_fallbacks += 1
                        attributes = narrowed
                        continue
                return ScoreResult(post.uri, "failed", error.reason)
            # Transient: 429, 5xx, timeout, connection error or malformed 200.
            if retries >= s.max_retries:
                log.warning("perspective: giving up on %s after %d retries (%s)", post.uri, retries, attempt.transient)
                return ScoreResult(post.uri, "failed", REASON_API_ERROR)
            delay = backoff_delay(retries, s.backoff_base_s, s.backoff_max_s, self._rng)
            if attempt.transient == "http_429":
                if attempt.retry_after is not None:
                    delay = attempt.retry_after + self._rng.uniform(0, 0.1 * max(attempt.retry_after, 0.1))
                bucket.on_throttled(attempt.retry_after if attempt.retry_after is not None else delay)
            retries += 1
            self.stats.retries += 1
            await asyncio.sleep(delay)

    @staticmethod
    def _narrow(attributes: list[str], unsupported: str | None, first: bool) -> list[str]:
        """The attributes to ask for after a LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE error.

        The first fallback keeps only production attributes (the experimental ones are English-first,
        so one error usually means many unsupported ones); each further one drops the attribute named.
        """
        kept = [a for a in attributes if a in PERSPECTIVE_PRODUCTION] if first else list(attributes)
        return [a for a in kept if a != unsupported]

    async def _post(
        self, client: httpx.AsyncClient, text: str, attributes: list[str], languages: Sequence[str]
    ) -> _Attempt:
        s = self.settings
        stats = self.stats
        payload = orjson.dumps(build_request(text, attributes, languages))
        stats.requests += 1
        try:
            response = await client.post(self._url, content=payload)
        except httpx.TimeoutException:
            stats.timeouts += 1
            return _Attempt(None, None, None, "timeout")
        except httpx.TransportError as exc:
            stats.transport_errors += 1
            log.debug("perspective transport error: %s", redact(f"{type(exc).__name__}: {exc}", s.api_key))
            return _Attempt(None, None, None, "transport")
        if response.status_code == 200:
            try:
                return _Attempt(parse_scores(response.content, expected=attributes), None, None, None)
            except MalformedResponse as exc:
                stats.malformed += 1
                log.debug("perspective malformed response: %s", exc)
                return _Attempt(None, None, None, "malformed")
        error = classify_error(response.status_code, response.content)
        if response.status_code == 429:
            stats.http_429 += 1
            return _Attempt(None, error, retry_after_s(response.headers), "http_429")
        if response.status_code >= 500:
            stats.http_5xx += 1
        if error.rejects_request:
            message = redact(rejection_message(response.status_code, response.content), s.api_key)
            return _Attempt(None, error, None, None, rejection=message)
        if not error.retryable and error.reason == REASON_API_ERROR:
            message = _error_message(response.content)
            log.warning("perspective HTTP %d: %s", response.status_code, redact(message, s.api_key))
        return _Attempt(None, error, None, f"http_{response.status_code}")


def _error_message(body: Mapping[str, Any] | bytes | str | None) -> str:
    """Google's `error.message`, else the start of the body (an HTML error page from a proxy)."""
    data = _as_json(body)
    if isinstance(data, Mapping) and isinstance(data.get("error"), Mapping):
        return str(data["error"].get("message", ""))[:500]
    raw = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else b""
    return raw[:200].decode("utf-8", "replace").strip()


def request_headers(api_key: str) -> dict[str, str]:
    """Headers of every analyze request: the key goes in `x-goog-api-key` (omitted when empty, which
    Google answers as a missing key), never in the URL."""
    headers = {"content-type": "application/json"}
    if api_key:
        headers[API_KEY_HEADER] = api_key
    return headers


def default_max_concurrency(qps: float, expected_latency_s: float = 0.5) -> int:
    """Enough requests in flight to keep `qps` flowing at ~2x the expected latency (headroom for slow
    responses and retry waits, which hold a worker), never fewer than 4."""
    return max(4, math.ceil(qps * expected_latency_s * 2))


class PerspectiveResource(ConfigurableResource):
    """Toxicity scores from Google's Perspective API (implements the `Scorer` protocol)."""

    api_key: str = Field(description="Perspective API key; wire it from EnvVar('PERSPECTIVE_API_KEY').")
    base_url: str = Field(default="https://commentanalyzer.googleapis.com")
    qps: float = Field(default=1.0, gt=0, description="Project quota in requests per second.")
    max_concurrency: int | None = Field(
        default=None, description="Requests in flight; default derived from qps and ~0.5 s latency."
    )
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=6, ge=0, description="Retries per post for 429/5xx/network errors.")
    attributes: list[str] = Field(default_factory=lambda: list(PERSPECTIVE_ATTRIBUTES))
    languages: list[str] = Field(default_factory=lambda: ["en"])
    min_text_length: int = Field(default=1, ge=0, description="Shorter stripped texts are skipped.")
    use_post_langs: bool = Field(
        default=False, description="Send each post's own `langs` (when it has any) instead of `languages`."
    )
    max_language_fallbacks: int = Field(default=3, ge=0)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)

    @property
    def name(self) -> str:
        return "perspective"

    @property
    def version(self) -> str:
        return API_VERSION

    def client_settings(self) -> ClientSettings:
        return ClientSettings(
            api_key=self.api_key,
            base_url=self.base_url,
            qps=self.qps,
            max_concurrency=self.max_concurrency or default_max_concurrency(self.qps),
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            attributes=tuple(self.attributes),
            languages=tuple(self.languages),
            min_text_length=self.min_text_length,
            use_post_langs=self.use_post_langs,
            max_language_fallbacks=self.max_language_fallbacks,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
        )

    def score(self, posts: Sequence[PostText], on_result: Callable[[ScoreResult], None]) -> ScoreStats:
        """Score `posts`, calling `on_result` once per post from the event-loop thread; returns stats.

        Synchronous because Dagster assets are; runs its own event loop (so it must not be called from
        inside a running loop).
        """
        unknown = sorted(set(self.attributes) - set(PERSPECTIVE_ATTRIBUTES))
        if unknown:
            raise ValueError(f"unknown Perspective attributes: {unknown}")
        if not posts:
            return ScoreStats()
        return asyncio.run(PerspectiveClient(self.client_settings()).run(posts, on_result))

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """pydantic's repr/str would print every field, the API key included."""
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "api_key" else value)
