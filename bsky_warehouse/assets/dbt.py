"""The dbt project as Dagster assets on the same daily partitions; dbt tests become asset checks."""

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, BackfillPolicy, Config
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets
from pydantic import Field

from bsky_warehouse.partitions import DayWindow, daily_partitions
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


def dbt_build_args(window: DayWindow, audit_thresholds: Mapping[str, float] | None = None) -> list[str]:
    """`dbt build` restricted by Dagster's selection, with the partition window (and any per-system audit
    thresholds) as `--vars`."""
    dbt_vars: dict[str, Any] = dict(window.dbt_vars())
    if audit_thresholds:
        bad = {system: t for system, t in audit_thresholds.items() if not 0 <= t <= 1}
        if bad:
            raise ValueError(f"audit thresholds must be in [0, 1], got {bad}")
        dbt_vars["audit_thresholds"] = dict(sorted(audit_thresholds.items()))
    return ["build", "--vars", json.dumps(dbt_vars)]


AUTHOR_MODELS = "tag:authors"


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
    yield from _build(context, dbt, warehouse, dbt_build_args(window, config.audit_thresholds))


def _build(
    context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource, args: list[str]
) -> Iterator[Any]:
    """dbt against the warehouse file, under the writer lock, with a private target dir per invocation."""
    os.environ[DB_ENV] = str(warehouse.db_path)
    os.environ.update(DBT_ENV)
    with warehouse.lock(), tempfile.TemporaryDirectory(prefix="dbt-target-") as target:
        yield from dbt.cli(args, context=context, target_path=Path(target)).stream()


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
