"""Cleaning: `cleaned_posts`, one row per uri across all days, filters recorded rather than applied."""

from collections import Counter
from datetime import date

from dagster import AssetExecutionContext, AssetMaterialization, BackfillPolicy, Config, MaterializeResult, asset
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
    window = DayWindow.from_time_window(context.partition_time_window)
    totals: Counter[str] = Counter()
    filtered: Counter[str] = Counter()
    taken_from: dict[date, set[date]] = {}
    other_days: set[date] = set()
    # Each day is still its own transaction (an idempotent replace); only the connection is shared.
    with warehouse.lease() as lease:
        for day in window.days():
            stats = clean_day(lease.connection(), day, rules)
            totals.update({k: v for k, v in stats.metadata().items() if isinstance(v, int)})
            filtered.update(stats.filtered)
            other_days.update(stats.other_days_changed)
            for other in stats.taken_from_days:
                taken_from.setdefault(other, set()).add(day)
    # A take-over removed rows of partitions outside this run: tell Dagster those partitions changed, so their
    # downstream partitions are not shown as up to date (the dbt step rebuilds their marts, see assets/dbt.py).
    for other, by in sorted(taken_from.items()):
        if not window.start <= other < window.end:
            context.log_event(
                AssetMaterialization(
                    asset_key=context.asset_key,
                    partition=other.isoformat(),
                    description=f"posts taken over by earlier partitions {', '.join(map(str, sorted(by)))}",
                    metadata={"taken_over_by": sorted(d.isoformat() for d in by)},
                )
            )
    return MaterializeResult(
        metadata={
            **totals,
            "filtered_by_reason": dict(sorted(filtered.items())),
            "other_days_changed": sorted(d.isoformat() for d in other_days),
            "dagster/row_count": totals["cleaned_posts_out"],
        }
    )
