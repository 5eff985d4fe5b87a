"""A local Bluesky AppView (XRPC) server, so the AppView client can be tested over real sockets.

Serves `app.bsky.feed.getFeed`, `app.bsky.feed.getAuthorFeed` and `com.atproto.identity.resolveHandle`
with the real JSON shapes (`feedViewPost` items, opaque `cursor`, XRPC `{"error","message"}` bodies), and
paginates the items it was given. Faults are scripted by request number (1-based, over all XRPC
requests): `faults={3: Fault(429, reset_in_s=1)}` answers the third request with a 429 whose
`ratelimit-reset` header lies one second ahead; `Fault(503)` answers a 5xx. Malformed items are simply put
in the item lists. Requests are recorded (`requests`: path, query, monotonic time) for assertions.

It serves from a background thread (tests/servers/base.py); use it as a context manager.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from tests.servers.base import LocalHTTPServer


@dataclass(frozen=True)
class Fault:
    status: int
    reset_in_s: float | None = None
    retry_after: str | None = None


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    at: float


def feed_view_post(
    n: int,
    did: str = "did:plc:author1",
    handle: str = "author1.bsky.social",
    text: str | None = None,
    created_at: str = "2024-03-10T12:00:00.000Z",
    indexed_at: str | None = None,
    repost_by: str | None = None,
) -> dict[str, Any]:
    """A `app.bsky.feed.defs#feedViewPost` as the AppView serves it."""
    rkey = f"3kpost{n:07d}"
    item: dict[str, Any] = {
        "post": {
            "uri": f"at://{did}/app.bsky.feed.post/{rkey}",
            "cid": f"bafyreicid{n:07d}",
            "author": {
                "did": did,
                "handle": handle,
                "displayName": handle.split(".")[0].title(),
                "avatar": f"https://cdn.bsky.app/img/avatar/plain/{did}/x@jpeg",
                "labels": [],
                "createdAt": "2023-05-01T00:00:00.000Z",
            },
            "record": {
                "$type": "app.bsky.feed.post",
                "text": text if text is not None else f"post {n} from {handle}",
                "createdAt": created_at,
                "langs": ["en"],
                "embed": {
                    "$type": "app.bsky.embed.external",
                    "external": {"uri": "https://example.org", "title": "t", "description": "d"},
                },
            },
            "embed": {
                "$type": "app.bsky.embed.external#view",
                "external": {"uri": "https://example.org", "title": "t", "description": "d"},
            },
            "replyCount": n % 5,
            "repostCount": n % 7,
            "likeCount": n % 11,
            "quoteCount": 0,
            "indexedAt": indexed_at or created_at,
            "viewer": {"threadMuted": False, "embeddingDisabled": False},
            "labels": [],
        }
    }
    if repost_by is not None:
        item["reason"] = {
            "$type": "app.bsky.feed.defs#reasonRepost",
            "by": {"did": repost_by, "handle": "reposter.bsky.social"},
            "indexedAt": indexed_at or created_at,
        }
    return item


class AppViewServer(LocalHTTPServer):
    def __init__(
        self,
        *,
        feeds: dict[str, list[Any]] | None = None,
        author_feeds: dict[str, list[Any]] | None = None,
        handles: dict[str, str] | None = None,
        faults: dict[int, Fault] | None = None,
        page_size: int | None = None,
    ) -> None:
        # Feed generators may serve fewer items than the `limit` asked for (with a cursor for the rest).
        self.page_size = page_size
        self.feeds = feeds or {}
        self.author_feeds = author_feeds or {}
        self.handles = handles or {}
        self.faults = faults or {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with server._lock:
                    server.requests.append(Request(parts.path, query, time.monotonic()))
                    fault = server.faults.get(len(server.requests))
                if fault is not None:
                    headers = {}
                    if fault.reset_in_s is not None:
                        headers["ratelimit-reset"] = str(int(time.time() + fault.reset_in_s + 0.999))
                        headers["ratelimit-limit"] = "3000"
                        headers["ratelimit-remaining"] = "0"
                    if fault.retry_after is not None:
                        headers["retry-after"] = fault.retry_after
                    error = "RateLimitExceeded" if fault.status == 429 else "InternalServerError"
                    self._send(fault.status, {"error": error, "message": "injected"}, headers)
                    return
                status, body = server.answer(parts.path, query)
                self._send(status, body)

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self._bind(Handler)

    def count(self, path: str) -> int:
        return sum(r.path == path for r in self.requests)

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path == "/xrpc/com.atproto.identity.resolveHandle":
            did = self.handles.get(query.get("handle", ""))
            if did is None:
                return 400, {"error": "InvalidRequest", "message": "Unable to resolve handle"}
            return 200, {"did": did}
        if path == "/xrpc/app.bsky.feed.getFeed":
            items = self.feeds.get(query.get("feed", ""))
            if items is None:
                return 400, {"error": "UnknownFeed", "message": "could not find feed"}
        elif path == "/xrpc/app.bsky.feed.getAuthorFeed":
            actor = query.get("actor", "")
            items = self.author_feeds.get(self.handles.get(actor, actor))
            if items is None:
                return 400, {"error": "InvalidRequest", "message": "Profile not found"}
        else:
            return 404, {"error": "MethodNotImplemented", "message": "Method Not Implemented"}
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            return 400, {"error": "InvalidRequest", "message": "Error: limit must be an integer"}
        if not 1 <= limit <= 100:
            return 400, {"error": "InvalidRequest", "message": "Error: limit must be <= 100"}
        if self.page_size is not None:
            limit = min(limit, self.page_size)
        cursor = query.get("cursor")
        start = int(cursor.removeprefix("off:")) if cursor else 0
        page = items[start : start + limit]
        body: dict[str, Any] = {"feed": page}
        if start + limit < len(items):
            body["cursor"] = f"off:{start + limit}"
        return 200, body
