"""Feed snapshots (the researchers' "most liked" sync): today's partition, a sensor every 2 hours (off by default).

A snapshot records a feed as it is at that moment, so its partition is the day it was taken, and the snapshot
partitions run up to today (the daily partitions end at yesterday: a day is complete only once it has ended).
"""

from datetime import UTC, date, datetime, timedelta

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Config,
    DailyPartitionsDefinition,
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
    partition_start_date,
)
from bsky_warehouse.resources.appview import AppViewResource
from bsky_warehouse.resources.warehouse import WarehouseResource

DAYS_TOUCHED = "days_touched"
# A run asked for just before midnight may start just after it: its partition is still the day it was asked for.
SNAPSHOT_GRACE = timedelta(hours=1)

snapshot_partitions = DailyPartitionsDefinition(
    start_date=partition_start_date().isoformat(), end_offset=1, timezone="UTC", fmt="%Y-%m-%d"
)


class FeedsConfig(Config):
    feeds: list[str] = Field(default=list(DEFAULT_FEEDS), description="Feed generator URIs to snapshot.")
    max_pages: int | None = Field(
        default=None,
        description="Pages of 100 per feed and snapshot; unset pages to the feed's end (the catch-up feed is "
        "about 1,000 posts). A cap that stops early marks the snapshot `truncated`.",
    )


def snapshot_day_problem(days: list[date], now: datetime) -> str | None:
    """Why a run cannot snapshot these partitions now, or None: a snapshot is of one day, the day it is taken."""
    if len(days) != 1:
        return f"feed_snapshots records a feed as it is now: materialize one partition (today), not {len(days)} days"
    allowed = {now.date(), (now - SNAPSHOT_GRACE).date()}
    if days[0] not in allowed:
        return (
            f"feed_snapshots cannot record {days[0]} now ({now:%Y-%m-%d %H:%M} UTC): a snapshot belongs to the day "
            f"it is taken; materialize partition {now.date()}"
        )
    return None


@asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    group_name="ingest",
    description="Each feed's posts with rank and like/repost/reply counts at snapshot time; posts into raw_posts. "
    "Partitioned by the UTC day the snapshot is taken (today included).",
)
def feed_snapshots(
    context: AssetExecutionContext, config: FeedsConfig, warehouse: WarehouseResource, appview: AppViewResource
) -> MaterializeResult:
    snapshot_at = datetime.now(UTC)
    days = DayWindow.from_time_window(context.partition_time_window).days()
    problem = snapshot_day_problem(days, snapshot_at)
    if problem:
        raise ValueError(problem)
    day = days[0]
    items_per_feed: dict[str, int] = {}
    posts: set[str] = set()
    rejected = 0
    days_touched: set[date] = set()
    with appview.client() as client:
        for feed_uri in config.feeds:
            # Fetch first (network, no lock held), then write in one short transaction.
            items = list(client.get_feed(feed_uri, max_pages=config.max_pages))
            invalid = [bad for bad in client.invalid if bad.source == feed_uri]
            with warehouse.connect() as con:
                stats = write_snapshot(con, feed_uri, items, invalid, snapshot_at, day)
            context.log.info(f"{feed_uri}: {stats.items} items, {len(stats.post_uris)} posts, {stats.rejected}")
            items_per_feed[feed_uri] = stats.items
            posts |= stats.post_uris
            rejected += sum(stats.rejected.values())
            days_touched |= stats.days
        truncated = sorted(client.truncated)
    if truncated:
        context.log.warning(
            f"feed_snapshots stopped at max_pages={config.max_pages} before the end of {', '.join(truncated)}: "
            "the snapshot is truncated (unset max_pages to page to the end)"
        )
    metadata = {
        "posts": len(posts),
        "items": sum(items_per_feed.values()),
        "items_per_feed": items_per_feed,
        "rejected": rejected,
        "truncated": bool(truncated),
        "truncated_feeds": truncated,
        "snapshot_at": snapshot_at.isoformat(),
        DAYS_TOUCHED: sorted(d.isoformat() for d in days_touched),
    }
    return MaterializeResult(metadata=metadata)


feed_job = define_asset_job(
    "feed_snapshots_job",
    selection=["feed_snapshots"],
    description="Snapshot the configured feeds today (ranks, counts, their posts into raw_posts).",
)
# Defined with the other jobs (definitions.py): it follows the daily schedule's selection.
FEED_FOLLOWUP_JOB = "feed_followup"


def snapshot_request(now: datetime) -> RunRequest:
    """The run a sensor tick asks for: today's snapshot partition, keyed by the minute (one run per tick)."""
    now = now.astimezone(UTC)
    return RunRequest(
        run_key=now.strftime("%Y-%m-%dT%H:%M"),
        partition_key=now.date().isoformat(),
    )


@sensor(job=feed_job, minimum_interval_seconds=2 * 3600, default_status=DefaultSensorStatus.STOPPED)
def feed_snapshot_sensor(context: SensorEvaluationContext) -> RunRequest:
    """Snapshot the configured feeds every 2 hours into today's partition."""
    return snapshot_request(datetime.now(UTC))


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


@asset_sensor(
    asset_key=AssetKey("feed_snapshots"), job_name=FEED_FOLLOWUP_JOB, default_status=DefaultSensorStatus.STOPPED
)
def feed_followup_sensor(context: SensorEvaluationContext, asset_event: EventLogEntry) -> list[RunRequest]:
    """After each snapshot, re-clean (and re-score, re-aggregate) the days its posts belong to."""
    materialization = asset_event.asset_materialization
    entry = materialization.metadata.get(DAYS_TOUCHED) if materialization else None
    days = list(entry.value) if entry is not None else []
    return followup_requests(asset_event.run_id, days, partition_start_date(), datetime.now(UTC).date())
