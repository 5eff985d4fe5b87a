"""A local Perspective-compatible server, so the client can be tested over real sockets without quota.

It speaks the real wire format (`POST /v1alpha1/comments:analyze` with the key in the `x-goog-api-key`
header or, as Google also accepts, a `?key=` query parameter; Google-shaped error bodies: a missing key is
403 PERMISSION_DENIED, a wrong one 400 INVALID_ARGUMENT / API_KEY_INVALID),
enforces a QPS quota with 429 RESOURCE_EXHAUSTED, and injects faults either at random rates or when the
comment text carries a trigger, so a test can script exactly what one post experiences:

    @@500 / @@503        answer with that 5xx          @@slow       sleep `slow_s` before answering
    @@drop               close the socket, no answer   @@malformed  a 200 whose body is unusable
    @@429                a 429 with Retry-After        @@lang:xx    the comment's language is `xx`
    @@<kind>xN           only the first N requests for this text (e.g. `@@500x2`), then normal

Languages: `en` supports every attribute, `is` every production attribute but SEVERE_TOXICITY, `xx` none,
any other language the production attributes only. Scores are deterministic (hash of text and attribute,
raised by small word lists). Every analyze request is counted per comment text (thread-safe), so tests
can assert that nothing was sent twice, and every request target is recorded (`targets`) so tests can
assert that no key travelled in a URL; counts are also served at `GET /_counts` for a standalone
process (`python -m tests.servers.perspective_server --port 0 --qps 50`, which prints its URL).

The stdlib ThreadingHTTPServer is used because a blocking handler can genuinely drop a connection or
stall past the client's timeout, and a thread per keep-alive connection easily sustains 50+ QPS.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from bsky_warehouse.records import PERSPECTIVE_ATTRIBUTES, PERSPECTIVE_PRODUCTION
from tests.servers.base import LocalHTTPServer, QuietHTTPServer

ANALYZE_PATH = "/v1alpha1/comments:analyze"
MAX_COMMENT_BYTES = 20480
DEFAULT_KEY = "test-key"
API_KEY_HEADER = "x-goog-api-key"

TRIGGER = re.compile(r"@@(500|503|slow|drop|malformed|429)(?:x(\d+))?")
LANG_TRIGGER = re.compile(r"@@lang:([A-Za-z-]{2,8})")

LANGUAGE_SUPPORT: dict[str, frozenset[str]] = {
    "en": frozenset(PERSPECTIVE_ATTRIBUTES),
    "is": frozenset(PERSPECTIVE_PRODUCTION) - {"SEVERE_TOXICITY"},
    "xx": frozenset(),
}
OTHER_LANGUAGE_SUPPORT = frozenset(PERSPECTIVE_PRODUCTION)

WORDS: dict[str, tuple[str, ...]] = {
    "TOXICITY": ("idiot", "stupid", "hate", "moron", "kill", "damn", "crap", "trash"),
    "SEVERE_TOXICITY": ("kill", "die"),
    "IDENTITY_ATTACK": ("immigrants", "those people"),
    "INSULT": ("idiot", "stupid", "moron", "loser", "trash"),
    "PROFANITY": ("damn", "crap", "hell", "shit"),
    "THREAT": ("kill", "hurt", "die"),
    "SPAM": ("buy now", "click here", "free money"),
}


def google_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    """A Google API error body (`{"error": {"code", "message", "status", "details"}}`)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return orjson.dumps({"error": error})


def perspective_error(error_type: str, message: str, extra: dict[str, Any] | None = None) -> bytes:
    """A Perspective-specific 400 INVALID_ARGUMENT with its `commentanalyzer.v1alpha1.Error` detail."""
    detail: dict[str, Any] = {
        "@type": "type.googleapis.com/google.commentanalyzer.v1alpha1.Error",
        "errorType": error_type,
    }
    detail.update(extra or {})
    return google_error(400, "INVALID_ARGUMENT", message, [detail])


