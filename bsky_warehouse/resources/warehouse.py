"""The DuckDB warehouse: one file, one way to open it, one writer at a time.

DuckDB admits a single writer process per file, and even read-only opens fail while another process holds
it. Every opener therefore takes an exclusive `flock` on `<db>.lock` first, for the few seconds it needs,
so a parallel backfill queues instead of failing with "Could not set lock on file". dbt runs under the same
lock. Slow network work (Perspective, LLMs) never holds it: it checkpoints outside the database and merges in
short transactions.

The same resource opens a DuckLake instead when a catalog is set (ducklake.py): writers then take turns on the
catalog's PostgreSQL advisory lock, which holds across machines, and readers open it with no lock at all.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from dagster import ConfigurableResource
from pydantic import Field

from bsky_warehouse import ducklake, settings
from bsky_warehouse.schema import COLUMNS_ADDED, TABLES
from bsky_warehouse.settings import WAREHOUSE_CATALOG, WAREHOUSE_DATA_PATH, WAREHOUSE_DB

if TYPE_CHECKING:
    import pandas as pd

# The name and the one default live in settings.py; dbt gets the same file from settings.dbt_env.
DB_ENV = WAREHOUSE_DB.name

# Opening the file (~60 ms) and checkpointing it on close cost more than a tiny day's cleaning; a lease keeps one
# connection across days, but gives the writer's turn back after this long so other writers still get theirs.
LEASE_MAX_HOLD_S = 5.0


def default_db_path() -> str:
    """The one setting both Dagster and dbt read for the warehouse file."""
    return str(WAREHOUSE_DB.get())


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One DuckDB transaction: committed when the block ends, rolled back on any exception, so a replacement
    (delete the old rows, insert the new) is all or nothing."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    try:
        con.execute("COMMIT")
    except BaseException:
        # A commit that fails (a DuckLake write conflict) has already ended the transaction; a ROLLBACK then
        # fails too, and must not hide the commit's own error.
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether `schema.table` is in the warehouse (dbt marts exist only once dbt has built them)."""
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $s AND table_name = $t",
            {"s": schema, "t": table},
        ).fetchall()[0][0]
    )


class WarehouseLockTimeout(RuntimeError):
    pass


class WarehouseNotFound(FileNotFoundError):
    """A command that only reads was pointed at a warehouse file that does not exist."""


_local = threading.local()


def wait_for_turn(
    try_take: Callable[[], bool],
    timeout_s: float,
    busy: Callable[[], Exception],
    on_wait: Callable[[], None] | None = None,
    max_poll_s: float = 0.5,
) -> None:
    """Call `try_take()` until it returns True, with backoff up to `timeout_s`; `busy()` is raised when the wait
    runs out, `on_wait()` called once when it begins."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while not try_take():
        if time.monotonic() >= deadline:
            raise busy()
        if on_wait is not None and delay == 0.01:
            on_wait()
        time.sleep(delay)
        delay = min(delay * 2, max_poll_s)


@contextmanager
def file_lock(
    lock_path: Path,
    timeout_s: float,
    busy: Callable[[], Exception],
    on_wait: Callable[[], None] | None = None,
    max_poll_s: float = 0.5,
) -> Iterator[None]:
    """An exclusive `flock` on `lock_path` (a killed holder releases it), waited for as `wait_for_turn` waits.
    The lock file stays: removing it would let two processes lock different files."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)

    def try_take() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        wait_for_turn(try_take, timeout_s, busy, on_wait, max_poll_s)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def catalog_lock(lake: ducklake.LakeSettings, timeout_s: float, busy: Callable[[], Exception]) -> Iterator[None]:
    """The writers' turn on a DuckLake, as a PostgreSQL advisory lock in the catalog database: held by one session
    on any machine, and released by PostgreSQL when the holder's connection ends (a killed writer frees it, as a
    killed holder of the file's `flock` does). Waited for as `wait_for_turn` waits.

    DuckLake itself would let writers commit at once, but the cleaning's cross-day rules read other days' rows
    (a uri already cleaned on an earlier day is a duplicate): two such transactions at once, each blind to the
    other's uncommitted rows, would both keep a uri. Writes therefore take turns, as on the file, while everything
    outside a write (parsing, scoring, the network) runs in parallel, and readers take no turn at all.
    """
    import psycopg

    key = (ducklake.WRITER_LOCK_KEY,)
    with psycopg.connect(lake.conninfo, autocommit=True) as session:
        wait_for_turn(lambda: session.execute("SELECT pg_try_advisory_lock(%s)", key).fetchone()[0], timeout_s, busy)
        try:
            yield
        finally:
            session.execute("SELECT pg_advisory_unlock(%s)", key)


