"""Sociopolitical labels from an OpenAI-compatible chat-completions endpoint: the Dagster resource and its client.

The instrument (prompt, schema, version) is `bsky_warehouse.instrument`; what counts as a usable answer is
`bsky_warehouse.label_validation`. This module sends the requests: `OpenAILabelerResource` works against any
OpenAI-compatible `/chat/completions` endpoint (vLLM serve, OpenAI, ...), calling it concurrently over
asyncio/httpx with retries for 429/5xx/timeouts/connection errors. A minibatch with a bad answer is re-asked
one post at a time (so a model that lost count cannot shift labels onto the wrong posts); a single post is
re-asked a bounded number of times and then recorded as `failed` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
import orjson
from dagster import ConfigurableResource
from pydantic import Field

from bsky_warehouse.http_retry import backoff_delay, retry_after_s
from bsky_warehouse.instrument import SCHEMA, SCHEMA_NAME, TEMPERATURE, build_messages, post_ids, prompt_version_for
from bsky_warehouse.label_validation import (
    REASON_API_ERROR,
    REASON_EMPTY_TEXT,
    AnswerError,
    Label,
    parse_answer,
    parse_completion,
)
from bsky_warehouse.records import LabelResult, PostText

log = logging.getLogger(__name__)


def response_format() -> dict[str, Any]:
    """OpenAI `response_format` asking for strict JSON-schema output."""
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": SCHEMA, "strict": True}}


def build_request(
    model: str,
    posts: Sequence[PostText],
    *,
    max_tokens: int | None = None,
    ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The `/chat/completions` body. Temperature 0 because labels must be reproducible, not creative."""
    body: dict[str, Any] = {
        "model": model,
        "messages": build_messages(posts, ids),
        "temperature": TEMPERATURE,
        "response_format": response_format(),
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


class LabelerConfigError(RuntimeError):
    """The endpoint rejects us as a whole (401/403/404): a configuration error, not a fact about posts,
    so the run stops instead of recording every post as failed."""


@dataclass
class LabelStats:
    """What one `label` call cost and how it went (requests include retries and per-post re-asks)."""

    posts: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    requests: int = 0
    retries: int = 0
    splits: int = 0
    http_429: int = 0
    http_5xx: int = 0
    timeouts: int = 0
    transport_errors: int = 0
    invalid_answers: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_in_flight: int = 0
    elapsed_s: float = 0.0

    @property
    def posts_per_s(self) -> float:
        return self.posts / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def record(self, result: LabelResult) -> None:
        if result.status == "ok":
            self.ok += 1
        elif result.status == "failed":
            self.failed += 1
        else:
            self.skipped += 1
        if result.reason:
            self.reasons[result.reason] = self.reasons.get(result.reason, 0) + 1

    def invalid(self, reason: str) -> None:
        self.invalid_answers[reason] = self.invalid_answers.get(reason, 0) + 1


@dataclass(frozen=True)
class ClientSettings:
    """Plain copy of the resource config, so the async loop needs nothing from Dagster. The key is left
    out of the repr: settings end up in tracebacks and debug logs."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    max_concurrency: int = 64
    batch_size: int = 1
    timeout_s: float = 120.0
    max_retries: int = 5
    max_invalid_retries: int = 1
    max_tokens: int = 256
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass
class _Work:
    """One request's worth of posts and the retries it has used."""

    posts: tuple[PostText, ...]
    transport_retries: int = 0
    invalid_retries: int = 0


class _Outcome(NamedTuple):
    """One HTTP exchange: exactly one of labels / invalid / transient / fatal is set."""

    labels: dict[str, Label] | None = None
    invalid: AnswerError | None = None
    transient: str | None = None
    retry_after: float | None = None
    fatal: str | None = None


def minibatches(posts: Sequence[PostText], size: int) -> Iterator[tuple[PostText, ...]]:
    """`posts` in order, `size` to a request (the last one shorter): shared with the offline backend."""
    for start in range(0, len(posts), size):
        yield tuple(posts[start : start + size])


class OpenAILabelClient:
    """The asyncio labeling loop: `max_concurrency` workers pull requests from one queue.

    Retry waits are timers that put the work back on the queue, not sleeping workers, so the in-flight
    requests stay at `max_concurrency` while some posts wait out a backoff. A 429 with Retry-After also
    pauses new sends for that long (the server said the whole account is over its rate).
    """

    def __init__(self, settings: ClientSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.stats = LabelStats()
        self._transport = transport
        self._rng = random.Random()
        self._url = f"{settings.base_url.rstrip('/')}/chat/completions"
        self._paused_until = 0.0
        self._in_flight = 0

    async def run(self, posts: Sequence[PostText], on_result: Callable[[LabelResult], None]) -> LabelStats:
        """Label every post, calling `on_result` exactly once per post as soon as its result is known.

        If `on_result` raises (e.g. the checkpoint write failed) the remaining work is cancelled and the
        error propagates: paying for answers that cannot be stored is pointless.
        """
        s = self.settings
        self.stats = LabelStats(posts=len(posts))
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Work | None] = asyncio.Queue()
        timers: list[asyncio.TimerHandle] = []
        outstanding = 0

        def emit(result: LabelResult) -> None:
            self.stats.record(result)
            on_result(result)

        labelable = []
        for post in posts:
            if post.text.strip():
                labelable.append(post)
            else:
                emit(LabelResult(post.uri, "skipped", REASON_EMPTY_TEXT))
        for batch in minibatches(labelable, max(1, s.batch_size)):
            queue.put_nowait(_Work(batch))
            outstanding += 1
        n_workers = min(s.max_concurrency, outstanding)
        if n_workers == 0:
            self.stats.elapsed_s = time.monotonic() - started
            return self.stats

        def finish(count: int = 1) -> None:
            nonlocal outstanding
            outstanding -= count
            if outstanding == 0:
                for _ in range(n_workers):
                    queue.put_nowait(None)

        def requeue(work: _Work, delay: float) -> None:
            if delay <= 0:
                queue.put_nowait(work)
            else:
                timers.append(loop.call_later(delay, queue.put_nowait, work))

        headers = {"content-type": "application/json"}
        if s.api_key:
            headers["authorization"] = f"Bearer {s.api_key}"
        # One single-connection client per worker: httpcore's pool scans every connection for every
        # request it assigns, which at 64 connections costs more CPU than the requests themselves
        # (measured: 125 vs ~300 posts/s at 64 x 200 ms). A worker sends one request at a time anyway.
        timeout = httpx.Timeout(s.timeout_s)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        # Loading the CA bundle takes ~20 ms per client; one shared context serves them all.
        ssl_context = httpx.create_ssl_context()
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        timeout=timeout, limits=limits, transport=self._transport, headers=headers, verify=ssl_context
                    )
                )
                for _ in range(n_workers)
            ]

            async def worker(client: httpx.AsyncClient) -> None:
                while True:
                    work = await queue.get()
                    if work is None:
                        return
                    await self._wait_for_pause()
                    outcome = await self._post(client, work.posts)
                    self._handle(work, outcome, emit, finish, requeue)

            workers = [asyncio.create_task(worker(client)) for client in clients]
            try:
                await asyncio.gather(*workers)
            finally:
                for task in workers:
                    task.cancel()
                for timer in timers:
                    timer.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                self.stats.elapsed_s = time.monotonic() - started
        return self.stats

    def _handle(
        self,
        work: _Work,
        outcome: _Outcome,
        emit: Callable[[LabelResult], None],
        finish: Callable[[int], None],
        requeue: Callable[[_Work, float], None],
    ) -> None:
        """Turn one exchange into results, a split, a re-ask or a delayed retry."""
        s = self.settings
        stats = self.stats
        posts = work.posts
        if outcome.labels is not None:
            for post_id, post in zip(post_ids(len(posts)), posts, strict=True):
                emit(outcome.labels[post_id].result(post.uri))
            finish(1)
        elif outcome.invalid is not None or (outcome.fatal is not None and len(posts) > 1):
            reason = outcome.invalid.reason if outcome.invalid is not None else REASON_API_ERROR
            if len(posts) > 1:
                # Never guess which label belongs to which post: ask again, one post per request.
                stats.splits += 1
                for post in posts:
                    requeue(_Work((post,)), 0.0)
                finish(1 - len(posts))
            elif work.invalid_retries < s.max_invalid_retries:
                work.invalid_retries += 1
                stats.retries += 1
                requeue(work, 0.0)
            else:
                log.warning("llm: giving up on %s: %s", posts[0].uri, outcome.invalid)
                emit(LabelResult(posts[0].uri, "failed", reason))
                finish(1)
        elif outcome.fatal is not None:
            log.warning("llm: request for %s rejected: %s", posts[0].uri, outcome.fatal)
            emit(LabelResult(posts[0].uri, "failed", REASON_API_ERROR))
            finish(1)
        else:
            if work.transport_retries >= s.max_retries:
                log.warning(
                    "llm: giving up on %d post(s) after %d retries (%s)", len(posts), s.max_retries, outcome.transient
                )
                for post in posts:
                    emit(LabelResult(post.uri, "failed", REASON_API_ERROR))
                finish(1)
                return
            delay = backoff_delay(work.transport_retries, s.backoff_base_s, s.backoff_max_s, self._rng)
            if outcome.retry_after is not None:
                delay = outcome.retry_after + self._rng.uniform(0, 0.1 * max(outcome.retry_after, 0.1))
                self._paused_until = max(self._paused_until, time.monotonic() + outcome.retry_after)
            work.transport_retries += 1
            stats.retries += 1
            requeue(work, delay)

    async def _wait_for_pause(self) -> None:
        while (wait := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    async def _post(self, client: httpx.AsyncClient, posts: tuple[PostText, ...]) -> _Outcome:
        s = self.settings
        stats = self.stats
        ids = post_ids(len(posts))
        payload = orjson.dumps(build_request(s.model, posts, max_tokens=s.max_tokens * len(posts), ids=ids))
        stats.requests += 1
        self._in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, self._in_flight)
        try:
            response = await client.post(self._url, content=payload)
        except httpx.TimeoutException:
            stats.timeouts += 1
            return _Outcome(transient="timeout")
        except httpx.TransportError as exc:
            stats.transport_errors += 1
            log.debug("llm transport error: %s", type(exc).__name__)
            return _Outcome(transient="transport")
        finally:
            self._in_flight -= 1
        status = response.status_code
        if status == 200:
            try:
                content, usage = parse_completion(response.content)
                stats.prompt_tokens += usage.get("prompt_tokens", 0)
                stats.completion_tokens += usage.get("completion_tokens", 0)
                return _Outcome(labels=parse_answer(content, ids))
            except AnswerError as exc:
                stats.invalid(exc.reason)
                return _Outcome(invalid=exc)
            except ValueError as exc:
                log.debug("llm malformed response: %s", exc)
                return _Outcome(transient="malformed_response")
        if status == 429:
            stats.http_429 += 1
            return _Outcome(transient="http_429", retry_after=retry_after_s(response.headers))
        if status >= 500 or status in (408, 409):
            if status >= 500:
                stats.http_5xx += 1
            return _Outcome(transient=f"http_{status}")
        message = response.text[:300]
        if status in (401, 403, 404):
            raise LabelerConfigError(f"{self._url} answered HTTP {status}: {message}")
        return _Outcome(fatal=f"HTTP {status}: {message}")


