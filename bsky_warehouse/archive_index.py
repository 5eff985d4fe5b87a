"""The archive index: every archive file parsed once, each line routed to the day that owns it.

Without it every day's ingest parsed every file of the archive and kept only that day's lines, so a backfill of
N days cost O(N^2) in parsing. Here one pass over the files that are new or changed since the last pass (each
file fingerprinted by size, mtime and a hash of its head and tail) writes every line's outcome into a durable
per-day spool of Parquet files, `<db>.staging/archive_index/<source>-<archive>/<file_key>/<kind>/route=<day>/`,
and records the file in `archive_files`. A day's ingest then reads only its own spool (plus the undated lines,
which every day's run sees, as before).

The outcomes are those of `resources/bluesky.py: file_outcomes`, the generator the per-day path reads: the lines
DuckDB can vouch for are decided in batches by `events_sql.py` (the same outcomes, several times faster), the rest
by `events.py` line by line. The spool stores them typed as the staging tables hold them, so the rows that land are
the same.

Safety: the index is only written under the warehouse lock, and a file's row in `archive_files` is deleted
before its spool is rewritten and inserted after, so a crash leaves a file without a row (re-indexed on the next
pass, its stray spool removed) rather than a row whose spool is half there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb

from bsky_warehouse import events, events_sql
from bsky_warehouse.events import Outcome, printable_raw
from bsky_warehouse.ingest import IngestStats, create_stage_tables
from bsky_warehouse.resources import bluesky
from bsky_warehouse.resources.bluesky import (
    MAX_LINE_BYTES,
    FileFault,
    archive_files,
    display_path,
    fault_line,
    fault_outcome,
    file_runs,
    line_outcome,
)
from bsky_warehouse.resources.warehouse import WarehouseResource, insert_rows, transaction
from bsky_warehouse.schema import POST_RECORD_COLUMNS

INDEX_DIR = "archive_index"
HEAD_TAIL_BYTES = 1 << 16  # hashed from each end of a file; a file up to twice this is hashed whole
UNDATED = "undated"  # the route of lines with no trustworthy day
SPOOL_CHUNK = 50_000  # outcomes held in Python before they are written out
# Lines handed to DuckDB's fast path at once: two of DuckDB's row groups (122,880 rows each), so both cores work.
FAST_CHUNK = 245_760
SpoolKind = Literal["posts", "deletes", "rejects", "counts"]
SPOOL_KINDS: tuple[SpoolKind, ...] = ("posts", "deletes", "rejects", "counts")

# The spool tables, typed exactly as the ingest's staging tables are, with the day each row is routed to.
_SPOOL_DDL: dict[SpoolKind, str] = {
    "posts": f"CREATE TABLE posts ({POST_RECORD_COLUMNS}, time_us BIGINT, route VARCHAR NOT NULL)",
    "deletes": "CREATE TABLE deletes (uri VARCHAR, deleted_at TIMESTAMPTZ, time_us BIGINT, route VARCHAR NOT NULL)",
    "rejects": """CREATE TABLE rejects (raw VARCHAR, reason VARCHAR, file VARCHAR, line_no BIGINT,
                    partition_date DATE, route VARCHAR NOT NULL)""",
    "counts": "CREATE TABLE counts (kind VARCHAR, reason VARCHAR, n BIGINT, route VARCHAR NOT NULL)",
}

# The columns of the posts spool, in its order, from the fast path's `fast_lines`.
_POST_SPOOL_COLUMNS = (
    "uri, cid, author_did, text, created_at, langs, reply_parent_uri, reply_root_uri, embed_type, facets, labels, "
    "time_us, day::VARCHAR AS route"
)


def parser_version() -> str:
    """A digest of the code that decides outcomes: a parser change re-indexes every file, never mixes versions."""
    digest = hashlib.blake2b(digest_size=8)
    for module in (events, events_sql, bluesky):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()


def content_digest(path: Path, span: int = HEAD_TAIL_BYTES) -> tuple[int | None, int | None, str]:
    """(size, mtime_ns, digest of the head and tail, or of the whole file when it is short) without following
    what is not a regular file: a FIFO is never opened, a directory or a broken link is named for what it is."""
    try:
        info = path.stat()
    except OSError as err:
        return None, None, f"unreadable:{err.errno}"
    if not stat.S_ISREG(info.st_mode):
        return info.st_size, info.st_mtime_ns, f"not_regular:{stat.S_IFMT(info.st_mode):o}"
    digest = hashlib.blake2b(digest_size=16)
    try:
        with path.open("rb") as fh:
            head = fh.read(2 * span)
            digest.update(head)
            if len(head) == 2 * span:
                fh.seek(max(2 * span, info.st_size - span))
                digest.update(fh.read(span))
    except OSError as err:
        return info.st_size, info.st_mtime_ns, f"unreadable:{err.errno}"
    return info.st_size, info.st_mtime_ns, digest.hexdigest()


def fingerprint(size: int | None, mtime_ns: int | None, digest: str, version: str, first_day: date | None) -> str:
    """What must match for a file's indexed outcomes to still hold: its bytes (by size, mtime and content digest),
    the parser that read them and the first partition (which decides `before_first_partition`)."""
    return f"{version}:{first_day}:{size}:{mtime_ns}:{digest}"


def file_key(relative: Path) -> str:
    """A stable folder name for a file's spool, from its path bytes (names that are not UTF-8 included)."""
    return hashlib.blake2b(os.fsencode(relative), digest_size=10).hexdigest()


