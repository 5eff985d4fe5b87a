"""Loading one day of parsed events into `raw_posts`, `post_deletions` and `rejected_records`.

The day is replaced atomically per source: staged in temp tables, then delete + insert in one transaction,
so a re-run gives the same rows and a crash leaves the previous state. Duplicate and updated events collapse
to the latest record per uri in SQL, keeping Python memory flat however large the day is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import duckdb

from bsky_warehouse.cross_day import record_deletion_changes
from bsky_warehouse.events import Outcome, printable_raw
from bsky_warehouse.resources.warehouse import insert_rows, transaction
from bsky_warehouse.schema import POST_DERIVED_TABLES

CHUNK = 50_000


@dataclass
class IngestStats:
    """Every line read for the day, accounted for: `lines` are the day's own, `undated` the lines with no
    readable time and the file-level faults (seen by every day's run, counted here but owned by none).
    `rejected` and `ignored` count both; `undated_rejected` is the undated share of `rejected`, so a run over
    several days can count those once."""

    lines: int = 0
    undated: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    undated_by_kind: Counter[str] = field(default_factory=Counter)
    undated_rejected: Counter[str] = field(default_factory=Counter)
    post_events: int = 0
    posts: int = 0
    duplicate_events: int = 0
    deletes: int = 0
    purged_downstream: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)

    def metadata(self) -> dict[str, Any]:
        return {
            "lines_read": self.lines,
            "undated_lines": self.undated,
            "lines_by_outcome": dict(sorted(self.by_kind.items())),
            "undated_lines_by_outcome": dict(sorted(self.undated_by_kind.items())),
            "post_events": self.post_events,
            "posts": self.posts,
            "duplicate_or_updated_events": self.duplicate_events,
            "deletes": self.deletes,
            "purged_downstream_rows": self.purged_downstream,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "ignored_by_rule": dict(sorted(self.ignored.items())),
        }


_STAGE_DDL = (
    """CREATE OR REPLACE TEMP TABLE stage_posts AS
       SELECT * EXCLUDE (source, ingested_at, partition_date), 0::BIGINT AS time_us FROM raw_posts LIMIT 0""",
    "CREATE OR REPLACE TEMP TABLE stage_deletions (uri VARCHAR, deleted_at TIMESTAMPTZ, time_us BIGINT)",
    """CREATE OR REPLACE TEMP TABLE stage_rejects (
         raw VARCHAR, reason VARCHAR, file VARCHAR, line_no BIGINT, partition_date DATE)""",
)


def _flush(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    """Write a chunk's buffered rows and empty the buffer, so memory stays bounded by CHUNK rows."""
    insert_rows(con, table, rows)
    rows.clear()


def create_stage_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Empty temp staging tables for one day (the archive index fills the same ones from its spool)."""
    for ddl in _STAGE_DDL:
        con.execute(ddl)


def stage_lines(con: duckdb.DuckDBPyConnection, lines: Iterable[tuple[str, int, bytes, Outcome]]) -> IngestStats:
    """Parse outcomes into temp staging tables, in chunks."""
    create_stage_tables(con)
    stats = IngestStats()
    posts: list[dict[str, Any]] = []
    deletes: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for file, line_no, raw, outcome in lines:
        if outcome.day is None:
            stats.undated += 1
            stats.undated_by_kind[outcome.kind] += 1
            if outcome.kind == "reject":
                stats.undated_rejected[outcome.reason or "unknown"] += 1
        else:
            stats.lines += 1
            stats.by_kind[outcome.kind] += 1
        if outcome.kind == "post":
            assert outcome.row is not None
            posts.append({**outcome.row, "time_us": outcome.time_us})
            stats.post_events += 1
        elif outcome.kind == "delete":
            assert outcome.row is not None
            deletes.append({**outcome.row, "time_us": outcome.time_us})
        elif outcome.kind == "reject":
            rejects.append(
                {
                    "raw": printable_raw(raw),
                    "reason": outcome.reason,
                    "file": file,
                    "line_no": line_no,
                    "partition_date": outcome.day,
                }
            )
            stats.rejected[outcome.reason or "unknown"] += 1
        else:
            stats.ignored[outcome.reason or "unknown"] += 1
        if len(posts) >= CHUNK:
            _flush(con, "stage_posts", posts)
        if len(rejects) >= CHUNK:
            _flush(con, "stage_rejects", rejects)
    _flush(con, "stage_posts", posts)
    _flush(con, "stage_deletions", deletes)
    _flush(con, "stage_rejects", rejects)
    return stats


def replace_day(
    con: duckdb.DuckDBPyConnection, day: date, source: str, stats: IngestStats, now: datetime | None = None
) -> IngestStats:
    """Swap the staged day into the warehouse in one transaction; honour the day's deletes downstream."""
    now = now or datetime.now(UTC)
    key = {"day": day, "source": source}
    params = {**key, "now": now}
    with transaction(con):
        record_deletion_changes(con, day, source)  # other days' marts that these deletes change (cross_day.py)
        con.execute("DELETE FROM raw_posts WHERE partition_date = $day AND source = $source", key)
        con.execute(
            """INSERT INTO raw_posts BY NAME
               SELECT * EXCLUDE (time_us), $source AS source, $now AS ingested_at, $day AS partition_date
               FROM stage_posts
               QUALIFY row_number() OVER (PARTITION BY uri ORDER BY time_us DESC, cid DESC NULLS LAST) = 1""",
            params,
        )
        con.execute("DELETE FROM post_deletions WHERE partition_date = $day AND source = $source", key)
        con.execute(
            """INSERT INTO post_deletions BY NAME
               SELECT uri, min(deleted_at) AS deleted_at, $source AS source, $day AS partition_date
               FROM stage_deletions GROUP BY uri""",
            key,
        )
        # Dated rejects belong to their day; undated ones (no readable time) are keyed by file and line.
        con.execute(
            """DELETE FROM rejected_records WHERE source = $source AND (partition_date = $day OR
                 (partition_date IS NULL AND (file, line_no) IN
                    (SELECT file, line_no FROM stage_rejects WHERE partition_date IS NULL)))""",
            key,
        )
        con.execute(
            """INSERT INTO rejected_records BY NAME
               SELECT raw, reason, file, line_no, partition_date, $source AS source, $now AS ingested_at
               FROM stage_rejects""",
            {"source": source, "now": now},
        )
        purged = 0
        for table in POST_DERIVED_TABLES:
            purged += con.execute(f"DELETE FROM {table} WHERE uri IN (SELECT uri FROM stage_deletions)").fetchall()[0][
                0
            ]
    counts = con.execute(
        "SELECT count(*), (SELECT count(DISTINCT uri) FROM stage_deletions) FROM raw_posts "
        "WHERE partition_date = $day AND source = $source",
        key,
    ).fetchall()[0]
    stats.posts, stats.deletes = counts
    stats.duplicate_events = stats.post_events - stats.posts
    stats.purged_downstream = purged
    return stats