def rate_limit_body(qps: float) -> bytes:
    """The body Google sends when the analysis quota is exhausted."""
    return google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Analysis requests' and limit 'Analysis requests per minute' of "
        "service 'commentanalyzer.googleapis.com' for consumer 'project_number:000000000000'.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": {
                    "service": "commentanalyzer.googleapis.com",
                    "consumer": "projects/000000000000",
                    "quota_metric": "commentanalyzer.googleapis.com/analysis_requests",
                    "quota_limit": "AnalysisRequestsPerMinutePerProject",
                    "quota_limit_value": str(round(qps * 60)),
                },
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Request a higher quota limit.",
                        "url": "https://cloud.google.com/docs/quotas/help/request_increase",
                    }
                ],
            },
        ],
    )


def denied_body() -> bytes:
    """What Google answers a valid key that is not allowed to call the Comment Analyzer API."""
    return google_error(
        403,
        "PERMISSION_DENIED",
        "Requests to this API commentanalyzer.googleapis.com method "
        "google.commentanalyzer.v1alpha1.CommentAnalyzerV1Alpha1.AnalyzeComment are blocked.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_SERVICE_BLOCKED",
                "domain": "googleapis.com",
                "metadata": {"service": "commentanalyzer.googleapis.com", "consumer": "projects/000000000000"},
            }
        ],
    )


def score(text: str, attribute: str) -> float:
    """Deterministic probability: a hash-derived base in [0, 0.2) plus 0.3 per matching word, capped."""
    digest = hashlib.blake2b(f"{attribute}\0{text}".encode(), digest_size=8).digest()
    base = (int.from_bytes(digest, "big") % 10_000) / 50_000
    key = attribute.removesuffix("_EXPERIMENTAL")
    lowered = text.lower()
    hits = sum(lowered.count(word) for word in WORDS.get(key, ()))
    return round(min(0.99, base + 0.3 * hits), 6)


def score_response(text: str, attributes: list[str], languages: list[str]) -> bytes:
    """An AnalyzeCommentResponse with span and summary scores for each requested attribute."""
    scores = {}
    for attribute in attributes:
        value = {"value": score(text, attribute), "type": "PROBABILITY"}
        scores[attribute] = {
            "spanScores": [{"begin": 0, "end": len(text), "score": value}],
            "summaryScore": value,
        }
    return orjson.dumps({"attributeScores": scores, "languages": languages, "detectedLanguages": languages})


MALFORMED_BODIES = (
    b'{"attributeScores": {"TOXICITY": {"summaryScore": {"val',
    b'{"languages": ["en"]}',
    b'{"attributeScores": {"TOXICITY": {"spanScores": []}}}',
    b"<html><body>502 Bad Gateway</body></html>",
)


@dataclass
class Faults:
    """Random fault rates (each a probability per request, drawn in this order) and their parameters."""

    rate_5xx: float = 0.0
    rate_slow: float = 0.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    slow_s: float = 2.0
    seed: int = 0


