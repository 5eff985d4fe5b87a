"""Feed snapshots against a local AppView: ranks and counts recorded, posts into raw_posts, bad items kept."""

from __future__ import annotations

from datetime import UTC, date, datetime

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance, DefaultScheduleStatus, DefaultSensorStatus, build_sensor_context

from bsky_warehouse.assets.feeds import feed_followup_sensor, feed_snapshot_sensor, followup_requests
from bsky_warehouse.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    DayWindow,
    contiguous_windows,
    partition_start_date,
    window_from_tags,
)
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.resources.appview import AppViewResource
from tests.servers.appview_server import AppViewServer, Fault, feed_view_post

pytestmark = pytest.mark.integration
FEED = "at://did:plc:feedowner/app.bsky.feed.generator/whats-hot"


def test_feed_snapshot_records_ranks_counts_posts_and_rejects(tmp_path):
    items = [feed_view_post(n, created_at=f"2024-03-{10 + n % 2}T12:00:00.000Z") for n in range(150)]
    items[7]["post"]["record"]["createdAt"] = "not a time"
    items[9] = {"post": {"uri": "at://broken"}}
    db = str(tmp_path / "wh.duckdb")
    with AppViewServer(feeds={FEED: items}, faults={2: Fault(503)}) as server:
        appview = AppViewResource(host=server.host, secure=False)
        result = run_window(
            DayWindow.for_day(date(2024, 3, 12)), DagsterInstance.ephemeral(), db_path=db,
            assets=["feed_snapshots"], resources={"appview": appview},
            run_config={"ops": {"feed_snapshots": {"config": {"feeds": [FEED]}}}},
        )  # fmt: skip
    assert result["success"]
    con = duckdb.connect(db, read_only=True)
    ranks = [r[0] for r in con.execute("SELECT rank FROM feed_snapshots ORDER BY rank").fetchall()]
    assert ranks == [r for r in range(150) if r not in (7, 9)]
    assert con.execute("SELECT like_count IS NOT NULL FROM feed_snapshots LIMIT 1").fetchall() == [(True,)]
    raw = dict(
        con.execute(
            "SELECT partition_date::VARCHAR, count(*) FROM raw_posts WHERE source = 'feed' GROUP BY 1"
        ).fetchall()
    )
    assert raw == {"2024-03-10": 75, "2024-03-11": 73}  # items 7 and 9 (odd: the 11th) were rejected
    rejected = sorted(
        r[0] for r in con.execute("SELECT line_no FROM rejected_records WHERE source = 'feed'").fetchall()
    )
    assert rejected == [7, 9]
    con.close()


def test_schedule_and_sensor_are_off_by_default_and_sensor_targets_today():
    from bsky_warehouse.definitions import daily_schedule

    assert daily_schedule.default_status == DefaultScheduleStatus.STOPPED
    assert feed_snapshot_sensor.default_status == DefaultSensorStatus.STOPPED
    assert feed_followup_sensor.default_status == DefaultSensorStatus.STOPPED
    request = feed_snapshot_sensor(build_sensor_context())
    assert request.partition_key == datetime.now(UTC).date().isoformat()


def test_contiguous_windows_cover_exactly_the_days():
    days = [date(2024, 3, d) for d in (12, 10, 11, 11, 15, 17, 18)]
    windows = contiguous_windows(days)
    assert [(w.start.day, w.end.day) for w in windows] == [(10, 13), (15, 16), (17, 19)]
    assert sorted(d for w in windows for d in w.days()) == sorted(set(days))
    assert contiguous_windows([]) == []


def test_followup_runs_cover_the_days_feed_posts_landed_in(tmp_path):
    """A snapshot's posts belong to their own days: the follow-up sensor re-cleans exactly those, in ranges."""
    items = [feed_view_post(n, created_at=f"2024-03-{d}T12:00:00.000Z") for n, d in enumerate((10, 11, 11, 14))]
    items.append(feed_view_post(99, created_at="2023-01-01T00:00:00.000Z"))  # before the first partition
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    with AppViewServer(feeds={FEED: items}) as server:
        result = run_window(
            DayWindow.for_day(date(2024, 3, 20)), instance, db_path=db, assets=["feed_snapshots"],
            resources={"appview": AppViewResource(host=server.host, secure=False)},
            run_config={"ops": {"feed_snapshots": {"config": {"feeds": [FEED]}}}},
        )  # fmt: skip
    event = instance.get_latest_materialization_event(AssetKey("feed_snapshots"))
    assert event.asset_materialization.metadata["days_touched"].value == [
        "2023-01-01", "2024-03-10", "2024-03-11", "2024-03-14",
    ]  # fmt: skip
    requests = followup_requests(result["run_id"], ["2023-01-01", "2024-03-10", "2024-03-11", "2024-03-14"],
                                 partition_start_date(), date(2024, 3, 20))  # fmt: skip
    assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in requests] == [
        ("2024-03-10", "2024-03-11"), ("2024-03-14", "2024-03-14"),
    ]  # fmt: skip
    # Running the follow-up for those days puts the feed posts into cleaned_posts.
    for request in requests:
        window = window_from_tags(request.tags)
        run_window(window, instance, db_path=db, assets=["cleaned_posts"])
    con = duckdb.connect(db, read_only=True)
    cleaned = con.execute("SELECT count(*) FROM cleaned_posts").fetchall()[0][0]
    con.close()
    assert cleaned == 4