def route(outcome: Outcome) -> str:
    """The spool a line goes to: the day that owns it, or `undated` (read by every day's run)."""
    return UNDATED if outcome.day is None else outcome.day.isoformat()


@dataclass
class FileIndex:
    """What indexing one file found: its outcome counts and the days its lines belong to."""

    lines: int = 0
    counts: Counter[tuple[str, str, str | None]] = field(default_factory=Counter)  # (route, kind, reason)

    @property
    def days(self) -> set[date]:
        return {date.fromisoformat(r) for r, _, _ in self.counts if r != UNDATED}

    def total(self, kind: str) -> int:
        return sum(n for (_, k, _), n in self.counts.items() if k == kind)

    @property
    def undated(self) -> int:
        return sum(n for (r, _, _), n in self.counts.items() if r == UNDATED)


class _SpoolWriter:
    """Outcomes of one file into Parquet, partitioned by route; memory bounded by SPOOL_CHUNK rows."""

    def __init__(self, con: duckdb.DuckDBPyConnection, folder: Path) -> None:
        self.folder = folder
        self.con = con
        for kind, ddl in _SPOOL_DDL.items():
            con.execute(f"DROP TABLE IF EXISTS {kind}")
            con.execute(ddl)
        self.rows: dict[SpoolKind, list[dict[str, Any]]] = {"posts": [], "deletes": [], "rejects": []}
        self.chunks = 0
        self.pending = 0
        self.routes: dict[date | None, str] = {}
        self.index = FileIndex()
        self.batch_lines: list[int] = []  # the fast path's pending batch: line numbers and their text
        self.batch_texts: list[str] = []

    def add(self, file: str, line_no: int, raw: bytes, outcome: Outcome) -> None:
        where = self.routes.get(outcome.day)
        if where is None:
            where = self.routes[outcome.day] = route(outcome)
        self.index.lines += 1
        self.index.counts[(where, outcome.kind, outcome.reason)] += 1
        if outcome.kind == "post":
            assert outcome.row is not None
            self.rows["posts"].append({**outcome.row, "time_us": outcome.time_us, "route": where})
        elif outcome.kind == "delete":
            assert outcome.row is not None
            self.rows["deletes"].append({**outcome.row, "time_us": outcome.time_us, "route": where})
        elif outcome.kind == "reject":
            reject = {"raw": printable_raw(raw), "reason": outcome.reason, "file": file, "line_no": line_no}
            self.rows["rejects"].append({**reject, "partition_date": outcome.day, "route": where})
        else:
            return
        self.pending += 1
        if self.pending >= SPOOL_CHUNK:
            self.flush()

    def add_fast(self, file: str, first_day: date | None) -> None:
        """The pending batch through DuckDB's fast path (events_sql.py); the lines it leaves go to `add`."""
        line_nos, texts = self.batch_lines, self.batch_texts
        if not texts:
            return
        self.batch_lines, self.batch_texts = [], []
        result = events_sql.classify(self.con, texts, first_day)
        for pos in result.slow:
            raw = texts[pos].encode("utf-8")  # the line's own bytes: they decoded as UTF-8
            self.add(file, line_nos[pos], *line_outcome(raw, len(raw), first_day))
        routes: dict[str, Counter[str]] = {"post": Counter(), "delete": Counter()}
        for day, kind, n in self.con.execute("SELECT day, kind, count(*) FROM fast_lines GROUP BY ALL").fetchall():
            self.index.counts[(day.isoformat(), kind, "other_collection" if kind == "ignore" else None)] += n
            self.index.lines += n
            if kind in routes:
                routes[kind][day.isoformat()] += n
        if routes["post"]:
            self._copy("posts", f"SELECT {_POST_SPOOL_COLUMNS} FROM fast_lines WHERE kind = 'post'", routes["post"])
        if routes["delete"]:
            self._copy("deletes", "SELECT uri, deleted_at, time_us, day::VARCHAR AS route FROM fast_lines "
                                  "WHERE kind = 'delete'", routes["delete"])  # fmt: skip
        self.chunks += 1

    def add_line(self, file: str, line_no: int, data: bytes, length: int, first_day: date | None) -> None:
        """One line of the file: batched for the fast path when DuckDB can read it, otherwise parsed here."""
        if length <= MAX_LINE_BYTES:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                self.add_texts(file, line_no, [text], first_day)
                return
        self.add(file, line_no, *line_outcome(data, length, first_day))

    def add_texts(self, file: str, line_no: int, texts: list[str], first_day: date | None) -> None:
        """Consecutive lines from `line_no` on, each valid UTF-8 within the line limit: batched for the fast path."""
        self.batch_lines.extend(range(line_no, line_no + len(texts)))
        self.batch_texts.extend(texts)
        if len(self.batch_texts) >= FAST_CHUNK:
            self.add_fast(file, first_day)

    def _copy(self, kind: SpoolKind, rows: str | None = None, routes: Counter[str] | None = None) -> None:
        """Write a table's rows as one more Parquet file per route, then empty it; or, given `rows` (a query with
        the table's columns) and how many rows each route holds, write those. The largest route (a file's own day,
        nearly always) is written as one file: partitioning on write costs as much again as writing."""
        if rows is None and not self.con.execute(f"SELECT count(*) FROM {kind}").fetchall()[0][0]:
            return
        query = rows or f"SELECT * FROM {kind}"
        target = self.folder / kind
        rest: str | None = query
        if routes:
            [(main, _)] = routes.most_common(1)
            folder = target / f"route={main}"
            folder.mkdir(parents=True, exist_ok=True)
            where = f"route = '{main}'"  # a route is an ISO date or `undated`
            self.con.execute(f"COPY (FROM ({query}) WHERE {where}) TO "
                             f"'{(folder / f'c{self.chunks}_main.parquet').as_posix()}' (FORMAT parquet)")  # fmt: skip
            rest = f"FROM ({query}) WHERE NOT {where}" if len(routes) > 1 else None
        if rest is not None:
            self.con.execute(
                f"COPY ({rest}) TO '{target.as_posix()}' (FORMAT parquet, PARTITION_BY (route), "
                f"WRITE_PARTITION_COLUMNS true, FILENAME_PATTERN 'c{self.chunks}_{{i}}', OVERWRITE_OR_IGNORE)"
            )
        if rows is None:
            self.con.execute(f"DELETE FROM {kind}")

    def flush(self) -> None:
        for kind, rows in self.rows.items():
            if insert_rows(self.con, kind, rows):
                rows.clear()
                self._copy(kind)
        self.chunks += 1
        self.pending = 0

    def close(self) -> FileIndex:
        self.flush()
        counts = [{"route": r, "kind": k, "reason": reason, "n": n} for (r, k, reason), n in self.index.counts.items()]
        if insert_rows(self.con, "counts", counts):
            self._copy("counts")
        return self.index


