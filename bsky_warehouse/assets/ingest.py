"""Ingest: one pass over the archive per day fills `raw_posts`, `post_deletions` and `rejected_records`."""

from collections import Counter
from collections.abc import Iterator

from dagster import AssetExecutionContext, AssetSpec, BackfillPolicy, MaterializeResult, multi_asset

from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.partitions import DayWindow, daily_partitions
from bsky_warehouse.resources.bluesky import ArchiveSource
from bsky_warehouse.resources.warehouse import WarehouseResource

GROUP = "ingest"


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
    context: AssetExecutionContext, warehouse: WarehouseResource, archive: ArchiveSource
) -> Iterator[MaterializeResult]:
    totals: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    for day in DayWindow.from_time_window(context.partition_time_window).days():
        with warehouse.connect() as con:
            stats = replace_day(con, day, "archive", stage_lines(con, archive.read_day(day)))
        context.log.info(f"{day}: {stats.metadata()}")
        totals.update(
            posts=stats.posts, post_events=stats.post_events, duplicates=stats.duplicate_events,
            deletes=stats.deletes, purged=stats.purged_downstream, lines=stats.lines,
        )  # fmt: skip
        rejected.update(stats.rejected)
    yield MaterializeResult(
        asset_key="raw_posts",
        metadata={
            "dagster/row_count": totals["posts"],
            "lines_read": totals["lines"],
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
