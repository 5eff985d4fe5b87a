"""A client for the public Bluesky AppView (XRPC over HTTPS): feeds, author feeds and handle resolution.

Feed posts are turned into Jetstream-shaped create events (`item_to_event`) so that they go through the
same parser and ingest path as archived and live events; the AppView is only another way to find posts.

The public AppView rate-limits per IP and occasionally answers 5xx under load, so every request retries:
429 waits for the window named by `ratelimit-reset` (unix seconds) or `Retry-After`, 5xx and network faults
back off exponentially with jitter, both bounded by `max_retries`. A 400 (`InvalidRequest`: unknown feed,
actor or handle) is not retried; it raises an error naming what was asked for. Items that cannot be read
are never dropped silently: each is recorded in `client.invalid` (and passed to `on_invalid`) with a reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
from dagster import ConfigurableResource
from pydantic import Field

from bsky_warehouse.events import POST_COLLECTION, RecordError, parse_created_at
from bsky_warehouse.http_retry import backoff_delay, retry_after_s
from bsky_warehouse.settings import APPVIEW_URL

log = logging.getLogger(__name__)

DEFAULT_HOST = urlsplit(APPVIEW_URL.default).netloc
APPVIEW_URL_ENV = APPVIEW_URL.name
MAX_LIMIT = 100
REASON_REPOST = "app.bsky.feed.defs#reasonRepost"


class AppViewError(RuntimeError):
    """The AppView could not answer (retries exhausted, unexpected status or body)."""


class AppViewRequestError(AppViewError):
    """The AppView refused the request itself (400), e.g. an unknown feed, actor or handle."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One post as a feed served it. `rank` is its 0-based position in the feed as served, across pages
    (items that were invalid or skipped keep their position, so ranks can have gaps)."""

    rank: int
    uri: str
    cid: str
    author_did: str
    author_handle: str | None
    record: dict[str, Any]
    like_count: int | None
    repost_count: int | None
    reply_count: int | None
    indexed_at: str

    @property
    def rkey(self) -> str:
        return self.uri.rsplit("/", 1)[1]


@dataclass(frozen=True, slots=True)
class InvalidItem:
    """An item that could not be read: where it came from, its position, why, and the raw item."""

    source: str
    rank: int
    reason: str
    item: Any


class _InvalidItemError(ValueError):
    pass


def _field(obj: dict[str, Any], key: str, kind: type, path: str, *, required: bool = True) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise _InvalidItemError(f"missing_field:{path}")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _InvalidItemError(f"wrong_type:{path}")
    return value


def parse_feed_item(raw: Any, rank: int) -> FeedItem:
    """A `app.bsky.feed.defs#feedViewPost` to a FeedItem; raises `_InvalidItemError` naming the problem."""
    if not isinstance(raw, dict):
        raise _InvalidItemError("not_an_object")
    post = _field(raw, "post", dict, "post")
    uri = _field(post, "uri", str, "post.uri")
    parts = uri.removeprefix("at://").split("/")
    if not uri.startswith("at://") or len(parts) != 3 or not all(parts):
        raise _InvalidItemError("invalid_uri:post.uri")
    repo, collection, _ = parts
    if collection != POST_COLLECTION:
        raise _InvalidItemError("wrong_collection:post.uri")
    author = _field(post, "author", dict, "post.author")
    author_did = _field(author, "did", str, "post.author.did")
    if not author_did.startswith("did:"):
        raise _InvalidItemError("invalid_did:post.author.did")
    if repo != author_did:
        raise _InvalidItemError("author_mismatch:post.uri")
    indexed_at = _field(post, "indexedAt", str, "post.indexedAt")
    try:
        parse_created_at(indexed_at)
    except RecordError:
        raise _InvalidItemError("invalid_datetime:post.indexedAt") from None
    return FeedItem(
        rank=rank,
        uri=uri,
        cid=_field(post, "cid", str, "post.cid"),
        author_did=author_did,
        author_handle=_field(author, "handle", str, "post.author.handle", required=False),
        record=_field(post, "record", dict, "post.record"),
        like_count=_field(post, "likeCount", int, "post.likeCount", required=False),
        repost_count=_field(post, "repostCount", int, "post.repostCount", required=False),
        reply_count=_field(post, "replyCount", int, "post.replyCount", required=False),
        indexed_at=indexed_at,
    )


def item_to_event(item: FeedItem) -> dict[str, Any]:
    """A Jetstream v1 create event for the post, so it parses like any archived or live event.

    `time_us` is the AppView's `indexedAt` (when the network saw the post, as Jetstream's time_us is);
    there is no repo revision in a feed view, so `rev` is omitted.
    """
    moment = parse_created_at(item.indexed_at)
    return {
        "did": item.author_did,
        "time_us": int(moment.timestamp()) * 1_000_000 + moment.microsecond,
        "kind": "commit",
        "commit": {
            "operation": "create",
            "collection": POST_COLLECTION,
            "rkey": item.rkey,
            "record": item.record,
            "cid": item.cid,
        },
    }


class AppViewClient:
    """Synchronous XRPC client; use as a context manager or call `close()`."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        *,
        secure: bool = True,
        timeout_s: float = 30.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_ratelimit_wait_s: float = 300.0,
        on_invalid: Callable[[InvalidItem], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = f"{'https' if secure else 'http'}://{host}"
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_ratelimit_wait_s = max_ratelimit_wait_s
        self.on_invalid = on_invalid
        self.invalid: list[InvalidItem] = []
        # Subjects (feed, actor) whose paging stopped at `max_pages` while the server still offered a cursor.
        self.truncated: set[str] = set()
        self.skipped_reposts = 0
        self.requests = 0
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_s,
            headers={"accept": "application/json", "user-agent": "bsky-warehouse (research)"},
            trust_env=False,
        )

    def __enter__(self) -> AppViewClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s)

    def _get(self, nsid: str, params: dict[str, Any], subject: str) -> dict[str, Any]:
        """One XRPC query with bounded retries; `subject` names the feed/actor/handle in errors."""
        last_problem = "no attempt made"
        for attempt in range(self.max_retries + 1):
            self.requests += 1
            try:
                response = self._http.get(f"/xrpc/{nsid}", params={k: v for k, v in params.items() if v is not None})
            except httpx.TransportError as err:
                last_problem = f"{type(err).__name__}: {err}"
                wait = self._backoff(attempt)
            else:
                status = response.status_code
                if status == 200:
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                    if isinstance(body, dict):
                        return body
                    last_problem = "200 with a body that is not a JSON object"
                    wait = self._backoff(attempt)
                elif status == 429:
                    limit_wait = retry_after_s(response.headers)
                    if limit_wait is not None and limit_wait > self.max_ratelimit_wait_s:
                        raise AppViewError(
                            f"{nsid} for {subject}: rate limited for {limit_wait:.0f}s, longer than "
                            f"max_ratelimit_wait_s={self.max_ratelimit_wait_s:g}"
                        )
                    last_problem = "429 rate limited"
                    wait = limit_wait if limit_wait is not None else self._backoff(attempt)
                elif status >= 500:
                    last_problem = f"HTTP {status}"
                    wait = self._backoff(attempt)
                else:
                    raise self._refusal(nsid, subject, response)
            if attempt < self.max_retries:
                log.warning("appview: %s for %s: %s; retrying in %.2fs", nsid, subject, last_problem, wait)
                self._sleep(wait)
        raise AppViewError(f"{nsid} for {subject}: gave up after {self.max_retries + 1} attempts ({last_problem})")

    @staticmethod
    def _refusal(nsid: str, subject: str, response: httpx.Response) -> AppViewError:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        detail = f"{error or 'HTTP ' + str(response.status_code)}: {message or response.text[:200]}"
        if response.status_code == 400:
            return AppViewRequestError(f"{nsid} refused {subject}: {detail}", error=error)
        return AppViewError(f"{nsid} for {subject}: HTTP {response.status_code} ({detail})")

    def _report(self, source: str, rank: int, reason: str, raw: Any) -> None:
        invalid = InvalidItem(source, rank, reason, raw)
        self.invalid.append(invalid)
        if self.on_invalid is not None:
            self.on_invalid(invalid)

    def _pages(
        self, nsid: str, params: dict[str, Any], subject: str, limit: int, max_pages: int | None
    ) -> Iterator[tuple[int, Any]]:
        """Every raw item of every page, with its position; stops when the cursor ends or repeats, or after
        `max_pages` (then `subject` is recorded in `truncated`: the caller must not mistake it for the end)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be within 1..{MAX_LIMIT}")
        cursor: str | None = None
        seen_cursors: set[str] = set()
        rank = 0
        pages = 0
        while max_pages is None or pages < max_pages:
            body = self._get(nsid, {**params, "limit": limit, "cursor": cursor}, subject)
            pages += 1
            feed = body.get("feed")
            if not isinstance(feed, list):
                raise AppViewError(f"{nsid} for {subject}: response has no `feed` list")
            for raw in feed:
                yield rank, raw
                rank += 1
            cursor = body.get("cursor")
            if not feed or not isinstance(cursor, str) or not cursor or cursor in seen_cursors:
                return
            seen_cursors.add(cursor)
        self.truncated.add(subject)

    def get_feed(self, feed_uri: str, limit: int = MAX_LIMIT, max_pages: int | None = None) -> Iterator[FeedItem]:
        """The posts of a feed generator (`app.bsky.feed.getFeed`), in the feed's order."""
        for rank, raw in self._pages("app.bsky.feed.getFeed", {"feed": feed_uri}, feed_uri, limit, max_pages):
            try:
                yield parse_feed_item(raw, rank)
            except _InvalidItemError as err:
                self._report(feed_uri, rank, str(err), raw)

    def get_author_feed(
        self,
        actor: str,
        limit: int = MAX_LIMIT,
        max_pages: int | None = None,
        filter: str | None = "posts_no_replies",
    ) -> Iterator[FeedItem]:
        """An account's own posts (`app.bsky.feed.getAuthorFeed`), newest first.

        Reposts are skipped (counted in `skipped_reposts`): they are other authors' posts, and a repost of
        the account's own post repeats a post the feed also lists as itself.
        """
        params = {"actor": actor, "filter": filter}
        for rank, raw in self._pages("app.bsky.feed.getAuthorFeed", params, actor, limit, max_pages):
            reason = raw.get("reason") if isinstance(raw, dict) else None
            if isinstance(reason, dict) and reason.get("$type") == REASON_REPOST:
                self.skipped_reposts += 1
                continue
            try:
                yield parse_feed_item(raw, rank)
            except _InvalidItemError as err:
                self._report(actor, rank, str(err), raw)

    def resolve_handle(self, handle: str) -> str:
        """The DID behind a handle (`com.atproto.identity.resolveHandle`); a DID is returned unchanged."""
        handle = handle.strip().removeprefix("@")
        if handle.startswith("did:"):
            return handle
        body = self._get("com.atproto.identity.resolveHandle", {"handle": handle}, handle)
        did = body.get("did")
        if not isinstance(did, str) or not did.startswith("did:"):
            raise AppViewError(f"com.atproto.identity.resolveHandle for {handle}: no DID in the answer")
        return did


class AppViewResource(ConfigurableResource):
    """The public Bluesky AppView (or a local server speaking XRPC, in tests)."""

    host: str = Field(default=DEFAULT_HOST)
    secure: bool = Field(default=True)
    max_retries: int = Field(default=5)

    def client(self) -> AppViewClient:
        return AppViewClient(self.host, secure=self.secure, max_retries=self.max_retries)

    @classmethod
    def from_url(cls, url: str) -> AppViewResource:
        """`https://public.api.bsky.app` (or `http://127.0.0.1:8080` for a local server) as a resource."""
        scheme, sep, host = url.rstrip("/").partition("://")
        if not sep or scheme not in ("http", "https") or not host or "/" in host:
            raise ValueError(f"AppView URL {url!r} must look like https://host[:port]")
        return cls(host=host, secure=scheme == "https")
