"""Feed snapshots against a local AppView: ranks and counts recorded, posts into raw_posts, bad items kept; the
sensor's request runs as the job it names, into today's partition."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance, DefaultScheduleStatus, DefaultSensorStatus, build_sensor_context

from bsky_warehouse.assets.feeds import (
    feed_followup_sensor,
    feed_snapshot_sensor,
    followup_requests,
    snapshot_day_problem,
    snapshot_partitions,
)
from bsky_warehouse.definitions import build_definitions
from bsky_warehouse.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    contiguous_windows,
    partition_start_date,
    window_from_tags,
)
from bsky_warehouse.pipeline import run_job, run_window
from bsky_warehouse.resources.appview import AppViewResource
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.servers.appview_server import AppViewServer, Fault, feed_view_post

pytestmark = pytest.mark.integration
FEED = "at://did:plc:feedowner/app.bsky.feed.generator/whats-hot"
OTHER_FEED = "at://did:plc:feedowner/app.bsky.feed.generator/hot-classic"


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def snapshot(server: AppViewServer, db: str, instance: DagsterInstance, **config: Any) -> dict[str, Any]:
    """Today's snapshot through the job the sensor runs; the materialization's metadata as plain values."""
    result = run_job(
        "feed_snapshots_job", instance, db_path=db, partition_key=today(),
        resources={"appview": AppViewResource(host=server.host, secure=False)},
        run_config={"ops": {"feed_snapshots": {"config": {"feeds": [FEED], **config}}}},
    )  # fmt: skip
    assert result["success"], result["failures"]
    event = instance.get_latest_materialization_event(AssetKey("feed_snapshots"))
    assert event.asset_materialization.partition == today()
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def test_feed_snapshot_records_ranks_counts_posts_and_rejects(tmp_path):
    items = [feed_view_post(n, created_at=f"2024-03-{10 + n % 2}T12:00:00.000Z") for n in range(150)]
    items[7]["post"]["record"]["createdAt"] = "not a time"
    items[9] = {"post": {"uri": "at://broken"}}
    db = str(tmp_path / "wh.duckdb")
    with AppViewServer(feeds={FEED: items}, faults={2: Fault(503)}) as server:
        meta = snapshot(server, db, DagsterInstance.ephemeral())
    # 150 served: 149 readable items (one with a bad createdAt, rejected on load) and one the client rejects.
    assert meta["items"] == 149 and meta["posts"] == 148 and meta["rejected"] == 2 and meta["truncated"] is False
    con = duckdb.connect(db, read_only=True)
    ranks = [r[0] for r in con.execute("SELECT rank FROM feed_snapshots ORDER BY rank").fetchall()]
    assert ranks == [r for r in range(150) if r not in (7, 9)]
    assert con.execute("SELECT DISTINCT partition_date::VARCHAR FROM feed_snapshots").fetchall() == [(today(),)]
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


def test_the_sensor_tick_asks_for_a_run_that_succeeds(tmp_path):
    """Evaluate the real sensor, then execute exactly the run it requests (job, partition, tags)."""
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    items = [feed_view_post(n, created_at="2024-03-12T08:00:00.000Z") for n in range(30)]
    with AppViewServer(feeds={FEED: items}) as server:
        defs = build_definitions(
            warehouse=WarehouseResource(path=db), appview=AppViewResource(host=server.host, secure=False)
        )
        sensor = defs.resolve_sensor_def("feed_snapshot_sensor")
        request = sensor(build_sensor_context(instance=instance, definitions=defs))
        assert request.partition_key == today()
        assert request.partition_key in snapshot_partitions.get_partition_keys()
        job = defs.resolve_job_def(sensor.job_name)
        result = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags,
            run_config={"ops": {"feed_snapshots": {"config": {"feeds": [FEED]}}}},
        )  # fmt: skip
    assert result.success
    con = duckdb.connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM feed_snapshots").fetchall() == [(30,)]
    con.close()


def test_paging_goes_to_the_feeds_end_by_default(tmp_path):
    items = [feed_view_post(n, created_at="2024-03-12T08:00:00.000Z") for n in range(492)]
    with AppViewServer(feeds={FEED: items}, page_size=20) as server:
        meta = snapshot(server, str(tmp_path / "wh.duckdb"), DagsterInstance.ephemeral())
        requests = server.count("/xrpc/app.bsky.feed.getFeed")
    assert meta["items"] == 492 and meta["posts"] == 492 and meta["truncated"] is False
    assert requests == 25  # 24 full pages of 20 and the last 12


def test_a_page_cap_that_stops_early_is_recorded_as_truncated(tmp_path):
    items = [feed_view_post(n, created_at="2024-03-12T08:00:00.000Z") for n in range(492)]
    instance = DagsterInstance.ephemeral()
    with AppViewServer(feeds={FEED: items}, page_size=20) as server:
        meta = snapshot(server, str(tmp_path / "wh.duckdb"), instance, max_pages=2)
    assert meta["items"] == 40 and meta["truncated"] is True and meta["truncated_feeds"] == [FEED]
    run_id = instance.get_latest_materialization_event(AssetKey("feed_snapshots")).run_id
    warnings = [e.user_message for e in instance.all_logs(run_id) if e.level == logging.WARNING]
    assert any("truncated" in message and FEED in message for message in warnings), warnings


def test_a_cap_that_reaches_the_end_is_not_truncated(tmp_path):
    items = [feed_view_post(n, created_at="2024-03-12T08:00:00.000Z") for n in range(40)]
    with AppViewServer(feeds={FEED: items}, page_size=20) as server:
        meta = snapshot(server, str(tmp_path / "wh.duckdb"), DagsterInstance.ephemeral(), max_pages=2)
    assert meta["items"] == 40 and meta["truncated"] is False


def test_posts_in_two_feeds_are_counted_once_with_items_per_feed(tmp_path):
    shared = [feed_view_post(n, created_at="2024-03-12T08:00:00.000Z") for n in range(30)]
    only_other = [feed_view_post(100 + n, created_at="2024-03-12T08:00:00.000Z") for n in range(5)]
    with AppViewServer(feeds={FEED: shared, OTHER_FEED: [*shared, *only_other]}) as server:
        meta = snapshot(server, str(tmp_path / "wh.duckdb"), DagsterInstance.ephemeral(), feeds=[FEED, OTHER_FEED])
    assert meta["posts"] == 35 and meta["items"] == 65
    assert meta["items_per_feed"] == {FEED: 30, OTHER_FEED: 35}


def test_a_snapshot_belongs_to_the_day_it_is_taken():
    now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    assert snapshot_day_problem([now.date()], now) is None
    assert snapshot_day_problem([date(2026, 11, 30)], now) is None  # asked for before midnight, run just after
    assert "materialize partition 2026-12-01" in snapshot_day_problem([date(2026, 11, 20)], now)
    assert "not 3 days" in snapshot_day_problem([now.date() - timedelta(days=i) for i in range(3)], now)
    later = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert snapshot_day_problem([date(2026, 11, 30)], later) is not None


def test_schedule_and_sensor_are_off_by_default_and_sensor_targets_today():
    from bsky_warehouse.definitions import daily_schedule

    assert daily_schedule.default_status == DefaultScheduleStatus.STOPPED
    assert feed_snapshot_sensor.default_status == DefaultSensorStatus.STOPPED
    assert feed_followup_sensor.default_status == DefaultSensorStatus.STOPPED
    request = feed_snapshot_sensor(build_sensor_context())
    assert request.partition_key == today()


def test_the_daily_job_leaves_feed_snapshots_to_their_own_job():
    defs = build_definitions()
    assert AssetKey("feed_snapshots") not in defs.resolve_job_def("warehouse_daily").asset_layer.selected_asset_keys
    assert AssetKey("feed_snapshots") in defs.resolve_job_def("feed_snapshots_job").asset_layer.selected_asset_keys


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
        meta = snapshot(server, db, instance)
    assert meta["days_touched"] == ["2023-01-01", "2024-03-10", "2024-03-11", "2024-03-14"]
    run_id = instance.get_latest_materialization_event(AssetKey("feed_snapshots")).run_id
    requests = followup_requests(run_id, ["2023-01-01", "2024-03-10", "2024-03-11", "2024-03-14"],
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


def test_a_followup_first_of_all_runs_on_a_new_warehouse_builds_its_marts(tmp_path):
    """The follow-up's marts read dbt views and seeds that a daily run creates. Under the daemon a follow-up can
    be a new warehouse's first run after its snapshot: the sensor's own request must then build them too."""
    items = [feed_view_post(n, created_at="2024-03-12T08:00:00.000Z") for n in range(12)]
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    with AppViewServer(feeds={FEED: items}) as server:
        snapshot(server, db, instance)
    defs = build_definitions(warehouse=WarehouseResource(path=db))
    sensor = defs.resolve_sensor_def("feed_followup_sensor")
    requests = list(sensor(build_sensor_context(instance=instance, definitions=defs)))
    assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in requests] == [("2024-03-12", "2024-03-12")]
    job = defs.resolve_job_def(sensor.job_name)
    result = job.execute_in_process(instance=instance, tags=requests[0].tags, raise_on_error=False)
    failures = [e.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    con = duckdb.connect(db, read_only=True)
    try:
        counted = con.execute("SELECT raw_posts, cleaned_posts FROM marts.daily_post_counts").fetchall()
    finally:
        con.close()
    assert counted == [(12, 12)]
