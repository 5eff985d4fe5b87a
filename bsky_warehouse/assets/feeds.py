"""Feed snapshots (the researchers' "most liked" sync): a daily asset, a sensor every 2 hours (off by default)."""

from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    DefaultSensorStatus,
    MaterializeResult,
    RunRequest,
    SensorEvaluationContext,
    asset,
    define_asset_job,
    sensor,
)
from pydantic import Field

from bsky_warehouse.feeds import DEFAULT_FEEDS, write_snapshot
from bsky_warehouse.partitions import DayWindow, daily_partitions
from bsky_warehouse.resources.appview import AppViewResource
from bsky_warehouse.resources.warehouse import WarehouseResource


class FeedsConfig(Config):
    feeds: list[str] = Field(default=list(DEFAULT_FEEDS), description="Feed generator URIs to snapshot.")
    max_pages: int = Field(default=10, description="Pages of 100 per feed and snapshot.")


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="ingest",
    description="Each feed's posts with rank and like/repost/reply counts at snapshot time; posts into raw_posts.",
)
def feed_snapshots(
    context: AssetExecutionContext, config: FeedsConfig, warehouse: WarehouseResource, appview: AppViewResource
) -> MaterializeResult:
    days = DayWindow.from_time_window(context.partition_time_window).days()
    if len(days) != 1:
        raise ValueError(
            f"feed_snapshots records a feed as it is now: materialize one partition (today), not {len(days)} days"
        )
    day = days[0]
    snapshot_at = datetime.now(UTC)
    totals = {"items": 0, "posts": 0, "rejected": 0}
    with appview.client() as client:
        for feed_uri in config.feeds:
            # Fetch first (network, no lock held), then write in one short transaction.
            items = list(client.get_feed(feed_uri, max_pages=config.max_pages))
            invalid = [bad for bad in client.invalid if bad.source == feed_uri]
            with warehouse.connect() as con:
                stats = write_snapshot(con, feed_uri, items, invalid, snapshot_at, day)
            context.log.info(f"{feed_uri}: {stats}")
            totals["items"] += stats.items
            totals["posts"] += stats.posts
            totals["rejected"] += sum(stats.rejected.values())
    return MaterializeResult(metadata={**totals, "snapshot_at": snapshot_at.isoformat()})


feed_job = define_asset_job("feed_snapshots_job", selection=["feed_snapshots"])


@sensor(job=feed_job, minimum_interval_seconds=2 * 3600, default_status=DefaultSensorStatus.STOPPED)
def feed_snapshot_sensor(context: SensorEvaluationContext) -> RunRequest:
    """Snapshot the configured feeds every 2 hours into today's partition."""
    now = datetime.now(UTC)
    return RunRequest(run_key=now.strftime("%Y-%m-%dT%H:%M"), partition_key=now.date().isoformat())
