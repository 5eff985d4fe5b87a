"""The AppView client against a local XRPC server: paging, rate limits, retries, bad items, event shape."""

from __future__ import annotations

import copy
import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from bsky_warehouse.events import parse_event
from bsky_warehouse.resources.appview import (
    AppViewClient,
    AppViewError,
    AppViewRequestError,
    InvalidItem,
    item_to_event,
)
from tests.servers.appview_server import AppViewServer, Fault, feed_view_post

FEED = "at://did:plc:gen/app.bsky.feed.generator/whats-hot"
DID = "did:plc:author1"
HANDLE = "author1.bsky.social"


def client(server: AppViewServer, **options: object) -> AppViewClient:
    return AppViewClient(server.host, secure=False, timeout_s=5, backoff_base_s=0.01, backoff_max_s=0.05, **options)


def posts(count: int, **kwargs: object) -> list[dict]:
    start = datetime(2024, 3, 10, 8, 0, tzinfo=UTC)
    return [
        feed_view_post(n, created_at=(start + timedelta(seconds=n)).isoformat().replace("+00:00", "Z"), **kwargs)
        for n in range(count)
    ]


def test_pages_through_hundreds_of_items_in_feed_order() -> None:
    items = posts(350)
    with AppViewServer(feeds={FEED: items}) as server, client(server) as appview:
        got = list(appview.get_feed(FEED))
    assert [g.rank for g in got] == list(range(350))
    assert [g.uri for g in got] == [i["post"]["uri"] for i in items]
    assert server.count("/xrpc/app.bsky.feed.getFeed") == 4
    assert [r.query.get("cursor") for r in server.requests] == [None, "off:100", "off:200", "off:300"]
    assert all(r.query["limit"] == "100" and r.query["feed"] == FEED for r in server.requests)
    first = got[7]
    assert (first.author_did, first.author_handle, first.cid) == (DID, HANDLE, "bafyreicid0000007")
    assert (first.like_count, first.repost_count, first.reply_count) == (7, 0, 2)
    assert first.record["$type"] == "app.bsky.feed.post" and first.record["langs"] == ["en"]
    assert first.indexed_at == "2024-03-10T08:00:07Z"
    assert not appview.invalid


def test_max_pages_bounds_the_walk() -> None:
    with AppViewServer(feeds={FEED: posts(250)}) as server, client(server) as appview:
        got = list(appview.get_feed(FEED, limit=50, max_pages=2))
    assert len(got) == 100 and server.count("/xrpc/app.bsky.feed.getFeed") == 2


def test_429_waits_for_ratelimit_reset() -> None:
    faults = {2: Fault(429, reset_in_s=1)}
    with AppViewServer(feeds={FEED: posts(250)}, faults=faults) as server, client(server) as appview:
        got = list(appview.get_feed(FEED))
    assert len(got) == 250 and len({g.uri for g in got}) == 250
    limited, retried = server.requests[1], server.requests[2]
    assert limited.query.get("cursor") == retried.query.get("cursor") == "off:100"
    assert retried.at - limited.at >= 0.5


def test_429_with_retry_after_and_too_long_a_wait() -> None:
    faults = {1: Fault(429, retry_after="0.2")}
    with AppViewServer(feeds={FEED: posts(3)}, faults=faults) as server, client(server) as appview:
        started = time.monotonic()
        assert len(list(appview.get_feed(FEED))) == 3
        assert time.monotonic() - started >= 0.2
    faults = {1: Fault(429, reset_in_s=600)}
    with AppViewServer(feeds={FEED: posts(3)}, faults=faults) as server, client(server) as appview:
        with pytest.raises(AppViewError, match="rate limited"):
            list(appview.get_feed(FEED))
        assert server.count("/xrpc/app.bsky.feed.getFeed") == 1


def test_5xx_is_retried_then_bounded() -> None:
    faults = {1: Fault(503), 2: Fault(500), 4: Fault(502)}
    with AppViewServer(feeds={FEED: posts(150)}, faults=faults) as server, client(server) as appview:
        assert len(list(appview.get_feed(FEED))) == 150
    assert len(server.requests) == 5
    faults = {n: Fault(503) for n in range(1, 10)}
    with (
        AppViewServer(feeds={FEED: posts(5)}, faults=faults) as server,
        client(server, max_retries=2) as appview,
        pytest.raises(AppViewError, match="gave up after 3 attempts"),
    ):
        list(appview.get_feed(FEED))
    assert len(server.requests) == 3


def test_connection_errors_are_retried_then_bounded() -> None:
    with AppViewServer() as server:
        host = server.host
    appview = AppViewClient(host, secure=False, timeout_s=1, max_retries=2, backoff_base_s=0.01)
    with appview, pytest.raises(AppViewError, match="ConnectError"):
        appview.resolve_handle(HANDLE)
    assert appview.requests == 3


