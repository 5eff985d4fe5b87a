"""Ingest: the archive index routes every line of the archive (or of a Jetstream replay) to its day once; each
day's run then loads only its own lines into `raw_posts`, `post_deletions` and `rejected_records`, replacing each
(day, source) as a whole."""

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    Config,
    DefaultSensorStatus,
    EventLogEntry,
    MaterializeResult,
    RunRequest,
    SensorEvaluationContext,
    asset,
    asset_sensor,
    multi_asset,
)
from pydantic import Field

from bsky_warehouse.archive_index import ArchiveIndex
from bsky_warehouse.assets.feeds import followup_requests
from bsky_warehouse.ingest import replace_day
from bsky_warehouse.partitions import DayWindow, daily_partitions, partition_start_date
from bsky_warehouse.resources.bluesky import ArchiveSource
from bsky_warehouse.resources.jetstream import JetstreamSource
from bsky_warehouse.resources.warehouse import WarehouseResource

GROUP = "ingest"
DAYS_TOUCHED = "days_touched"


def archive_index(warehouse: WarehouseResource, archive: ArchiveSource) -> ArchiveIndex:
    return ArchiveIndex(warehouse, archive.path, "archive", partition_start_date())


def jetstream_index(warehouse: WarehouseResource) -> ArchiveIndex:
    """Replays are spooled under the warehouse's staging folder, one folder per day, and indexed like files."""
    return ArchiveIndex(warehouse, warehouse.staging_dir / "jetstream", "jetstream", partition_start_date())


@asset(
    name="archive_files",
    group_name=GROUP,
    pool="duckdb",
    description="The archive index: one row per archive file (fingerprint, outcome counts, days its lines belong "
    "to); each line is routed once to a per-day spool that the daily ingest reads. Only new or changed files are "
    "parsed; `days_touched` names the days whose lines changed (see archive_followup_sensor).",
)
def archive_files_asset(
    context: AssetExecutionContext, warehouse: WarehouseResource, archive: ArchiveSource
) -> MaterializeResult:
    report = archive_index(warehouse, archive).update()
    context.log.info(f"archive index: {report.metadata()}")
    return MaterializeResult(metadata={"dagster/row_count": report.files, **report.metadata()})


class IngestConfig(Config):
    source: Literal["archive", "jetstream"] = Field(
        default="archive",
        description="`archive`: files under the archive resource's directory. `jetstream`: replay the day from "
        "the jetstream resource (it keeps about 36 hours; older days come from an archive).",
    )


@multi_asset(
    specs=[
        AssetSpec(
            "raw_posts",
            group_name=GROUP,
            description="Posts as received, latest record per uri and day.",
            deps=["archive_files"],
        ),
        AssetSpec("post_deletions", group_name=GROUP, description="Delete events, honoured downstream."),
        AssetSpec("rejected_records", group_name=GROUP, description="Lines that could not load, with reasons."),
    ],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool="duckdb",
)
def archive_ingest(
    context: AssetExecutionContext,
    config: IngestConfig,
    warehouse: WarehouseResource,
    archive: ArchiveSource,
    jetstream: JetstreamSource,
) -> Iterator[MaterializeResult]:
    totals: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    undated_outcomes: Counter[str] = Counter()
    undated_rejected: Counter[str] = Counter()  # the same undated lines are seen by every day: count them once
    touched: set[date] = set()
    index = jetstream_index(warehouse) if config.source == "jetstream" else archive_index(warehouse, archive)
    if config.source == "archive":
        # Cheap when the archive_files asset ran first: only new or changed files are parsed.
        touched |= index.update().days_touched
    for day in DayWindow.from_time_window(context.partition_time_window).days():
        if config.source == "jetstream":
            # Replay first (network, no lock held), then index the spool like archive files and prune it.
            collected = jetstream.replay_day(day, index.directory)
            context.log.info(f"{day}: replayed {collected.events_written} events ({collected.reconnects} reconnects)")
            with warehouse.lock():
                touched |= index.forget(f"{day.isoformat()}/")
                touched |= index.update(keep_missing=True, prune=True).days_touched
        with warehouse.connect() as con:
            stats = replace_day(con, day, config.source, index.stage_day(con, day))
        context.log.info(f"{day}: {stats.metadata()}")
        totals.update(
            posts=stats.posts, post_events=stats.post_events, duplicates=stats.duplicate_events,
            deletes=stats.deletes, purged=stats.purged_downstream, lines=stats.lines,
        )  # fmt: skip
        totals["undated"] = stats.undated
        rejected.update(stats.rejected - stats.undated_rejected)
        outcomes.update(stats.by_kind)
        undated_outcomes = stats.undated_by_kind
        undated_rejected = stats.undated_rejected
    window = set(DayWindow.from_time_window(context.partition_time_window).days())
    if outside := touched - window:
        # Only days already ingested are out of date; a day never run simply gets its lines when it runs.
        with warehouse.connect() as con:
            built = {
                row[0]
                for row in con.execute(
                    "SELECT DISTINCT partition_date FROM raw_posts WHERE partition_date IN (SELECT unnest($days))",
                    {"days": sorted(outside)},
                ).fetchall()
            }
        if stale := sorted(d.isoformat() for d in outside & built):
            context.log.warning(f"the archive index changed lines of days already ingested outside this run: {stale}")
    rejected.update(undated_rejected)
    outcomes.update({f"undated:{kind}": n for kind, n in undated_outcomes.items()})
    yield MaterializeResult(
        asset_key="raw_posts",
        metadata={
            "dagster/row_count": totals["posts"],
            "lines_read": totals["lines"],
            "lines_by_outcome": dict(sorted(outcomes.items())),
            "undated_lines": totals["undated"],
            "post_events": totals["post_events"],
            "duplicate_or_updated_events": totals["duplicates"],
            "index_days_touched": sorted(d.isoformat() for d in touched),
        },
    )
    yield MaterializeResult(
        asset_key="post_deletions",
        metadata={"deletes": totals["deletes"], "purged_downstream_rows": totals["purged"]},
    )
    yield MaterializeResult(
        asset_key="rejected_records",
        metadata={"rejected": sum(rejected.values()), "rejected_by_reason": dict(sorted(rejected.items()))},
    )


@asset_sensor(
    asset_key=AssetKey("archive_files"), job_name="warehouse_daily", default_status=DefaultSensorStatus.STOPPED
)
def archive_followup_sensor(context: SensorEvaluationContext, asset_event: EventLogEntry) -> list[RunRequest]:
    """After the archive index changed (a file added or rewritten), re-run the days whose lines it changed: one
    warehouse run per contiguous range of them, within the daily partitions (which end at yesterday)."""
    materialization = asset_event.asset_materialization
    entry = materialization.metadata.get(DAYS_TOUCHED) if materialization else None
    days = list(entry.value) if entry is not None else []
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    return followup_requests(asset_event.run_id, days, partition_start_date(), yesterday)