class _Quota:
    """Server-side token bucket: `qps` per second with a one-second burst, like a per-minute quota's slack."""

    def __init__(self, qps: float | None, burst: float | None) -> None:
        self.qps = qps
        self.capacity = burst if burst is not None else max(1.0, qps or 1.0)
        self._tokens = self.capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        if self.qps is None:
            return True
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.qps)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: QuietHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: the tests assert on counts, not on stderr noise."""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        content_type = "text/html" if body.startswith(b"<") else "application/json; charset=UTF-8"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/_counts":
            self._send(200, orjson.dumps(self.server.owner.snapshot()))
        else:
            self._send(404, google_error(404, "NOT_FOUND", "Not Found"))

    def do_POST(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if parts.path != ANALYZE_PATH:
            self._send(404, google_error(404, "NOT_FOUND", "Not Found"))
            return
        owner.saw(self.path)
        key = self.headers.get(API_KEY_HEADER) or parse_qs(parts.query).get("key", [None])[0]
        if not key:
            owner.bump("http_403")
            self._send(403, google_error(403, "PERMISSION_DENIED", "The request is missing a valid API key."))
            return
        if key in owner.denied_keys:
            # A real key whose project may not call the API (key restrictions): 403 PERMISSION_DENIED.
            owner.bump("http_403_denied")
            self._send(403, denied_body())
            return
        if key != owner.api_key:
            # Google answers an invalid key with 400 INVALID_ARGUMENT / API_KEY_INVALID.
            owner.bump("http_400_key")
            detail = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "commentanalyzer.googleapis.com"},
            }
            body = google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [detail])
            self._send(400, body)
            return
        try:
            request = orjson.loads(raw)
            text = request["comment"]["text"]
            attributes = list(request["requestedAttributes"])
            if not isinstance(text, str) or not attributes:
                raise ValueError
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self._send(400, google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))
            return
        nth = owner.count(text)
        if not owner.quota.take():
            owner.bump("http_429")
            headers = {} if owner.retry_after is None else {"Retry-After": _fmt(owner.retry_after)}
            self._send(429, rate_limit_body(owner.quota.qps or 1.0), headers)
            return
        if owner.latency_s > 0:
            time.sleep(owner.latency_s)
        if self._inject_fault(text, nth):
            return
        self._analyze(text, attributes, list(request.get("languages") or []))

    def _inject_fault(self, text: str, nth: int) -> bool:
        """Apply a text trigger (first N requests) or a random fault; True when the response is handled."""
        owner = self.server.owner
        kind = None
        for match in TRIGGER.finditer(text):
            limit = match.group(2)
            if limit is None or nth <= int(limit):
                kind = match.group(1)
                break
        if kind is None:
            kind = owner.random_fault()
        if kind is None:
            return False
        owner.bump(f"fault_{kind}")
        if kind in ("500", "503"):
            status = int(kind)
            name = "INTERNAL" if status == 500 else "UNAVAILABLE"
            self._send(status, google_error(status, name, "The service is currently unavailable."))
        elif kind == "429":
            headers = {} if owner.retry_after is None else {"Retry-After": _fmt(owner.retry_after)}
            self._send(429, rate_limit_body(owner.quota.qps or 1.0), headers)
        elif kind == "slow":
            time.sleep(owner.faults.slow_s)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send(503, google_error(503, "UNAVAILABLE", "Deadline exceeded."))
        elif kind == "drop":
            self._drop()
        else:
            self._send(200, MALFORMED_BODIES[(nth - 1) % len(MALFORMED_BODIES)])
        return True

    def _drop(self) -> None:
        """Reset the connection without a response (SO_LINGER 0 sends RST, like a crashed proxy)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)

    def _analyze(self, text: str, attributes: list[str], languages: list[str]) -> None:
        owner = self.server.owner
        if not text.strip():
            owner.bump("comment_empty")
            self._send(400, perspective_error("COMMENT_EMPTY", "Comment must be non-empty."))
            return
        size = len(text.encode("utf-8"))
        if size > MAX_COMMENT_BYTES:
            message = f"Comment text was too many bytes. Value ({size}) exceeded limit ({MAX_COMMENT_BYTES})."
            self._send(400, perspective_error("COMMENT_TOO_LONG", message))
            return
        unknown = [a for a in attributes if a not in PERSPECTIVE_ATTRIBUTES]
        if unknown:
            self._send(400, google_error(400, "INVALID_ARGUMENT", f"Unknown attribute: {unknown[0]}"))
            return
        marker = LANG_TRIGGER.search(text)
        language = marker.group(1) if marker else (languages[0] if languages else "en")
        supported = LANGUAGE_SUPPORT.get(language, OTHER_LANGUAGE_SUPPORT)
        for attribute in attributes:
            if attribute not in supported:
                owner.bump("language_not_supported")
                message = f"Attribute {attribute} does not support request languages: {language}"
                extra = {
                    "languageNotSupportedByAttributeError": {
                        "detectedLanguages": [language],
                        "attribute": attribute,
                    }
                }
                self._send(400, perspective_error("LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE", message, extra))
                return
        owner.ok(text)
        self._send(200, score_response(text, attributes, [language]))


