"""The one daily partitioning shared by every partitioned asset and the incremental dbt models.

A post belongs to the UTC day of its `createdAt`. Windows are half-open `[start, end)` dates so a range of
partitions (a single-run backfill) and one partition are handled the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dagster import DailyPartitionsDefinition, TimeWindow

START_ENV = "BSKY_WAREHOUSE_START_DATE"
DEFAULT_START = "2024-03-08"

daily_partitions = DailyPartitionsDefinition(
    start_date=os.environ.get(START_ENV, DEFAULT_START), timezone="UTC", fmt="%Y-%m-%d"
)


@dataclass(frozen=True)
class DayWindow:
    """Half-open window of UTC days."""

    start: date
    end: date

    @classmethod
    def for_day(cls, day: date | str) -> DayWindow:
        d = date.fromisoformat(day) if isinstance(day, str) else day
        return cls(d, d + timedelta(days=1))

    @classmethod
    def from_time_window(cls, window: TimeWindow) -> DayWindow:
        return cls(window.start.astimezone(UTC).date(), window.end.astimezone(UTC).date())

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days)]

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment.astimezone(UTC).date() < self.end

    def dbt_vars(self) -> dict[str, str]:
        """The `--vars` the incremental dbt models filter on."""
        return {"min_date": self.start.isoformat(), "max_date": self.end.isoformat()}


def rebuild_days(window: DayWindow, recorded: Iterable[date]) -> list[date]:
    """The days a dbt build must replace: the run's own window plus every day a cross-day change left stale
    (recorded in `stale_mart_days`), so the marts equal a full rebuild after the run."""
    return sorted(set(window.days()) | set(recorded))


def dbt_vars_for_days(days: Iterable[date]) -> dict[str, Any]:
    """`--vars` selecting exactly these days: the half-open hull as `min_date`/`max_date` (what the models
    filter on, and what DuckDB prunes by), plus the `days` list only when the set has gaps."""
    wanted = sorted(set(days))
    if not wanted:
        raise ValueError("a dbt build needs at least one day")
    hull = DayWindow(wanted[0], wanted[-1] + timedelta(days=1))
    if len(hull.days()) == len(wanted):
        return hull.dbt_vars()
    return {**hull.dbt_vars(), "days": [d.isoformat() for d in wanted]}


def partition_start_date() -> date:
    return daily_partitions.start.date()


PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def window_from_tags(tags: Mapping[str, str]) -> DayWindow | None:
    """The days a run covers, from its tags (one partition or an inclusive key range); None if unpartitioned."""
    if PARTITION_TAG in tags:
        return DayWindow.for_day(tags[PARTITION_TAG])
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        last = date.fromisoformat(tags[RANGE_END_TAG])
        return DayWindow(date.fromisoformat(tags[RANGE_START_TAG]), last + timedelta(days=1))
    return None


def contiguous_windows(days: Iterable[date]) -> list[DayWindow]:
    """The fewest half-open windows covering exactly these days (one run per window, not one per day)."""
    windows: list[DayWindow] = []
    for day in sorted(set(days)):
        if windows and windows[-1].end == day:
            windows[-1] = DayWindow(windows[-1].start, day + timedelta(days=1))
        else:
            windows.append(DayWindow.for_day(day))
    return windows
