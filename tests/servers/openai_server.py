"""A local OpenAI-compatible chat-completions server, so the labeler can be tested over real sockets.

`POST /v1/chat/completions` answers with the real `chat.completion` shape. The "model" reads the posts
(the JSON array in the last user message) and labels them by word rules: sociopolitical when a post
mentions e.g. election/senate/vote/climate/immigration/trump/biden; ideology right for maga/trump/gop/
conservative, left for biden/progressive/democrat/liberal, moderate for bipartisan/centrist, else unclear.
Numbered minibatches are honoured: one label per post, copying its id.

Faults are injected per post by a trigger in its text, or at random rates (`Faults`):

    @@malformed   content is not JSON                 @@429       HTTP 429 with Retry-After
    @@count       this post's label is left out       @@500/@@503 that HTTP status
    @@ids         this post's label has a wrong id    @@slow      sleep `slow_s` before answering
    @@unknown     ideology "centre-left" (no such)    @@drop      reset the connection, no answer
    @@nonsocial   ideology set on a non-sociopolitical post
    @@<kind>xN    only the first N requests that contain this post, then normal (e.g. `@@429x1`)

Request-level faults (malformed, 429, 5xx, slow, drop) hit the whole request the post is in. Every
request is counted per post text (thread-safe), the peak of concurrent in-flight requests is tracked,
and `latency_s` adds a fixed delay to each request (for the throughput benchmark). Counts are served at
`GET /_counts` for a standalone process: `python -m tests.servers.openai_server --port 0` prints its URL.

The stdlib ThreadingHTTPServer gives each keep-alive connection a thread, which sustains 64+ concurrent
requests and lets a handler genuinely stall or drop a connection.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import orjson

from tests.servers.base import LocalHTTPServer, QuietHTTPServer

COMPLETIONS_PATH = "/v1/chat/completions"

TRIGGER = re.compile(r"@@(malformed|count|ids|unknown|nonsocial|429|500|503|slow|drop)(?:x(\d+))?")
REQUEST_FAULTS = ("malformed", "429", "500", "503", "slow", "drop")

RIGHT_WORDS = ("maga", "trump", "gop", "republican", "conservative")
LEFT_WORDS = ("biden", "progressive", "democrat", "liberal", "harris")
MODERATE_WORDS = ("bipartisan", "centrist", "moderate")
SOCIAL_WORDS = (
    "election", "senate", "congress", "vote", "voting", "government", "president", "policy", "protest",
    "climate", "immigration", "immigrants", "racism", "inequality", "economy", "abortion", "healthcare",
    "education", "rights", "tax", *RIGHT_WORDS, *LEFT_WORDS, *MODERATE_WORDS,
)  # fmt: skip

_WORD = re.compile(r"[a-z]+")


def rule_label(text: str) -> dict[str, Any]:
    """The fake model's answer for one post (without its id)."""
    words = set(_WORD.findall(text.lower()))
    hits = sorted(words & set(SOCIAL_WORDS))
    if not hits:
        return {"rationale": "No political or social topic.", "is_sociopolitical": False, "political_ideology": None}
    if words & set(RIGHT_WORDS):
        ideology = "right"
    elif words & set(LEFT_WORDS):
        ideology = "left"
    elif words & set(MODERATE_WORDS):
        ideology = "moderate"
    else:
        ideology = "unclear"
    return {"rationale": f"Mentions {', '.join(hits[:3])}.", "is_sociopolitical": True, "political_ideology": ideology}


