"""Durable per-partition checkpoints for paid, slow work (Perspective calls, LLM labels).

Results are appended to a JSONL file as each one arrives, flushed at once (so a killed process loses none of
them) and fsynced in small batches (so a crashed machine loses at most a batch). The warehouse is touched only
in two short transactions: reading what is already done, and merging the checkpoint in. A re-run reads both
and never pays again for a finished row.

Two runs of the same partition at once (a backfill launched twice, a retry beside a run that is still going)
would share the checkpoint file: the first one's discard would delete it under the second, losing what the
second paid for, and the second would pay again for what the first had done. So a run claims the partition's
checkpoint (an exclusive lock file beside it) for the whole read, work, merge and discard; a second run waits
for the first and then finds the work done, or fails after `timeout_s` naming the partition.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb

from bsky_warehouse.progress import Progress
from bsky_warehouse.records import PostText
from bsky_warehouse.resources.warehouse import file_lock, registered, transaction

FSYNC_EVERY = 64
log = logging.getLogger(__name__)


class PartitionBusy(RuntimeError):
    """Another run held the partition's checkpoint for longer than this run was willing to wait."""


@contextmanager
def claim(lock_path: Path, what: str, timeout_s: float, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the lock of one partition's paid work, waiting up to `timeout_s` for another run holding it."""

    def busy() -> Exception:
        return PartitionBusy(
            f"{what} is being worked on by another run (lock {lock_path}); waited {timeout_s:.0f}s. "
            "Let that run finish, then run this partition again: nothing it paid for is lost."
        )

    def waiting() -> None:
        log.warning("%s is being worked on by another run: waiting for it to finish", what)

    with file_lock(lock_path, timeout_s, busy, on_wait=waiting, max_poll_s=poll_s):
        yield


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("_") or "_"


def _encode(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot checkpoint {type(value).__name__}")


class Checkpoint:
    """An append-only JSONL file of finished rows for one (table, producer, partition): a day, or another
    partition key such as an author's DID."""

    def __init__(self, root: Path, table: str, producer: Iterable[str], partition: date | str) -> None:
        name = partition.isoformat() if isinstance(partition, date) else _slug(partition)
        self.path = root / table / "__".join(_slug(p) for p in producer) / f"{name}.jsonl"
        self._fh: Any = None
        self._unsynced = 0

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def rows(self) -> dict[str, dict[str, Any]]:
        """Rows already checkpointed, by uri; a torn last line (killed mid-write) is ignored."""
        if not self.path.exists():
            return {}
        done: dict[str, dict[str, Any]] = {}
        with self.path.open("rb") as fh:
            for raw in fh:
                try:
                    row = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(row, dict) and "uri" in row:
                    done[row["uri"]] = row
        return done

    def append(self, row: Mapping[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("ab")
            # A previous writer killed mid-line leaves a torn tail: start on a fresh line.
            if self._fh.tell() and not self.path.read_bytes().endswith(b"\n"):
                self._fh.write(b"\n")
        self._fh.write(json.dumps(row, default=_encode, ensure_ascii=False).encode() + b"\n")
        self._fh.flush()
        self._unsynced += 1
        if self._unsynced >= FSYNC_EVERY:
            os.fsync(self._fh.fileno())
            self._unsynced = 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        """Remove the file once its rows are merged into the warehouse."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Run in the merge's transaction once a day's rows are in: (connection, day).
DayFinish = Callable[[duckdb.DuckDBPyConnection, date], object]


def merge_partition(
    con: duckdb.DuckDBPyConnection,
    table: str,
    day: date,
    producer: Mapping[str, str],
    rows: list[dict[str, Any]],
    keep_uris_sql: str,
    finish: DayFinish | None = None,
) -> int:
    """Replace the producer's rows of `day` for the checkpointed uris, and drop rows no longer eligible.

    `producer` holds the identifying columns (e.g. scorer), which together with uri are the table's key;
    `keep_uris_sql` selects the uris still eligible for the day. `finish(con, day)` then updates the day's rows
    as a whole (e.g. what sample each belongs to), so no reader sees the merged rows without it. One short
    transaction.
    """
    where = " AND ".join(f"{column} = ${column}" for column in producer)
    params: dict[str, Any] = {**producer, "day": day}
    with transaction(con):
        if rows:
            import pandas as pd

            with registered(con, "checkpoint_frame", pd.DataFrame.from_records(rows)):
                con.execute("CREATE OR REPLACE TEMP TABLE checkpoint_rows AS SELECT * FROM checkpoint_frame")
            con.execute(
                f"DELETE FROM {table} WHERE {where} AND uri IN (SELECT uri FROM checkpoint_rows)",
                dict(producer),
            )
            con.execute(
                f"""INSERT INTO {table} BY NAME
                    SELECT * FROM checkpoint_rows WHERE uri IN ({keep_uris_sql})""",
                {"day": day},
            )
        con.execute(
            f"DELETE FROM {table} WHERE {where} AND partition_date = $day AND uri NOT IN ({keep_uris_sql})",
            params,
        )
        if finish is not None:
            finish(con, day)
    return con.execute(f"SELECT count(*) FROM {table} WHERE {where} AND partition_date = $day", params).fetchall()[0][0]


ELIGIBLE_SQL = "SELECT uri FROM cleaned_posts WHERE partition_date = $day AND passes_filters"
RETRYABLE_REASONS = ("api_error",)


def not_retryable_sql(retry_failed: bool) -> str:
    """A predicate (prefixed with AND) that leaves out failed rows worth another attempt, when retrying."""
    if not retry_failed:
        return ""
    reasons = ", ".join(f"'{reason}'" for reason in RETRYABLE_REASONS)
    return f" AND NOT (status = 'failed' AND reason IN ({reasons}))"


# A batch of days shares one read and one merge connection. Its size is bounded so that a run keeps only a few
# partitions claimed (a second run of one of them waits at most for the batch) and a few dozen lock files open.
BATCH_POSTS = 500
BATCH_DAYS = 64


def run_partition(
    warehouse: Any,
    table: str,
    day: date,
    producer: Mapping[str, str],
    version: Mapping[str, str],
    work: Any,
    retry_failed: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Do a day's paid work once: skip what the warehouse or the checkpoint already has, checkpoint the
    rest as it arrives, merge in one short transaction.

    `producer` identifies whose rows these are (with uri, the table's key); `version` columns must match for
    a stored row to count as done (a new scorer version redoes the day). `work(posts, emit)` calls
    `emit(uri, columns)` once per post. `progress`, as for run_partitions.
    """
    days = run_partitions(
        warehouse, table, [day], producer, version, lambda _, posts, emit: work(posts, emit), retry_failed, progress
    )
    return next(iter(days))[1]


@dataclass
class _ClaimedDay:
    """A day this run holds the checkpoint of, with what is left to do for it."""

    day: date
    checkpoint: Checkpoint
    eligible: int
    resumed: int
    todo: list[PostText]
    stats: Any = None


def run_partitions(
    warehouse: Any,
    table: str,
    days: Sequence[date],
    producer: Mapping[str, str],
    version: Mapping[str, str],
    work: Callable[[date, list[PostText], Callable[[str, Mapping[str, Any]], None]], Any],
    retry_failed: bool = True,
    progress: Progress | None = None,
    finish: DayFinish | None = None,
) -> Iterator[tuple[date, dict[str, Any]]]:
    """run_partition for every day of a window, yielding each day's stats in order: per day, the same checkpoint,
    claim, work and merge transaction, but the warehouse opened twice per batch of days instead of twice per day
    (opening the file costs more than a tiny day's work).

    A batch starts with a claim waited for with no connection open, then grows only by claims free at once (while
    the connection is open: the holder of a busy claim may be waiting for the writer lock to merge) and while its
    posts to do stay under BATCH_POSTS. The work runs with no connection open; a day's work failing still merges
    the days before it, so nothing they paid for waits for a re-run.

    `progress` (the step's, shared by all its days) has each claimed batch's posts to do added to its total and
    is advanced once per post emitted: posts resumed from a checkpoint or already stored are no work of this
    run. The caller closes it. `finish`, as for merge_partition, for every day merged (with work to do or not).
    """
    pending = list(days)
    while pending:
        with ExitStack() as claims:
            batch = _claim_batch(warehouse, table, pending, producer, version, retry_failed, claims)
            del pending[: len(batch)]
            if progress is not None:
                progress.add_total(sum(len(claimed.todo) for claimed in batch))
            done = 0
            try:
                for claimed in batch:
                    claimed.stats = _work_day(claimed, producer, version, work, progress)
                    done += 1
            finally:
                results = _merge_batch(warehouse, table, batch[:done], producer, finish)
        yield from results


def describe_partition(table: str, day: date, producer: Mapping[str, str]) -> str:
    """How a claim names the work it guards, in the message a waiting run fails with."""
    return f"{table} for partition {day} ({', '.join(f'{k}={v}' for k, v in producer.items())})"


def _claim_batch(
    warehouse: Any,
    table: str,
    pending: Sequence[date],
    producer: Mapping[str, str],
    version: Mapping[str, str],
    retry_failed: bool,
    claims: ExitStack,
) -> list[_ClaimedDay]:
    """Claim the next days of `pending` (at least the first) and read what each still needs, in one connection."""

    def checkpoint_of(day: date) -> Checkpoint:
        return Checkpoint(warehouse.staging_dir, table, [*producer.values(), *version.values()], day)

    first = checkpoint_of(pending[0])
    what = describe_partition(table, pending[0], producer)
    claims.enter_context(claim(first.lock_path, what, warehouse.lock_timeout_s))
    batch: list[_ClaimedDay] = []
    with warehouse.connect() as con:
        batch.append(_read_day(con, table, pending[0], producer, version, retry_failed, first))
        for day in pending[1:BATCH_DAYS]:
            if sum(len(b.todo) for b in batch) >= BATCH_POSTS:
                break
            checkpoint = checkpoint_of(day)
            try:
                claims.enter_context(claim(checkpoint.lock_path, describe_partition(table, day, producer), timeout_s=0))
            except PartitionBusy:
                break
            batch.append(_read_day(con, table, day, producer, version, retry_failed, checkpoint))
    return batch


def _read_day(
    con: duckdb.DuckDBPyConnection,
    table: str,
    day: date,
    producer: Mapping[str, str],
    version: Mapping[str, str],
    retry_failed: bool,
    checkpoint: Checkpoint,
) -> _ClaimedDay:
    """A claimed day's eligible posts not yet done, in the warehouse or in its checkpoint."""
    version_match = " AND ".join(f"{c} = ${c}" for c in (*producer, *version))
    eligible = con.execute(
        f"""SELECT uri, text, coalesce(langs, []) FROM cleaned_posts
            WHERE partition_date = $day AND passes_filters
              AND uri NOT IN (SELECT uri FROM {table} WHERE {version_match}{not_retryable_sql(retry_failed)})
            ORDER BY uri""",
        {"day": day, **producer, **version},
    ).fetchall()
    resumed = checkpoint.rows()
    todo = [PostText(uri, text, tuple(langs)) for uri, text, langs in eligible if uri not in resumed]
    return _ClaimedDay(day, checkpoint, len(eligible), len(resumed), todo)


def _work_day(
    claimed: _ClaimedDay,
    producer: Mapping[str, str],
    version: Mapping[str, str],
    work: Callable[[date, list[PostText], Callable[[str, Mapping[str, Any]], None]], Any],
    progress: Progress | None = None,
) -> Any:
    """The day's work, each result checkpointed as it arrives (and then counted, so a post counts as done
    only once it is safe); returns the work's own stats."""
    fixed = {**producer, **version, "partition_date": claimed.day}
    checkpoint = claimed.checkpoint

    def emit(uri: str, columns: Mapping[str, Any]) -> None:
        checkpoint.append({**columns, **fixed, "uri": uri})
        if progress is not None:
            progress.advance()

    with checkpoint:
        return work(claimed.day, claimed.todo, emit) if claimed.todo else None


def _merge_batch(
    warehouse: Any,
    table: str,
    batch: list[_ClaimedDay],
    producer: Mapping[str, str],
    finish: DayFinish | None = None,
) -> list[tuple[date, dict[str, Any]]]:
    """Merge each worked day's checkpoint in a transaction of its own, in one connection, then discard them."""
    if not batch:
        return []
    results = []
    with warehouse.connect() as con:
        for claimed in batch:
            rows = list(claimed.checkpoint.rows().values())
            total = merge_partition(con, table, claimed.day, producer, rows, ELIGIBLE_SQL, finish)
            by_status = dict(
                con.execute(
                    f"""SELECT status || coalesce(':' || reason, ''), count(*) FROM {table}
                        WHERE partition_date = $day AND {" AND ".join(f"{c} = ${c}" for c in producer)}
                        GROUP BY 1 ORDER BY 1""",
                    {"day": claimed.day, **producer},
                ).fetchall()
            )
            results.append(
                (
                    claimed.day,
                    {
                        "eligible_to_do": claimed.eligible,
                        "resumed_from_checkpoint": claimed.resumed,
                        "requested": len(claimed.todo),
                        "rows": total,
                        "by_status": by_status,
                        "backend_stats": claimed.stats,
                    },
                )
            )
    for claimed in batch:
        claimed.checkpoint.discard()
    return results
