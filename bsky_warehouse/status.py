"""What `bsky-warehouse status` reports: the last good day per daily table, the days missing from the last N,
open incidents and failed checks. Read-only: it never creates or changes a warehouse.

A day is missing for a table when the stage before it has data for that day and the table has none (raw posts:
when the day has no posts at all), unless the run history (DAGSTER_HOME) says the partition was built: a day that
was run and brought no posts is not missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import duckdb

from bsky_warehouse.resources.warehouse import table_exists

# (table, a query for the days it must cover: those of the stage before it; None: every day of the window).
STAGES: tuple[tuple[str, str | None], ...] = (
    ("raw_posts", None),
    ("cleaned_posts", "SELECT DISTINCT partition_date FROM raw_posts"),
    ("toxicity_scores", "SELECT DISTINCT partition_date FROM cleaned_posts WHERE passes_filters"),
    ("marts.daily_post_counts", "SELECT DISTINCT partition_date FROM raw_posts"),
    ("marts.pipeline_coverage", "SELECT DISTINCT partition_date FROM raw_posts"),
)
DAY_COLUMN = {"marts.daily_post_counts": "day", "marts.pipeline_coverage": "day"}


def window_days(as_of: date, days: int, first_day: date) -> list[date]:
    """The `days` days ending at `as_of` (inclusive), none before the first partition."""
    if days < 1:
        raise ValueError(f"--days must be at least 1, not {days}")
    return [d for d in (as_of - timedelta(days=i) for i in range(days - 1, -1, -1)) if d >= first_day]


@dataclass
class TableStatus:
    table: str
    last_day: date | None
    missing: list[date]

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "last_day": self.last_day.isoformat() if self.last_day else None,
            "missing_days": [d.isoformat() for d in self.missing],
        }


@dataclass
class Status:
    as_of: date
    window: list[date]
    tables: list[TableStatus]
    open_incidents: list[dict[str, Any]]
    failed_checks: list[dict[str, Any]] = field(default_factory=list)
    checks_known: bool = False

    @property
    def healthy(self) -> bool:
        return not (any(t.missing for t in self.tables) or self.open_incidents or self.failed_checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "window": [self.window[0].isoformat(), self.window[-1].isoformat()] if self.window else [],
            "healthy": self.healthy,
            "tables": [t.as_dict() for t in self.tables],
            "open_incidents": self.open_incidents,
            "failed_checks": self.failed_checks if self.checks_known else None,
        }


def _days(con: duckdb.DuckDBPyConnection, sql: str) -> set[date]:
    return {row[0] for row in con.execute(sql).fetchall() if row[0] is not None}


def table_status(
    con: duckdb.DuckDBPyConnection,
    table: str,
    upstream_sql: str | None,
    window: list[date],
    materialized: set[date] | None = None,
) -> TableStatus:
    """`materialized`: the partitions the run history says were built (a day that was run and had no posts is
    not missing); None when there is no run history to ask."""
    schema, _, name = table.rpartition(".")
    built = materialized or set()
    if not table_exists(con, schema or "main", name):
        return TableStatus(table, max(built, default=None), sorted(set(window) - built))
    present = _days(con, f"SELECT DISTINCT {DAY_COLUMN.get(table, 'partition_date')} FROM {table}") | built
    expected = set(window) if upstream_sql is None else _days(con, upstream_sql) & set(window)
    return TableStatus(table, max(present, default=None), sorted(expected - present))


def open_incidents(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    if not table_exists(con, "main", "pipeline_incidents"):
        return []
    rows = con.execute(
        """SELECT run_id, job_name, range_start::VARCHAR, range_end::VARCHAR, step_key, error, failed_at::VARCHAR
           FROM pipeline_incidents WHERE resolved_at IS NULL ORDER BY failed_at, run_id, step_key"""
    ).fetchall()
    keys = ("run_id", "job", "range_start", "range_end", "step", "error", "failed_at")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def warehouse_status(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    days: int,
    first_day: date,
    materialized: dict[str, set[date]] | None = None,
) -> Status:
    """`materialized` maps a table's asset name (its name without schema) to the partitions built, from the run
    history when there is one."""
    window = window_days(as_of, days, first_day)
    built = materialized or {}
    tables = [
        table_status(con, table, upstream, window, built.get(table.rpartition(".")[2])) for table, upstream in STAGES
    ]
    return Status(as_of, window, tables, open_incidents(con))


def materialized_partitions(instance: Any) -> dict[str, set[date]]:
    """The daily partitions the run history has materialized, per table of STAGES."""
    from dagster import AssetKey

    out = {}
    for table, _ in STAGES:
        name = table.rpartition(".")[2]
        keys = instance.get_materialized_partitions(AssetKey(name))
        out[name] = {date.fromisoformat(k) for k in keys if len(k) == 10}
    return out


def failed_checks(instance: Any, check_keys: list[Any]) -> list[dict[str, Any]]:
    """Checks whose latest evaluation in the run history failed (with the run that found it)."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    out = []
    for key, record in sorted(latest.items(), key=lambda kv: kv[0].to_user_string()):
        if record.status == AssetCheckExecutionRecordStatus.FAILED:
            out.append({"check": key.to_user_string(), "run_id": record.run_id})
    return out


def format_status(status: Status) -> str:
    """The terminal report: one line per table, then incidents and checks, then the verdict."""
    span = f"{status.window[0]} … {status.window[-1]}" if status.window else "no partition days"
    lines = [f"warehouse status as of {status.as_of} (window {span}, {len(status.window)} days)", ""]
    width = max(len(t.table) for t in status.tables)
    for t in status.tables:
        missing = ", ".join(str(d) for d in t.missing[:8]) + (" …" if len(t.missing) > 8 else "")
        lines.append(
            f"{t.table:<{width}}  last day {t.last_day or 'never'!s:<10}  "
            + (f"MISSING {len(t.missing)}: {missing}" if t.missing else "complete")
        )
    lines.append("")
    if status.open_incidents:
        lines.append(f"open incidents: {len(status.open_incidents)}")
        for i in status.open_incidents:
            days = f" {i['range_start']}…{i['range_end']}" if i["range_start"] else ""
            lines.append(f"  {i['failed_at']}  {i['job']}{days}  {i['step'] or '(run)'}: {i['error'][:160]}")
    else:
        lines.append("open incidents: none")
    if not status.checks_known:
        lines.append("failed checks: unknown (no run history in DAGSTER_HOME)")
    elif status.failed_checks:
        lines.append(f"failed checks: {len(status.failed_checks)}")
        lines += [f"  {c['check']} (run {c['run_id']})" for c in status.failed_checks]
    else:
        lines.append("failed checks: none")
    lines.append("")
    lines.append("OK" if status.healthy else "ATTENTION: days missing, incidents open or checks failing")
    return "\n".join(lines)
