"""Running the warehouse job over a window of days, in process (the CLI and the tests use this)."""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, DagsterInstance

from bsky_warehouse.partitions import RANGE_END_TAG, RANGE_START_TAG, DayWindow
from bsky_warehouse.resources.bluesky import ArchiveSource
from bsky_warehouse.resources.warehouse import WarehouseResource


def run_window(
    window: DayWindow,
    instance: DagsterInstance,
    db_path: str | None = None,
    archive_dir: str | None = None,
    run_config: dict[str, Any] | None = None,
    assets: list[str] | None = None,
) -> dict[str, Any]:
    """One run materializes every asset for every day of the window (all assets take partition ranges)."""
    from bsky_warehouse.definitions import build_definitions

    defs = build_definitions(
        warehouse=WarehouseResource(path=db_path) if db_path else None,
        archive=ArchiveSource(directory=archive_dir) if archive_dir else None,
    )
    job = defs.resolve_job_def("warehouse_daily")
    days = window.days()
    result = job.execute_in_process(
        instance=instance,
        run_config=run_config or {},
        asset_selection=[AssetKey(name) for name in assets] if assets else None,
        tags={RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()},
    )
    materialized = sorted({e.asset_key.to_user_string() for e in result.get_asset_materialization_events()})
    return {
        "run_id": result.run_id,
        "success": result.success,
        "window": [str(window.start), str(window.end)],
        "assets_materialized": materialized,
    }
