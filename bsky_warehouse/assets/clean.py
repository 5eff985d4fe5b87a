"""Cleaning: `cleaned_posts`, one row per uri across all days, filters recorded rather than applied."""

from collections import Counter

from dagster import AssetExecutionContext, BackfillPolicy, Config, MaterializeResult, asset
from pydantic import Field

from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.partitions import DayWindow, daily_partitions
from bsky_warehouse.resources.warehouse import WarehouseResource


class CleanConfig(Config):
    min_text_length: int = Field(default=3, description="Shorter texts (after trimming) fail the filters.")
    languages: list[str] = Field(
        default=["en"], description="Accepted languages when a post declares `langs` (primary subtag)."
    )


@asset(
    deps=["raw_posts", "post_deletions"],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="clean",
    pool="duckdb",
    description="One row per post uri across all partitions; deleted posts excluded; filter outcome recorded.",
)
def cleaned_posts(
    context: AssetExecutionContext, config: CleanConfig, warehouse: WarehouseResource
) -> MaterializeResult:
    rules = FilterRules(min_text_length=config.min_text_length, languages=tuple(config.languages))
    totals: Counter[str] = Counter()
    filtered: Counter[str] = Counter()
    for day in DayWindow.from_time_window(context.partition_time_window).days():
        with warehouse.connect() as con:
            stats = clean_day(con, day, rules)
        totals.update({k: v for k, v in stats.metadata().items() if isinstance(v, int)})
        filtered.update(stats.filtered)
    return MaterializeResult(
        metadata={
            **totals,
            "filtered_by_reason": dict(sorted(filtered.items())),
            "dagster/row_count": totals["cleaned_posts_out"],
        }
    )
