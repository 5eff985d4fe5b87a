"""Feed snapshots (the researchers' "most liked" sync): a daily asset, a sensor every 2 hours (off by default)."""

from datetime import UTC, date, datetime

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    BackfillPolicy,
    Config,
    DefaultSensorStatus,
    EventLogEntry,
    MaterializeResult,
    RunRequest,
    SensorEvaluationContext,
    asset,
    asset_sensor,
    define_asset_job,
    sensor,
)
from pydantic import Field

from bsky_warehouse.feeds import DEFAULT_FEEDS, write_snapshot
from bsky_warehouse.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    DayWindow,
    contiguous_windows,
    daily_partitions,
    partition_start_date,
)
from bsky_warehouse.resources.appview import AppViewResource
from bsky_warehouse.resources.warehouse import WarehouseResource

DAYS_TOUCHED = "days_touched"


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
    days_touched: set[date] = set()
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
            days_touched |= stats.days
    metadata = {
        **totals,
        "snapshot_at": snapshot_at.isoformat(),
        DAYS_TOUCHED: sorted(d.isoformat() for d in days_touched),
    }
    return MaterializeResult(metadata=metadata)


feed_job = define_asset_job("feed_snapshots_job", selection=["feed_snapshots"])
# Feed posts land in raw_posts under their own createdAt day; cleaning and everything after it must follow.
feed_followup_job = define_asset_job(
    "feed_followup",
    selection=AssetSelection.assets("cleaned_posts").downstream() - AssetSelection.assets("llm_labels").downstream(),
)


@sensor(job=feed_job, minimum_interval_seconds=2 * 3600, default_status=DefaultSensorStatus.STOPPED)
def feed_snapshot_sensor(context: SensorEvaluationContext) -> RunRequest:
    """Snapshot the configured feeds every 2 hours into today's partition."""
    now = datetime.now(UTC)
    return RunRequest(run_key=now.strftime("%Y-%m-%dT%H:%M"), partition_key=now.date().isoformat())


def followup_requests(run_id: str, days: list[str], first_day: date, today: date) -> list[RunRequest]:
    """One run per contiguous range of the days a snapshot's posts landed in, within the partitions that exist."""
    wanted = [d for d in (date.fromisoformat(x) for x in days) if first_day <= d <= today]
    return [
        RunRequest(
            run_key=f"{run_id}:{window.start}",
            tags={RANGE_START_TAG: window.start.isoformat(), RANGE_END_TAG: window.days()[-1].isoformat()},
        )
        for window in contiguous_windows(wanted)
    ]


@asset_sensor(asset_key=AssetKey("feed_snapshots"), job=feed_followup_job, default_status=DefaultSensorStatus.STOPPED)
def feed_followup_sensor(context: SensorEvaluationContext, asset_event: EventLogEntry) -> list[RunRequest]:
    """After each snapshot, re-clean (and re-score, re-aggregate) the days its posts belong to."""
    materialization = asset_event.asset_materialization
    entry = materialization.metadata.get(DAYS_TOUCHED) if materialization else None
    days = list(entry.value) if entry is not None else []
    return followup_requests(asset_event.run_id, days, partition_start_date(), datetime.now(UTC).date())