def _fmt(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class PerspectiveServer(LocalHTTPServer):
    """The fake API, run in a background thread: `with PerspectiveServer(qps=50) as srv: srv.url`."""

    def __init__(
        self,
        qps: float | None = None,
        *,
        api_key: str = DEFAULT_KEY,
        denied_keys: tuple[str, ...] = (),
        burst: float | None = None,
        retry_after: float | None = 1.0,
        latency_s: float = 0.0,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.denied_keys = frozenset(denied_keys)
        self.quota = _Quota(qps, burst)
        self.retry_after = retry_after
        self.latency_s = latency_s
        self.faults = faults or Faults()
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._ok_counts: Counter[str] = Counter()
        self._times: dict[str, list[float]] = {}
        self._stats: Counter[str] = Counter()
        self._targets: list[str] = []
        self._bind(_Handler, host, port)

    # -- bookkeeping (called from handler threads) ---------------------------------------------------

    def count(self, text: str) -> int:
        """Record one analyze request for `text`; returns how many there have been (1-based)."""
        with self._lock:
            self._counts[text] += 1
            self._stats["requests"] += 1
            self._times.setdefault(text, []).append(time.monotonic())
            return self._counts[text]

    def ok(self, text: str) -> None:
        with self._lock:
            self._ok_counts[text] += 1
            self._stats["ok"] += 1

    def saw(self, target: str) -> None:
        """Record the request target (path and query) of one analyze request, as received."""
        with self._lock:
            self._targets.append(target)

    def bump(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def random_fault(self) -> str | None:
        f = self.faults
        with self._lock:
            draw = self._rng.random()
        for kind, rate in (
            ("500", f.rate_5xx),
            ("slow", f.rate_slow),
            ("drop", f.rate_drop),
            ("malformed", f.rate_malformed),
        ):
            if draw < rate:
                return kind
            draw -= rate
        return None

    # -- what tests read -----------------------------------------------------------------------------

    @property
    def counts(self) -> Counter[str]:
        """Analyze requests per comment text (every request that passed the key check, 429s included)."""
        with self._lock:
            return Counter(self._counts)

    @property
    def ok_counts(self) -> Counter[str]:
        """Successful (200, scored) responses per comment text."""
        with self._lock:
            return Counter(self._ok_counts)

    @property
    def stats(self) -> Counter[str]:
        with self._lock:
            return Counter(self._stats)

    @property
    def targets(self) -> list[str]:
        """Every analyze request's target (path and query string), in arrival order."""
        with self._lock:
            return list(self._targets)

    def times(self, text: str) -> list[float]:
        """Monotonic arrival times of the requests for `text`."""
        with self._lock:
            return list(self._times.get(text, []))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"counts": dict(self._counts), "ok_counts": dict(self._ok_counts), "stats": dict(self._stats)}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._ok_counts.clear()
            self._times.clear()
            self._stats.clear()
            self._targets.clear()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--qps", type=float, default=None, help="quota; unlimited when omitted")
    parser.add_argument("--burst", type=float, default=None)
    parser.add_argument("--key", default=DEFAULT_KEY)
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After on 429s; <0 omits it")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every analyze response")
    parser.add_argument("--rate-5xx", type=float, default=0.0)
    parser.add_argument("--rate-slow", type=float, default=0.0)
    parser.add_argument("--rate-drop", type=float, default=0.0)
    parser.add_argument("--rate-malformed", type=float, default=0.0)
    parser.add_argument("--slow-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    faults = Faults(args.rate_5xx, args.rate_slow, args.rate_drop, args.rate_malformed, args.slow_s, args.seed)
    server = PerspectiveServer(
        args.qps,
        api_key=args.key,
        burst=args.burst,
        retry_after=None if args.retry_after < 0 else args.retry_after,
        latency_s=args.latency_ms / 1000,
        faults=faults,
        host=args.host,
        port=args.port,
    )
    print(server.url, flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