def extract_posts(body: dict[str, Any]) -> list[dict[str, str]]:
    """The `[{"id", "text"}]` array the client puts after the first line starting with `[` in the last
    user message. Raises ValueError when the request carries none."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ValueError("messages missing")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users or not isinstance(users[-1].get("content"), str):
        raise ValueError("no user message")
    content = users[-1]["content"]
    start = content.find("\n[")
    if start < 0:
        raise ValueError("no posts array in the user message")
    posts = orjson.loads(content[start + 1 :])
    if not isinstance(posts, list) or not all(isinstance(p, dict) and "id" in p and "text" in p for p in posts):
        raise ValueError("posts array malformed")
    return posts


@dataclass
class Faults:
    """Random per-request fault rates (drawn in this order) and their parameters."""

    rate_malformed: float = 0.0
    rate_count: float = 0.0
    rate_unknown: float = 0.0
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    slow_s: float = 2.0
    seed: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: QuietHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: tests assert on counts, not stderr."""

    _in_flight = False

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        # Leave the in-flight count before the client can see the answer and send its next request.
        self._leave()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _leave(self) -> None:
        if self._in_flight:
            self._in_flight = False
            self.server.owner.leave()

    def _error(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        body = orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})
        self._send(status, body, headers)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/_counts":
            self._send(200, orjson.dumps(self.server.owner.snapshot()))
        else:
            self._error(404, "Not found", "invalid_request_error")

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if urlsplit(self.path).path != COMPLETIONS_PATH:
            self._error(404, "Not found", "invalid_request_error")
            return
        if owner.api_key is not None and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            self._error(401, "Incorrect API key provided.", "invalid_request_error")
            return
        try:
            body = orjson.loads(raw)
            posts = extract_posts(body)
            model = body["model"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self._error(400, f"Invalid request: {exc}", "invalid_request_error")
            return
        owner.enter([p["text"] for p in posts], body)
        self._in_flight = True
        try:
            if owner.latency_s > 0:
                time.sleep(owner.latency_s)
            self._answer(model, posts)
        finally:
            self._leave()

    def _answer(self, model: str, posts: list[dict[str, str]]) -> None:
        owner = self.server.owner
        triggered = {p["id"]: owner.triggers(p["text"]) for p in posts}
        active = set().union(*triggered.values())
        random_kind = owner.random_fault()
        request_fault = next((k for k in REQUEST_FAULTS if k in active), None)
        if request_fault is None and random_kind in REQUEST_FAULTS:
            request_fault = random_kind
        if request_fault is not None:
            owner.bump(f"fault_{request_fault}")
            self._request_fault(request_fault, model, len(posts))
            return
        labels = []
        for index, post in enumerate(posts):
            kinds = triggered[post["id"]]
            if index == 0 and random_kind is not None:
                kinds = kinds | {random_kind}
            label = {"id": post["id"], **rule_label(post["text"])}
            if "count" in kinds:
                owner.bump("fault_count")
                continue
            if "ids" in kinds:
                owner.bump("fault_ids")
                label["id"] = f"{post['id']}0"
            if "unknown" in kinds:
                owner.bump("fault_unknown")
                label.update(is_sociopolitical=True, political_ideology="centre-left")
            if "nonsocial" in kinds:
                owner.bump("fault_nonsocial")
                label.update(is_sociopolitical=False, political_ideology="left")
            labels.append(label)
        owner.bump("answered")
        self._completion(model, orjson.dumps({"labels": labels}).decode(), len(posts))

    def _completion(self, model: str, content: str, n_posts: int) -> None:
        prompt_tokens = 300 + 40 * n_posts
        completion_tokens = max(1, len(content) // 4)
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        self._send(200, orjson.dumps(body))

    def _request_fault(self, kind: str, model: str, n_posts: int) -> None:
        owner = self.server.owner
        if kind == "malformed":
            self._completion(model, '{"labels": [{"id": "1", "rationale": "Mentions', n_posts)
        elif kind == "429":
            headers = {} if owner.retry_after is None else {"Retry-After": _fmt(owner.retry_after)}
            self._error(429, "Rate limit reached for requests.", "requests", headers)
        elif kind in ("500", "503"):
            self._error(int(kind), "The server had an error while processing your request.", "server_error")
        elif kind == "slow":
            time.sleep(owner.faults.slow_s)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._error(503, "Deadline exceeded.", "server_error")
        else:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.shutdown(socket.SHUT_RDWR)


def _fmt(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class OpenAIServer(LocalHTTPServer):
    """The fake endpoint in a background thread: `with OpenAIServer() as srv: srv.base_url`."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        retry_after: float | None = 1.0,
        faults: Faults | None = None,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.latency_s = latency_s
        self.retry_after = retry_after
        self.faults = faults or Faults()
        self.api_key = api_key
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._times: dict[str, list[float]] = {}
        self._stats: Counter[str] = Counter()
        self._batch_sizes: Counter[int] = Counter()
        self._in_flight = 0
        self._max_in_flight = 0
        self.last_request: dict[str, Any] | None = None
        self._bind(_Handler, host, port)

    @property
    def base_url(self) -> str:
        """What the client's `base_url` should be (the OpenAI convention: up to `/v1`)."""
        return f"{self.url}/v1"

    # -- bookkeeping (handler threads) ---------------------------------------------------------------

    def enter(self, texts: list[str], body: dict[str, Any]) -> None:
        """Record one request for these post texts and mark it in flight."""
        now = time.monotonic()
        with self._lock:
            self._stats["requests"] += 1
            self._batch_sizes[len(texts)] += 1
            for text in texts:
                self._counts[text] += 1
                self._times.setdefault(text, []).append(now)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self.last_request = body

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def triggers(self, text: str) -> set[str]:
        """The fault kinds this post's text triggers on its current request (counted by `enter`)."""
        with self._lock:
            nth = self._counts[text]
        return {m.group(1) for m in TRIGGER.finditer(text) if m.group(2) is None or nth <= int(m.group(2))}

    def random_fault(self) -> str | None:
        f = self.faults
        with self._lock:
            draw = self._rng.random()
        for kind, rate in (
            ("malformed", f.rate_malformed),
            ("count", f.rate_count),
            ("unknown", f.rate_unknown),
            ("429", f.rate_429),
            ("500", f.rate_5xx),
        ):
            if draw < rate:
                return kind
            draw -= rate
        return None

    def bump(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    # -- what tests read -----------------------------------------------------------------------------

    @property
    def counts(self) -> Counter[str]:
        """Requests per post text (every request that reached the model, faults included)."""
        with self._lock:
            return Counter(self._counts)

    @property
    def stats(self) -> Counter[str]:
        with self._lock:
            return Counter(self._stats)

    @property
    def batch_sizes(self) -> Counter[int]:
        """How many requests carried 1, 2, ... posts."""
        with self._lock:
            return Counter(self._batch_sizes)

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    def times(self, text: str) -> list[float]:
        """Monotonic arrival times of the requests containing this post."""
        with self._lock:
            return list(self._times.get(text, []))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": dict(self._counts),
                "stats": dict(self._stats),
                "batch_sizes": {str(k): v for k, v in self._batch_sizes.items()},
                "max_in_flight": self._max_in_flight,
            }

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._times.clear()
            self._stats.clear()
            self._batch_sizes.clear()
            self._max_in_flight = self._in_flight


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the URL is printed)")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After on 429s; <0 omits it")
    parser.add_argument("--rate-malformed", type=float, default=0.0)
    parser.add_argument("--rate-count", type=float, default=0.0)
    parser.add_argument("--rate-unknown", type=float, default=0.0)
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--rate-5xx", type=float, default=0.0)
    parser.add_argument("--slow-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    faults = Faults(
        args.rate_malformed, args.rate_count, args.rate_unknown, args.rate_429, args.rate_5xx, args.slow_s, args.seed
    )
    server = OpenAIServer(
        latency_s=args.latency_ms / 1000,
        retry_after=None if args.retry_after < 0 else args.retry_after,
        faults=faults,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
    )
    print(server.base_url, flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