@contextmanager
def exclusive_lock(lock_path: Path, timeout_s: float, lake: ducklake.LakeSettings | None = None) -> Iterator[None]:
    """The warehouse writer's lock, re-entrant within a thread so nested helpers cannot deadlock: the `flock` on
    `lock_path` for the file, the catalog's advisory lock for a DuckLake (it holds across machines)."""
    held: dict[str, int] = getattr(_local, "held", None) or {}
    _local.held = held
    key = str(lock_path.resolve()) if lake is None else lake.catalog
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return

    def busy() -> Exception:
        where = lock_path if lake is None else f"of the DuckLake catalog {lake.catalog}"
        return WarehouseLockTimeout(f"waited {timeout_s:.0f}s for the warehouse lock {where}; another process holds it")

    turn = file_lock(lock_path, timeout_s, busy) if lake is None else catalog_lock(lake, timeout_s, busy)
    with turn:
        held[key] = 1
        try:
            yield
        finally:
            held[key] = 0


class WarehouseResource(ConfigurableResource):
    """The warehouse shared by the assets, the checks, dbt and the CLI: the DuckDB file, or a DuckLake when a
    catalog is set (ducklake.py); `path` then places only the local staging (checkpoints, archive spool) and the
    logs."""

    path: str = Field(default_factory=default_db_path, description="DuckDB file (env BSKY_WAREHOUSE_DB).")
    catalog: str = Field(
        default_factory=lambda: WAREHOUSE_CATALOG.get(),
        description="DuckLake catalog, `postgres:<connection string>` (env BSKY_WAREHOUSE_CATALOG); empty: the file.",
    )
    data_path: str = Field(
        default_factory=lambda: WAREHOUSE_DATA_PATH.get(),
        description="DuckLake data path for its Parquet files (env BSKY_WAREHOUSE_DATA_PATH).",
    )
    lock_timeout_s: float = Field(default=1800.0, description="How long a writer waits for its turn.")
    memory_limit: str = Field(
        default="768MB", description="DuckDB memory limit; larger days spill to disk instead of growing RSS."
    )

    @property
    def db_path(self) -> Path:
        return Path(self.path).expanduser().resolve()

    @property
    def lake(self) -> ducklake.LakeSettings | None:
        """The DuckLake this warehouse is, or None for the DuckDB file."""
        if not self.catalog.strip():
            return None
        return WAREHOUSE_CATALOG.get_as(
            lambda catalog: ducklake.LakeSettings(catalog, self.data_path), {WAREHOUSE_CATALOG.name: self.catalog}
        )

    @property
    def location(self) -> str:
        """Where the rows are, as a user would name it (the file, or the lake's catalog and data path)."""
        lake = self.lake
        return str(self.db_path) if lake is None else f"DuckLake {lake.catalog} (data {lake.data_path})"

    def dbt_env(self) -> dict[str, str]:
        """The environment of a dbt process building this warehouse (profiles.yml picks its target from it)."""
        env = {k: v for k, v in settings.dbt_env(self.db_path).items() if k not in ducklake.DBT_ENV_NAMES}
        lake = self.lake
        return env if lake is None else {**env, **ducklake.dbt_env(lake)}

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        lake = self.lake
        if lake is not None:
            return ducklake.connect(lake, read_only=read_only)
        return duckdb.connect(str(self.db_path), read_only=read_only)

    @property
    def lock_path(self) -> Path:
        return self.db_path.with_name(self.db_path.name + ".lock")

    @property
    def staging_dir(self) -> Path:
        """Checkpoints of slow, paid work, beside the database file (see checkpoint.py)."""
        return self.db_path.with_name(self.db_path.name + ".staging")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Take the writer's turn without opening the file (dbt opens it itself)."""
        with exclusive_lock(self.lock_path, self.lock_timeout_s, self.lake):
            yield

    @contextmanager
    def read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open an existing warehouse for reading; a missing file is an error, never created.

        A file is opened under the writer lock (DuckDB refuses a reader while another process writes); a DuckLake
        reader takes no lock at all: it reads the last committed snapshot while writers go on.
        """
        with ExitStack() as stack:
            if self.lake is None:
                if not self.db_path.is_file():
                    raise WarehouseNotFound(
                        f"no warehouse at {self.db_path}: set {DB_ENV} to your DuckDB file, or run `make demo` to "
                        "build one"
                    )
                stack.enter_context(self.lock())
            con = self._open(read_only=True)
            try:
                con.execute("SET TimeZone = 'UTC'")
                yield con
            finally:
                con.close()

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the warehouse under the lock, with every table created; closes before releasing."""
        lake = self.lake
        with self.lock():
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            con = self._open(read_only=False)
            try:
                con.execute("SET TimeZone = 'UTC'")
                con.execute(f"SET memory_limit = '{self.memory_limit}'")
                con.execute("SET preserve_insertion_order = false")
                for ddl in (*TABLES.values(), *COLUMNS_ADDED):
                    con.execute(ddl if lake is None else ducklake.lake_ddl(ddl))
                yield con
            finally:
                con.close()

    @contextmanager
    def lease(self, max_hold_s: float = LEASE_MAX_HOLD_S) -> Iterator[ConnectionLease]:
        """One connection shared by a window's days: opening the file costs more than a tiny day's work."""
        held = ConnectionLease(self, max_hold_s)
        try:
            yield held
        finally:
            held.release()


