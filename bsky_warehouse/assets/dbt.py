"""The dbt project as Dagster assets on the same daily partitions; dbt tests become asset checks.

The daily marts are incremental: a build replaces only the days it is given. Besides the run's own window it
is given every day recorded in `stale_mart_days` (rows of that day changed in another day's run: a delete
purging an earlier day's post, a take-over, a uri changing owner; see cross_day.py), and clears them once the
build succeeded. The days rebuilt outside the run's partition range get their own materialization events, so
Dagster shows those mart partitions as rebuilt by this run.
"""

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetMaterialization, BackfillPolicy, Config, Output
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets
from pydantic import Field

from bsky_warehouse import cross_day
from bsky_warehouse.partitions import DayWindow, daily_partitions, dbt_vars_for_days, rebuild_days
from bsky_warehouse.project import DBT_ENV, DBT_MANIFEST, DBT_PROJECT_DIR, dbt_executable
from bsky_warehouse.resources.warehouse import DB_ENV, WarehouseResource


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


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
    )


class DbtBuildConfig(Config):
    audit_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Per-system flagging thresholds for audit_by_topic, e.g. {'scorer:perspective': 0.7}; "
        "replaces the project's audit_thresholds var for this run (others use audit_threshold).",
    )


def dbt_build_args(
    window: DayWindow, audit_thresholds: Mapping[str, float] | None = None, extra_days: Iterable[date] = ()
) -> list[str]:
    """`dbt build` restricted by Dagster's selection, with the partition window widened by `extra_days` (and
    any per-system audit thresholds) as `--vars`."""
    dbt_vars: dict[str, Any] = dbt_vars_for_days(rebuild_days(window, extra_days))
    if audit_thresholds:
        bad = {system: t for system, t in audit_thresholds.items() if not 0 <= t <= 1}
        if bad:
            raise ValueError(f"audit thresholds must be in [0, 1], got {bad}")
        dbt_vars["audit_thresholds"] = dict(sorted(audit_thresholds.items()))
    return ["build", "--vars", json.dumps(dbt_vars)]


AUTHOR_MODELS = "tag:authors"
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
    exclude=AUTHOR_MODELS,
    partitions_def=daily_partitions,
    dagster_dbt_translator=WarehouseDbtTranslator(),
    backfill_policy=BackfillPolicy.single_run(),
    pool="duckdb",
)
def dbt_models(
    context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource, config: DbtBuildConfig
) -> Iterator[Any]:
    # A single-run backfill hands us a range of partitions: use the whole window, never one key.
    window = DayWindow.from_time_window(context.partition_time_window)
    # The writer lock is held from reading the stale days to clearing them: no change can slip in between.
    with warehouse.lock():
        with warehouse.connect() as con:
            stale = cross_day.stale_days(con)
        extra = [day for day in stale if not window.start <= day < window.end]
        if extra:
            context.log.info(f"also rebuilding days changed by other days' runs: {[str(d) for d in extra]}")
        built: list[AssetKey] = []
        for event in _build(context, dbt, warehouse, dbt_build_args(window, config.audit_thresholds, stale)):
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
    context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource, args: list[str]
) -> Iterator[Any]:
    """dbt against the warehouse file, under the writer lock, with a private target dir per invocation."""
    os.environ[DB_ENV] = str(warehouse.db_path)
    os.environ.update(DBT_ENV)
    with warehouse.lock(), tempfile.TemporaryDirectory(prefix="dbt-target-") as target:
        invocation = dbt.cli(args, context=context, target_path=Path(target))
        try:
            yield from invocation.stream()
        finally:
            stop_process(invocation.process)


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