class OpenAILabelerResource(ConfigurableResource):
    """Labels from an OpenAI-compatible chat-completions endpoint (implements the `Labeler` protocol).

    Works against `vllm serve` (the default base_url), OpenAI itself, or any compatible gateway.
    """

    base_url: str = Field(default="http://127.0.0.1:8000/v1", description="Endpoint root, up to /v1.")
    model: str = Field(description="Model name as the endpoint knows it; recorded with every label.")
    api_key: str | None = Field(default=None, description="Bearer token; wire it from an EnvVar. Never logged.")
    max_concurrency: int = Field(default=64, ge=1, description="Requests in flight at once.")
    batch_size: int = Field(default=1, ge=1, description="Posts per request (minibatch).")
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0, description="Retries per request for 429/5xx/network errors.")
    max_invalid_retries: int = Field(default=1, ge=0, description="Re-asks of one post whose answer is invalid.")
    max_tokens: int = Field(default=256, ge=16, description="Completion-token budget per post in a request.")
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)

    @property
    def name(self) -> str:
        return "openai"

    @property
    def prompt_version(self) -> str:
        """The instrument's version for this minibatch size (see `instrument.prompt_version_for`)."""
        return prompt_version_for(self.batch_size)

    def client_settings(self) -> ClientSettings:
        return ClientSettings(
            base_url=self.base_url,
            model=self.model,
            api_key=self.api_key,
            max_concurrency=self.max_concurrency,
            batch_size=self.batch_size,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            max_invalid_retries=self.max_invalid_retries,
            max_tokens=self.max_tokens,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
        )

    def label(self, posts: Sequence[PostText], on_result: Callable[[LabelResult], None]) -> LabelStats:
        """Label `posts`, calling `on_result` once per post from the event-loop thread; returns stats.

        Synchronous because Dagster assets are; it runs its own event loop, so it must not be called
        from inside a running one.
        """
        if not posts:
            return LabelStats()
        return asyncio.run(OpenAILabelClient(self.client_settings()).run(posts, on_result))

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """pydantic's repr would print every field, the API key included."""
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "api_key" and value else value)
