"""Refreshing a rater's audit: the same Dagster runs the CLI makes, so each refresh is in the run history.

The audit marts (`audit_judged_posts`, `audit_by_topic`) are dbt models of the unpartitioned asset
dbt_global_models in the daily job; a refresh materializes just those two through `pipeline.run_window`, the
function `bsky-warehouse materialize` and `demo` run the daily job with. With enough judgements it then fits
the rater's calibration through `pipeline.run_calibration_job`, as `bsky-warehouse calibrate` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bsky_warehouse.audit import AUDIT_MARTS
from bsky_warehouse.calibration import MIN_JUDGEMENTS, UNSURE
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_calibration_job, run_window
from bsky_warehouse.resources.warehouse import WarehouseResource


def refresh_audit(
    warehouse: WarehouseResource, rater: str, task: str, system: str, instance: Callable[[], Any] | None = None
) -> list[dict[str, Any]]:
    """Rebuild the audit marts, then (with at least MIN_JUDGEMENTS usable judgements) the rater's calibration;
    one summary per run, with its job name."""
    from dagster import DagsterInstance

    dagster = instance() if instance else DagsterInstance.ephemeral()
    with warehouse.read_only() as con:
        last = con.execute("SELECT max(partition_date) FROM cleaned_posts").fetchall()[0][0]
        usable = con.execute(
            "SELECT count(*) FROM human_judgements WHERE rater = $r AND task = $t AND value IS DISTINCT FROM $unsure",
            {"r": rater, "t": task, "unsure": UNSURE},
        ).fetchall()[0][0]
    if last is None:
        raise RuntimeError("the warehouse has no cleaned posts to audit")
    db = str(warehouse.db_path)
    audit_run = run_window(DayWindow.for_day(last), dagster, db_path=db, assets=list(AUDIT_MARTS),
                           raise_on_error=False, log_level="WARNING")  # fmt: skip
    runs = [{**audit_run, "job": "warehouse_daily"}]
    if audit_run["success"] and usable >= MIN_JUDGEMENTS:
        config = {"rater": rater, "task": task, "system": system, "use_embeddings": False, "embedding_model": None}
        calibration = run_calibration_job(config, dagster, db_path=db, raise_on_error=False, log_level="ERROR")
        runs.append({**calibration, "job": "rater_calibration"})
    return [{k: run[k] for k in ("job", "run_id", "success", "assets_materialized", "failures")} for run in runs]