def spool_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that types outcomes as the staging tables do and writes them as Parquet."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET memory_limit = '256MB'")
    con.execute("SET preserve_insertion_order = false")  # spool rows have no order; unordered writes run in parallel
    return con


def spool_file(
    con: duckdb.DuckDBPyConnection, path: Path, relative: str, folder: Path, first_day: date | None
) -> FileIndex:
    """Parse one archive file into its spool folder (replaced whole)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    writer = _SpoolWriter(con, folder)
    for line_no, run in file_runs(path):
        if isinstance(run, list):
            writer.add_texts(relative, line_no, run, first_day)
        elif isinstance(run, FileFault):
            writer.add(relative, line_no, fault_line(run), fault_outcome(run))
        else:
            writer.add_line(relative, line_no, *run, first_day)
    writer.add_fast(relative, first_day)
    return writer.close()


@dataclass
class IndexReport:
    """One pass of the index: which files it (re-)indexed or dropped, and the days whose lines changed."""

    files: int = 0
    indexed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    lines_indexed: int = 0
    days_touched: set[date] = field(default_factory=set)
    undated_touched: bool = False
    seconds: float = 0.0

    def metadata(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "files_indexed": len(self.indexed),
            "files_removed": len(self.removed),
            "files_unchanged": self.unchanged,
            "indexed": self.indexed[:100],
            "removed": self.removed[:100],
            "lines_indexed": self.lines_indexed,
            "days_touched": sorted(d.isoformat() for d in self.days_touched),
            "undated_touched": self.undated_touched,
            "seconds": round(self.seconds, 3),
        }


def changed_files(current: dict[str, str], stored: dict[str, str]) -> tuple[list[str], list[str]]:
    """(files to index: new or whose fingerprint differs, files gone since the last pass), both sorted."""
    to_index = sorted(f for f, print_ in current.items() if stored.get(f) != print_)
    return to_index, sorted(set(stored) - set(current))


@dataclass(frozen=True)
class ArchiveIndex:
    """The index of one directory of archive files for one source (`archive`, or the `jetstream` replay spool)."""

    warehouse: WarehouseResource
    directory: Path
    source: str = "archive"
    first_day: date | None = None

    @property
    def archive(self) -> str:
        return display_path(self.directory)

    @property
    def root(self) -> Path:
        tag = hashlib.blake2b(os.fsencode(self.directory), digest_size=6).hexdigest()
        return self.warehouse.staging_dir / INDEX_DIR / f"{self.source}-{tag}"

    def _stored(self, con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str, list[date]]]:
        """file -> (file_key, fingerprint, days) as the last pass recorded them."""
        rows = con.execute(
            "SELECT file, file_key, fingerprint, days FROM archive_files WHERE source = $s AND archive = $a",
            {"s": self.source, "a": self.archive},
        ).fetchall()
        return {file: (key, print_, list(days)) for file, key, print_, days in rows}

    def _drop(self, con: duckdb.DuckDBPyConnection, files: Iterable[str]) -> None:
        files = list(files)
        if files:
            with transaction(con):
                con.executemany(
                    "DELETE FROM archive_files WHERE source = $s AND archive = $a AND file = $f",
                    [{"s": self.source, "a": self.archive, "f": f} for f in files],
                )

    def _remove_orphans(self, keys: set[str]) -> None:
        """Spool folders no row names: left by a pass that crashed, or by a file since removed."""
        if self.root.is_dir():
            for folder in self.root.iterdir():
                if folder.name not in keys:
                    shutil.rmtree(folder, ignore_errors=True)

    def update(self, keep_missing: bool = False, prune: bool = False) -> IndexReport:
        """Index the files that are new or changed, drop the ones gone (unless `keep_missing`: a pruned spool's
        lines stay indexed), and with `prune` delete each file once indexed. Under the warehouse lock."""
        started = time.perf_counter()
        report = IndexReport()
        version = parser_version()
        with self.warehouse.lock(), self.warehouse.connect() as con:
            paths = {display_path(p.relative_to(self.directory)): p for p in archive_files(self.directory)}
            current = {}
            for name, path in paths.items():
                size, mtime_ns, digest = content_digest(path)
                current[name] = (size, mtime_ns, fingerprint(size, mtime_ns, digest, version, self.first_day))
            stored = self._stored(con)
            to_index, gone = changed_files({f: v[2] for f, v in current.items()}, {f: v[1] for f, v in stored.items()})
            if keep_missing:
                gone = []
            for name in gone:
                report.days_touched.update(stored[name][2])
            self._drop(con, [*to_index, *gone])
            spool_con = spool_connection() if to_index else None
            try:
                for name in to_index:
                    assert spool_con is not None
                    found = self._index_file(con, spool_con, name, paths[name], current[name], prune)
                    report.days_touched |= set(stored[name][2] if name in stored else []) | found.days
                    report.undated_touched |= found.undated > 0
                    report.lines_indexed += found.lines
            finally:
                if spool_con is not None:
                    spool_con.close()
            if prune:  # already indexed by a pass that stopped before deleting them
                for name in set(current) - set(to_index):
                    paths[name].unlink(missing_ok=True)
            rows = self._stored(con)
            self._remove_orphans({v[0] for v in rows.values()})
        report.indexed, report.removed = to_index, gone
        report.files = len(rows)
        report.unchanged = len(current) - len(to_index)
        report.seconds = time.perf_counter() - started
        return report

    def _index_file(
        self,
        con: duckdb.DuckDBPyConnection,
        spool_con: duckdb.DuckDBPyConnection,
        name: str,
        path: Path,
        current: tuple[int | None, int | None, str],
        prune: bool,
    ) -> FileIndex:
        """Spool one file, then record it: its row exists only once its spool is complete."""
        key = file_key(path.relative_to(self.directory))
        found = spool_file(spool_con, path, name, self.root / key, self.first_day)
        size, mtime_ns, print_ = current
        with transaction(con):
            con.execute(
                """INSERT INTO archive_files BY NAME SELECT $source AS source, $archive AS archive,
                     $file AS file, $key AS file_key, $size AS size, $mtime_ns AS mtime_ns,
                     $print AS fingerprint, $lines AS lines, $posts AS posts, $deletes AS deletes,
                     $rejects AS rejects, $ignored AS ignored, $undated AS undated,
                     $days::DATE[] AS days, $pruned AS pruned, $now AS indexed_at""",
                {"source": self.source, "archive": self.archive, "file": name, "key": key, "size": size,
                 "mtime_ns": mtime_ns, "print": print_, "lines": found.lines, "posts": found.total("post"),
                 "deletes": found.total("delete"), "rejects": found.total("reject"),
                 "ignored": found.total("ignore"), "undated": found.undated, "days": sorted(found.days),
                 "pruned": prune, "now": datetime.now(UTC)},
            )  # fmt: skip
        if prune:  # only once its lines are safely indexed
            path.unlink(missing_ok=True)
        return found

    def forget(self, prefix: str) -> set[date]:
        """Drop every indexed file whose path starts with `prefix` (a Jetstream day folder about to be replayed
        again); returns the days their lines belonged to."""
        with self.warehouse.lock(), self.warehouse.connect() as con:
            stored = self._stored(con)
            names = [f for f in stored if f.startswith(prefix)]
            self._drop(con, names)
            for name in names:
                shutil.rmtree(self.root / stored[name][0], ignore_errors=True)
        return {d for name in names for d in stored[name][2]}

    def spool_parts(self, con: duckdb.DuckDBPyConnection, day: date) -> dict[SpoolKind, list[str]]:
        """The Parquet files holding `day`'s lines and the undated lines, per kind (read under the lock)."""
        keys = sorted(v[0] for v in self._stored(con).values())
        return {kind: [p.as_posix() for p in _parts(self.root, keys, kind, day)] for kind in SPOOL_KINDS}

    def stage_day(self, con: duckdb.DuckDBPyConnection, day: date) -> IngestStats:
        """The day's outcomes from the spool into the staging tables `replace_day` swaps in (see stage_spool)."""
        return stage_spool(con, self.spool_parts(con, day))