class ConnectionLease:
    """A `WarehouseResource.connect()` kept open across calls, closed and reopened once held `max_hold_s`.

    The writer lock is held while the connection is open, so work that may be slow (a scorer, the network)
    must `release()` first; the next `connection()` opens the file again.
    """

    def __init__(self, warehouse: WarehouseResource, max_hold_s: float) -> None:
        self._warehouse = warehouse
        self._max_hold_s = max_hold_s
        self._stack: ExitStack | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._opened_at = 0.0

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The open connection, or a fresh one when none is open or this one has held the lock long enough.

        Call it between transactions only: a reopen closes the connection it gave out before.
        """
        if self._con is not None and time.monotonic() - self._opened_at >= self._max_hold_s:
            self.release()
        if self._con is None:
            stack = ExitStack()
            self._con = stack.enter_context(self._warehouse.connect())
            self._stack = stack
            self._opened_at = time.monotonic()
        return self._con

    def release(self) -> None:
        """Close the connection and give the writer lock back (a no-op when none is open)."""
        stack, self._stack, self._con = self._stack, None, None
        if stack is not None:
            stack.close()


# Python rows into DuckDB: the one way, so that every writer matches columns by name and none leaves a frame
# registered behind it.

_INSERT_FRAME = "insert_rows_frame"


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> Iterator[str]:
    """`frame` readable from SQL as `name` for the block (to insert from, or to join or filter against), then
    unregistered however the block ends, so no later statement reads a stale frame under that name.

    After an error DuckDB refuses every statement of the aborted transaction, the unregister included; that
    refusal is swallowed so the block's own error is the one raised. A frame registered inside the transaction
    goes with its rollback; register outside a transaction only around a whole `transaction(...)` block.
    """
    con.register(name, frame)
    try:
        yield name
    finally:
        with suppress(duckdb.Error):
            con.unregister(name)


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> int:
    """Append `rows` (dicts, or a frame) to `table`, matching columns BY NAME, and return how many went in.

    By name, a frame whose columns come in another order than the table's cannot land in the wrong columns; a
    table column the rows lack takes its default (NULL), and a column the table lacks is an error, not dropped.
    No rows insert nothing: a list of no dicts has no columns to match.
    """
    import pandas as pd

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
    if len(frame) == 0:
        return 0
    with registered(con, _INSERT_FRAME, frame):
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {_INSERT_FRAME}")
    return len(frame)
