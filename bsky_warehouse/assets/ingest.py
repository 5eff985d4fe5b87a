"""Ingest: one pass over a day's events (an archive, or a Jetstream replay) fills `raw_posts`, `post_deletions`
and `rejected_records`; each (day, source) is replaced as a whole."""

from collections import Counter
from collections.abc import Iterator
from typing import Literal

from dagster import AssetExecutionContext, AssetSpec, BackfillPolicy, Config, MaterializeResult, multi_asset
from pydantic import Field

from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.partitions import DayWindow, daily_partitions, partition_start_date
from bsky_warehouse.resources.bluesky import ArchiveSource, read_outcomes
from bsky_warehouse.resources.jetstream import JetstreamSource
from bsky_warehouse.resources.warehouse import WarehouseResource

GROUP = "ingest"


class IngestConfig(Config):
    source: Literal["archive", "jetstream"] = Field(
        default="archive",
        description="`archive`: files under the archive resource's directory. `jetstream`: replay the day from "
        "the jetstream resource (it keeps about 36 hours; older days come from an archive).",
    )


@multi_asset(
    specs=[
        AssetSpec("raw_posts", group_name=GROUP, description="Posts as received, latest record per uri and day."),
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
    undated_rejected: Counter[str] = Counter()  # the same undated lines are seen by every day: count them once
    for day in DayWindow.from_time_window(context.partition_time_window).days():
        if config.source == "jetstream":
            # Replay first (network, no lock held), then load the spool exactly as an archive is loaded.
            spool = warehouse.staging_dir / "jetstream"
            collected = jetstream.replay_day(day, spool)
            context.log.info(f"{day}: replayed {collected.events_written} events ({collected.reconnects} reconnects)")
            lines = read_outcomes(spool, day, partition_start_date())
        else:
            lines = archive.read_day(day)
        with warehouse.connect() as con:
            stats = replace_day(con, day, config.source, stage_lines(con, lines))
        context.log.info(f"{day}: {stats.metadata()}")
        totals.update(
            posts=stats.posts, post_events=stats.post_events, duplicates=stats.duplicate_events,
            deletes=stats.deletes, purged=stats.purged_downstream, lines=stats.lines,
        )  # fmt: skip
        totals["undated"] = stats.undated
        rejected.update(stats.rejected - stats.undated_rejected)
        undated_rejected = stats.undated_rejected
    rejected.update(undated_rejected)
    yield MaterializeResult(
        asset_key="raw_posts",
        metadata={
            "dagster/row_count": totals["posts"],
            "lines_read": totals["lines"],
            "undated_lines": totals["undated"],
            "post_events": totals["post_events"],
            "duplicate_or_updated_events": totals["duplicates"],
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