def _parts(root: Path, keys: list[str], kind: SpoolKind, day: date) -> Iterator[Path]:
    for key in keys:
        for where in (day.isoformat(), UNDATED):
            folder = root / key / kind / f"route={where}"
            if folder.is_dir():
                yield from sorted(folder.glob("*.parquet"))


def _read(parts: list[str]) -> str:
    listed = ", ".join("'" + p.replace("'", "''") + "'" for p in parts)
    return f"read_parquet([{listed}], hive_partitioning = false)"


def stage_spool(con: duckdb.DuckDBPyConnection, parts: dict[SpoolKind, list[str]]) -> IngestStats:
    """Fill the staging tables from spool files and count the lines as `ingest.stage_lines` counts them."""
    create_stage_tables(con)
    for kind, table in (("posts", "stage_posts"), ("deletes", "stage_deletions"), ("rejects", "stage_rejects")):
        if parts[kind]:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * EXCLUDE (route) FROM {_read(parts[kind])}")
    stats = IngestStats()
    if parts["counts"]:
        rows = con.execute(f"SELECT route, kind, reason, sum(n) FROM {_read(parts['counts'])} GROUP BY ALL").fetchall()
        for where, kind, reason, n in rows:
            n = int(n)
            if where == UNDATED:
                stats.undated += n
                stats.undated_by_kind[kind] += n
                if kind == "reject":
                    stats.undated_rejected[reason or "unknown"] += n
            else:
                stats.lines += n
                stats.by_kind[kind] += n
            if kind == "post":
                stats.post_events += n
            elif kind == "reject":
                stats.rejected[reason or "unknown"] += n
            elif kind == "ignore":
                stats.ignored[reason or "unknown"] += n
    return stats
