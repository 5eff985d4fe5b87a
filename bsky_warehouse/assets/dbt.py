"""The dbt project as Dagster assets on the same daily partitions; dbt tests become asset checks.

The daily marts are incremental: a build replaces only the days it is given. Besides the run's own window it
is given every day recorded in `stale_mart_days` (rows of that day changed in another day's run: a delete
purging an earlier day's post, a take-over, a uri changing owner; see cross_day.py), and clears them once the
build succeeded. A recorded day whose raw posts are not all cleaned yet (another run is between its ingest and
its cleaning) waits: rebuilt now, its marts would count that run's posts as unaccounted and fail the build, so
it stays recorded for a later build. The days rebuilt outside the run's partition range get their own
materialization events, so Dagster shows those mart partitions as rebuilt by this run.

Models tagged `global` in dbt (the marts over the whole history: agreement, author profiles, the audits) are
one unpartitioned asset, `dbt_global_models`, not a day's partition: in a run it is the step after the daily
models it reads, so a run or a single-run backfill builds it once, over whatever the days left.

The window reaches dbt as environment variables of its one process (BSKY_DBT_MIN_DATE, BSKY_DBT_MAX_DATE,
BSKY_DBT_DAYS; macros/in_window.sql), not as `--vars`: a change of vars throws away dbt's whole partial-parse
cache (a full parse of the project per invocation), while the macros read the environment only when a model
runs, so one saved parse serves every window. That parse is kept per warehouse file (`parse_cache`): dbt also
discards it when the database path changes.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetMaterialization, BackfillPolicy, Output
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from bsky_warehouse import cross_day
from bsky_warehouse.audit import AUDIT_MARTS
from bsky_warehouse.ducklake import DBT_ENV_NAMES
from bsky_warehouse.partitions import DBT_WINDOW_ENV, DayWindow, daily_partitions, dbt_env_for_days, rebuild_days
from bsky_warehouse.project import DBT_ENV, DBT_MANIFEST, DBT_PROJECT_DIR, dbt_executable
from bsky_warehouse.resources.warehouse import DB_ENV, WarehouseResource

PARTIAL_PARSE_FILE = "partial_parse.msgpack"


class WarehouseDbtTranslator(DagsterDbtTranslator):
    """Models keyed by their name alone (as the tables are), grouped by folder (staging, marts)."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        if dbt_resource_props.get("resource_type") == "source":
            return super().get_asset_key(dbt_resource_props)
        return AssetKey([dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props.get("resource_type") == "seed":
            return "dbt_seeds"
        fqn = dbt_resource_props.get("fqn", [])
        return f"dbt_{fqn[1]}" if len(fqn) > 2 else "dbt"


class WarehouseDbtCliResource(DbtCliResource):
    """DbtCliResource without the dbt adapter it loads in this process before every invocation.

    dagster-dbt loads the project and profile into a dbt Core adapter (measured: about 2 s of CPU per invocation
    here, two invocations per daily run) only so that `fetch_row_counts` and `fetch_column_metadata` can query
    the built relations; the warehouse uses neither (the dbt process does all the work), and dagster-dbt runs
    without an adapter when it has none."""

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return None


def dbt_resource() -> DbtCliResource:
    return WarehouseDbtCliResource(
        project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
    )


def dbt_build_env(window: DayWindow, extra_days: Iterable[date] = ()) -> dict[str, str]:
    """The environment of a partition's `dbt build`: the run's window widened by `extra_days` (the days a
    cross-day change left stale)."""
    return dbt_env_for_days(rebuild_days(window, extra_days))


AUTHOR_MODELS = "tag:authors"
GLOBAL_MODELS = "tag:global"
REBUILT_DAYS = "cross_day_days_rebuilt"


def incremental_models(manifest: Mapping[str, Any]) -> set[str]:
    """The models that replace only the days they are given (the ones a stale day must be rebuilt in)."""
    return {
        node["name"]
        for node in manifest.get("nodes", {}).values()
        if node.get("resource_type") == "model" and node.get("config", {}).get("materialized") == "incremental"
    }


def clears_stale_days(selected: Collection[str], incremental: Collection[str]) -> bool:
    """A build may forget the stale days only if it rebuilt them in every incremental mart; a build of a
    subset leaves them recorded for the next full one."""
    return set(incremental) <= set(selected)


@dbt_assets(
    manifest=DBT_MANIFEST,
    exclude=f"{AUTHOR_MODELS} {GLOBAL_MODELS}",
    partitions_def=daily_partitions,
    dagster_dbt_translator=WarehouseDbtTranslator(),
    backfill_policy=BackfillPolicy.single_run(),
    pool="duckdb",
)
def dbt_models(context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource) -> Iterator[Any]:
    # A single-run backfill hands us a range of partitions: use the whole window, never one key.
    window = DayWindow.from_time_window(context.partition_time_window)
    # The writer lock is held from reading the stale days to clearing them: no change can slip in between.
    with warehouse.lock():
        with warehouse.connect() as con:
            stale = cross_day.stale_days(con)
            outside = [day for day in stale if not window.start <= day < window.end]
            waiting = cross_day.unsettled(con, outside)
        if waiting:
            context.log.info(f"left stale until their cleaning is done: {[str(d) for d in waiting]}")
        stale = [day for day in stale if day not in waiting]
        extra = [day for day in outside if day not in waiting]
        if extra:
            context.log.info(f"also rebuilding days changed by other days' runs: {[str(d) for d in extra]}")
        built: list[AssetKey] = []
        for event in _build(context, dbt, warehouse, ["build"], dbt_build_env(window, stale)):
            if isinstance(event, Output):
                built.append(context.asset_key_for_output(event.output_name))
                event = event.with_metadata({**event.metadata, REBUILT_DAYS: [d.isoformat() for d in extra]})
            yield event
        selected = {key.to_user_string() for key in context.selected_asset_keys}
        if stale and clears_stale_days(selected, incremental_models(json.loads(DBT_MANIFEST.read_text()))):
            with warehouse.connect() as con:
                cross_day.clear(con, stale)
    yield from rebuilt_materializations(built, extra, window)


def rebuilt_materializations(keys: list[AssetKey], days: list[date], window: DayWindow) -> Iterator[Any]:
    """One materialization per model and extra day: the partition was rebuilt by this run, outside its range."""
    for day in days:
        for key in keys:
            yield AssetMaterialization(
                asset_key=key,
                partition=day.isoformat(),
                description=f"rebuilt with the run for {window.start}..{window.days()[-1]}: its inputs changed",
                metadata={"rebuilt_with_window": [str(window.start), str(window.end)]},
            )


def _build(
    context: AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    args: list[str],
    window_env: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """dbt against the warehouse file, under the writer lock, with a private target dir per invocation.

    `window_env` (no window: the full range) is set only while the dbt process starts: DbtCliResource.cli
    copies os.environ into the process it starts and takes no environment of its own.
    """
    os.environ[DB_ENV] = str(warehouse.db_path)
    os.environ.update(DBT_ENV)
    window = {name: (window_env or {}).get(name) for name in DBT_WINDOW_ENV.values()}
    target_env = warehouse.dbt_env()
    window.update({name: target_env.get(name) for name in DBT_ENV_NAMES})
    with warehouse.lock(), tempfile.TemporaryDirectory(prefix="dbt-target-") as target:
        cache = parse_cache(warehouse)
        restore_parse_state(cache, Path(target))
        with environ(window):
            invocation = dbt.cli(args, context=context, target_path=Path(target))
        try:
            yield from invocation.stream()
        finally:
            stop_process(invocation.process)
        if invocation.process.returncode in (0, 1):
            save_parse_state(Path(target), cache)


def parse_cache(warehouse: WarehouseResource) -> Path:
    """dbt's partial-parse state for this warehouse file, beside it.

    dbt discards its saved parse when the profile's connection changes, and the database path is part of it: the
    project's own state (target/, parsed by `prepare`) serves only the default path, and any other file cost a
    full parse of the project on every invocation (~7 s of a 2-core machine). Kept per file, only a file's first
    invocation parses in full. dbt itself checks the saved state against the project's files and its version.
    """
    return warehouse.staging_dir / "dbt" / PARTIAL_PARSE_FILE


def restore_parse_state(cache: Path, target: Path) -> None:
    """Seed an invocation's target dir with the file's saved parse (DbtCliResource copies the project's only
    into a target dir that has none)."""
    if cache.exists():
        shutil.copyfile(cache, target / PARTIAL_PARSE_FILE)


def save_parse_state(target: Path, cache: Path) -> None:
    """Keep the parse of a dbt process that ended on its own (0: passed, 1: failures; a killed one may have left a
    partial file), replaced atomically: a reader never sees half a file."""
    produced = target / PARTIAL_PARSE_FILE
    if not produced.exists():
        return
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    shutil.copyfile(produced, partial)
    os.replace(partial, cache)


@contextlib.contextmanager
def environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """os.environ with these variables set (None: unset) for the block, then as it was."""
    saved = {name: os.environ.get(name) for name in values}

    def apply(pairs: Mapping[str, str | None]) -> None:
        for name, value in pairs.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    apply(values)
    try:
        yield
    finally:
        apply(saved)


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """End a dbt process that outlived its stream (the step failed mid-run): it holds the DuckDB file, so it must
    be gone before the writer lock is released, or the next writer fails on DuckDB's own lock."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dbt_assets(
    manifest=DBT_MANIFEST,
    select=AUTHOR_MODELS,
    name="dbt_author_models",
    dagster_dbt_translator=WarehouseDbtTranslator(),
    pool="duckdb",
)
def dbt_author_models(
    context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """The author scan report: whole histories, so not partitioned by day; rebuilt after each scan."""
    yield from _build(context, dbt, warehouse, ["build"])


@dbt_assets(
    manifest=DBT_MANIFEST,
    select=GLOBAL_MODELS,
    exclude=AUTHOR_MODELS,
    name="dbt_global_models",
    dagster_dbt_translator=WarehouseDbtTranslator(),
    pool="duckdb",
)
def dbt_global_models(
    context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """The marts over the whole history: one unpartitioned asset (a day's partition of them would mean
    nothing), built after the daily models it reads, once per run whatever the run's days."""
    yield from _build(context, dbt, warehouse, ["build"])


@dataclass(frozen=True)
class AuditWhatIf:
    """One system's flagging threshold changed, every other setting as configured: built beside the shared audit
    marts as `marts.<model>__whatif_<system>_<threshold>`, so no later build can revert it and the shared marts
    never hold it."""

    system: str
    threshold: float

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"an audit threshold must be in [0, 1], got {self.threshold}")

    @property
    def suffix(self) -> str:
        return "whatif_" + _slug(self.system) + "_" + _slug(f"{self.threshold:g}")

    def relation(self, model: str) -> str:
        """The table (in schema marts) holding this what-if's version of an audit model."""
        return f"{model}__{self.suffix}"

    def dbt_vars(self) -> dict[str, Any]:
        return {"audit_whatif": {"system": self.system, "threshold": self.threshold, "suffix": self.suffix}}


def _slug(text: str) -> str:
    return re.sub("[^a-z0-9]+", "_", text.lower()).strip("_")


def build_audit_whatif(
    warehouse: WarehouseResource, whatif: AuditWhatIf, dbt_vars: Mapping[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """`dbt run` of the audit models under the what-if's names, under the writer lock, outside Dagster: a
    what-if is no materialization of the shared audit marts (`dbt_vars`: further vars, e.g. in tests)."""
    env = {name: value for name, value in warehouse.dbt_env().items() if name not in DBT_WINDOW_ENV.values()}
    with warehouse.lock(), tempfile.TemporaryDirectory(prefix="dbt-whatif-") as target:
        proc = subprocess.run(
            [dbt_executable(), "run", "--select", *AUDIT_MARTS, "--vars", json.dumps({**(dbt_vars or {}),
             **whatif.dbt_vars()}), "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
             "--target-path", target, "--log-path", target],
            env=env, cwd=DBT_PROJECT_DIR, capture_output=True, text=True,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"the what-if audit build failed:\n{proc.stdout[-3000:]}")
    return proc
