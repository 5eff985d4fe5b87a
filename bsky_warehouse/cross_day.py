"""Cross-day changes: which other days' marts a write to one day changed, recorded durably until dbt rebuilds them.

A day's run can change rows of other days: a delete ingested today purges a post created days ago, cleaning an
earlier day takes a uri over from a later one, and a uri changing owner changes how every day holding it in
`raw_posts` accounts for it (`pipeline_coverage`). The incremental marts only replace the days dbt is told to, so
every such change records the affected days in `stale_mart_days`, inside the transaction that makes the change:
if the run dies before dbt, the record survives it and the next dbt build of any window rebuilds those days.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

import duckdb

from bsky_warehouse.schema import POST_DERIVED_TABLES

TABLE = "stale_mart_days"
CAUSE_DELETE = "delete"
CAUSE_OWNER = "owner_changed"


def record(
    con: duckdb.DuckDBPyConnection, days_sql: str, params: dict[str, Any], cause: str, changed_by: date
) -> list[date]:
    """Record the days `days_sql` (one DATE column) selects, other than `changed_by` itself (its own run
    rebuilds it, and Dagster sees that partition's new materialization); returns the days recorded."""
    # Selected, then inserted: DuckLake takes no INSERT ... RETURNING.
    days = sorted(
        row[0]
        for row in con.execute(
            f"""SELECT DISTINCT day FROM ({days_sql}) AS affected(day) WHERE day IS NOT NULL AND day <> $changed_by""",
            {**params, "changed_by": changed_by},
        ).fetchall()
    )
    if days:
        con.execute(
            f"""INSERT INTO {TABLE} BY NAME
                SELECT unnest($days::DATE[]) AS day, $cause AS cause, $changed_by AS changed_by_day,
                       now() AS recorded_at""",
            {"days": days, "cause": cause, "changed_by": changed_by},
        )
    return days


def _days_holding(uris_sql: str, tables: Iterable[str]) -> str:
    return " UNION ".join(f"SELECT partition_date FROM {table} WHERE uri IN ({uris_sql})" for table in tables)


def record_deletion_changes(con: duckdb.DuckDBPyConnection, day: date, source: str) -> list[date]:
    """Before `day`'s deletions (staged in `stage_deletions`) replace its stored ones for `source`: every day
    holding a uri whose deleted status changes (its raw posts are accounted for differently), and every day
    whose post-derived rows the purge is about to delete."""
    changed = """(SELECT uri FROM post_deletions WHERE partition_date = $day AND source = $source
                  EXCEPT SELECT uri FROM stage_deletions)
                 UNION
                 (SELECT uri FROM stage_deletions
                  EXCEPT SELECT uri FROM post_deletions WHERE partition_date = $day AND source = $source)"""
    days_sql = (
        _days_holding(changed, ["raw_posts"])
        + " UNION "
        + _days_holding("SELECT uri FROM stage_deletions", POST_DERIVED_TABLES)
    )
    return record(con, days_sql, {"day": day, "source": source}, CAUSE_DELETE, day)


def snapshot_owned(con: duckdb.DuckDBPyConnection, day: date) -> None:
    """Remember which uris `day` owns in `cleaned_posts` before it is cleaned again (for record_owner_changes)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE owned_before AS SELECT uri FROM cleaned_posts WHERE partition_date = $day",
        {"day": day},
    )


def record_take_overs(con: duckdb.DuckDBPyConnection, day: date, uris_sql: str) -> list[date]:
    """Before `day` takes the uris `uris_sql` selects over from later days: the days whose rows go with them."""
    days_sql = " UNION ".join(
        f"SELECT partition_date FROM {table} WHERE partition_date > $day AND uri IN ({uris_sql})"
        for table in POST_DERIVED_TABLES
    )
    return record(con, days_sql, {"day": day}, CAUSE_OWNER, day)


def record_owner_changes(con: duckdb.DuckDBPyConnection, day: date) -> list[date]:
    """After `day` was cleaned: every other day holding, in `raw_posts`, a uri that `day` gained or lost (that
    day now counts it as a duplicate, or as its own again)."""
    changed = """(SELECT uri FROM owned_before
                  EXCEPT SELECT uri FROM cleaned_posts WHERE partition_date = $day)
                 UNION
                 (SELECT uri FROM cleaned_posts WHERE partition_date = $day
                  EXCEPT SELECT uri FROM owned_before)"""
    return record(con, _days_holding(changed, ["raw_posts"]), {"day": day}, CAUSE_OWNER, day)


def stale_days(con: duckdb.DuckDBPyConnection) -> list[date]:
    """Every day recorded as stale and not rebuilt since."""
    return [row[0] for row in con.execute(f"SELECT DISTINCT day FROM {TABLE} ORDER BY 1").fetchall()]


def unsettled(con: duckdb.DuckDBPyConnection, days: Iterable[date]) -> list[date]:
    """Those of `days` holding a raw post that is not yet cleaned on any day nor deleted: another run is between
    ingesting and cleaning them (or stopped there). Their marts cannot be rebuilt yet without counting the run's
    posts as unaccounted, so they stay stale until a build after that run's cleaning."""
    wanted = sorted(set(days))
    if not wanted:
        return []
    rows = con.execute(
        """SELECT DISTINCT partition_date FROM raw_posts
           WHERE partition_date IN (SELECT unnest($days::DATE[]))
             AND uri NOT IN (SELECT uri FROM cleaned_posts)
             AND uri NOT IN (SELECT uri FROM post_deletions)
           ORDER BY 1""",
        {"days": wanted},
    ).fetchall()
    return [row[0] for row in rows]


def clear(con: duckdb.DuckDBPyConnection, days: Iterable[date]) -> None:
    """Forget the days a successful dbt build replaced (the caller held the writer lock throughout, so no
    change to them can have been recorded in between)."""
    wanted = sorted(set(days))
    if wanted:
        con.execute(f"DELETE FROM {TABLE} WHERE day IN (SELECT unnest($days::DATE[]))", {"days": wanted})
