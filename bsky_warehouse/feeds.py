"""Feed snapshots: which posts a feed served, in which order, with their counts at that moment.

The posts themselves become Jetstream-shaped events and go through the same parser as every other source,
into `raw_posts` with `source='feed'` under their own `createdAt` day; items that cannot be read are kept in
`rejected_records` with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

import duckdb
import pandas as pd

from bsky_warehouse.events import parse_event
from bsky_warehouse.resources.appview import FeedItem, InvalidItem, item_to_event
from bsky_warehouse.resources.warehouse import insert_rows, registered, transaction

# The researchers' "most liked" sync followed these: Bluesky's catch-up feed and What's Hot.
DEFAULT_FEEDS = (
    "at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.generator/whats-hot",
    "at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.generator/hot-classic",
)


@dataclass
class SnapshotStats:
    items: int = 0
    # Distinct posts: a feed can list a post twice, and a post in two feeds is one post (the caller unions these).
    post_uris: set[str] = field(default_factory=set)
    rejected: dict[str, int] = field(default_factory=dict)
    days: set[date] = field(default_factory=set)  # the partitions the posts landed in (their createdAt day)


def write_snapshot(
    con: duckdb.DuckDBPyConnection,
    feed_uri: str,
    items: Iterable[FeedItem],
    invalid: Iterable[InvalidItem],
    snapshot_at: datetime,
    day: date,
) -> SnapshotStats:
    """One feed's snapshot in one transaction: ranks and counts, its posts (latest record wins), rejects."""
    stats = SnapshotStats()
    snapshot_rows, posts, rejects = [], {}, []
    for item in items:
        stats.items += 1
        line = json.dumps(item_to_event(item), ensure_ascii=False).encode()
        outcome = parse_event(line)
        if outcome.kind != "post" or outcome.row is None:
            rejects.append({"raw": line.decode(), "reason": outcome.reason or outcome.kind, "file": feed_uri,
                            "line_no": item.rank, "partition_date": day})  # fmt: skip
            continue
        snapshot_rows.append(
            {
                "feed_uri": feed_uri,
                "rank": item.rank,
                "post_uri": item.uri,
                "like_count": item.like_count,
                "repost_count": item.repost_count,
                "reply_count": item.reply_count,
                "snapshot_at": snapshot_at,
                "partition_date": day,
            }
        )
        posts[item.uri] = {**outcome.row, "partition_date": outcome.row["created_at"].date()}
    for bad in invalid:
        rejects.append({"raw": json.dumps(bad.item, default=str), "reason": bad.reason, "file": bad.source,
                        "line_no": bad.rank, "partition_date": day})  # fmt: skip
    for reject in rejects:
        stats.rejected[reject["reason"]] = stats.rejected.get(reject["reason"], 0) + 1
    stats.post_uris = set(posts)
    stats.days = {row["partition_date"] for row in posts.values()}
    with transaction(con):
        insert_rows(con, "feed_snapshots", snapshot_rows)
        if posts:
            with registered(con, "feed_uris", pd.DataFrame({"uri": list(posts)})):
                con.execute("DELETE FROM raw_posts WHERE source = 'feed' AND uri IN (SELECT uri FROM feed_uris)")
        insert_rows(con, "raw_posts", [{**row, "source": "feed", "ingested_at": snapshot_at} for row in posts.values()])
        con.execute(
            "DELETE FROM rejected_records WHERE source = 'feed' AND file = $feed AND partition_date = $day",
            {"feed": feed_uri, "day": day},
        )
        insert_rows(con, "rejected_records", [{**r, "source": "feed", "ingested_at": snapshot_at} for r in rejects])
    return stats
