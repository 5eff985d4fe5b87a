"""The one daily partitioning shared by every partitioned asset and the incremental dbt models.

A post belongs to the UTC day of its `createdAt`. Windows are half-open `[start, end)` dates so a range of
partitions (a single-run backfill) and one partition are handled the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dagster import DailyPartitionsDefinition, TimeWindow

from bsky_warehouse.settings import START_DATE

START_ENV = START_DATE.name

daily_partitions = DailyPartitionsDefinition(start_date=START_DATE.get().isoformat(), timezone="UTC", fmt="%Y-%m-%d")


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

    def label(self) -> str:
        """The days as a person reads them, last day included: `2024-03-10..2024-03-12 (3 days)`."""
        n = (self.end - self.start).days
        last = self.end - timedelta(days=1)
        return f"{self.start}" if n == 1 else f"{self.start}..{last} ({n} days)"

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
    """The window selecting exactly these days: the half-open hull as `min_date`/`max_date` (what the models
    filter on, and what DuckDB prunes by), plus the `days` list only when the set has gaps. As `--vars` for a
    build by hand; Dagster's dbt step passes the same as environment variables (dbt_env_for_days)."""
    wanted = sorted(set(days))
    if not wanted:
        raise ValueError("a dbt build needs at least one day")
    hull = DayWindow(wanted[0], wanted[-1] + timedelta(days=1))
    if len(hull.days()) == len(wanted):
        return hull.dbt_vars()
    return {**hull.dbt_vars(), "days": [d.isoformat() for d in wanted]}


# The environment variables macros/in_window.sql reads the window from when no `--vars` give it.
DBT_WINDOW_ENV = {"min_date": "BSKY_DBT_MIN_DATE", "max_date": "BSKY_DBT_MAX_DATE", "days": "BSKY_DBT_DAYS"}


def dbt_env_for_days(days: Iterable[date]) -> dict[str, str]:
    """dbt_vars_for_days as the environment of one dbt process: the macros read it only when a model runs, so a
    new window costs dbt no parsing, where a changed `--vars` costs a full parse of the project."""
    window = dbt_vars_for_days(days)
    env = {DBT_WINDOW_ENV[name]: window[name] for name in ("min_date", "max_date")}
    if "days" in window:
        env[DBT_WINDOW_ENV["days"]] = ",".join(window["days"])
    return env


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