def test_unknown_feed_and_actor_name_what_was_asked() -> None:
    with AppViewServer(feeds={FEED: []}, author_feeds={DID: []}) as server, client(server) as appview:
        with pytest.raises(AppViewRequestError, match=re.escape("at://did:plc:nope/app.bsky.feed.generator/x")):
            list(appview.get_feed("at://did:plc:nope/app.bsky.feed.generator/x"))
        with pytest.raises(AppViewRequestError, match=r"nobody\.bsky\.social.*Profile not found"):
            list(appview.get_author_feed("nobody.bsky.social"))
        assert list(appview.get_feed(FEED)) == []
        assert len(server.requests) == 3


def test_resolve_handle() -> None:
    with AppViewServer(handles={HANDLE: DID}) as server, client(server) as appview:
        assert appview.resolve_handle(HANDLE) == DID
        assert appview.resolve_handle("@" + HANDLE) == DID
        assert appview.resolve_handle("did:plc:already") == "did:plc:already"
        with pytest.raises(AppViewRequestError, match=r"ghost\.example.*Unable to resolve handle"):
            appview.resolve_handle("ghost.example")
    assert server.count("/xrpc/com.atproto.identity.resolveHandle") == 3


def test_author_feed_keeps_own_posts_and_skips_reposts() -> None:
    own = posts(120)
    other = feed_view_post(999, did="did:plc:other", handle="other.bsky.social", repost_by=DID)
    items = [*own[:50], other, *own[50:]]
    feeds = {DID: items}
    with AppViewServer(author_feeds=feeds, handles={HANDLE: DID}) as server, client(server) as appview:
        got = list(appview.get_author_feed(HANDLE))
    assert [g.uri for g in got] == [i["post"]["uri"] for i in own]
    assert appview.skipped_reposts == 1 and not appview.invalid
    assert all(r.query["filter"] == "posts_no_replies" and r.query["actor"] == HANDLE for r in server.requests)


def test_malformed_items_are_reported_with_reasons_and_the_rest_kept() -> None:
    items = posts(130)
    no_record = copy.deepcopy(items[3])
    del no_record["post"]["record"]
    bad_uri = copy.deepcopy(items[4])
    bad_uri["post"]["uri"] = "https://bsky.app/profile/x/post/y"
    stranger = copy.deepcopy(items[5])
    stranger["post"]["author"]["did"] = "did:plc:someone-else"
    bad_count = copy.deepcopy(items[6])
    bad_count["post"]["likeCount"] = "many"
    broken = [no_record, bad_uri, "just a string", stranger, bad_count, {"post": {"uri": 5}}]
    served = items[:3] + broken + items[7:]
    seen: list[InvalidItem] = []
    with AppViewServer(feeds={FEED: served}) as server, client(server, on_invalid=seen.append) as appview:
        got = list(appview.get_feed(FEED))
    assert len(got) == len(served) - len(broken)
    assert [i.reason for i in appview.invalid] == [
        "missing_field:post.record",
        "invalid_uri:post.uri",
        "not_an_object",
        "author_mismatch:post.uri",
        "wrong_type:post.likeCount",
        "wrong_type:post.uri",
    ]
    assert [i.rank for i in appview.invalid] == [3, 4, 5, 6, 7, 8]
    assert seen == appview.invalid and all(i.source == FEED for i in seen)
    assert got[3].rank == 9


def test_item_to_event_goes_through_the_archive_parser() -> None:
    items = [
        feed_view_post(
            1, text="héllo from the feed ✨", created_at="2024-03-10T12:00:00.000Z", indexed_at="2024-03-10T12:00:01.5Z"
        ),
        feed_view_post(2, text="x" * 3001),
    ]
    with AppViewServer(feeds={FEED: items}) as server, client(server) as appview:
        first, second = appview.get_feed(FEED)
    event = item_to_event(first)
    assert event["time_us"] == int(datetime(2024, 3, 10, 12, 0, 1, 500000, tzinfo=UTC).timestamp() * 1_000_000)
    outcome = parse_event(json.dumps(event).encode())
    assert outcome.kind == "post"
    row = outcome.row
    assert row["uri"] == first.uri == "at://did:plc:author1/app.bsky.feed.post/3kpost0000001"
    assert row["text"] == "héllo from the feed ✨" and row["cid"] == first.cid
    assert row["created_at"] == datetime(2024, 3, 10, 12, tzinfo=UTC)
    assert row["embed_type"] == "app.bsky.embed.external" and row["langs"] == ["en"]
    rejected = parse_event(json.dumps(item_to_event(second)).encode())
    assert (rejected.kind, rejected.reason) == ("reject", "text_too_long")
