"""Running the warehouse job over a window of days, in process (the CLI and the tests use this)."""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, AssetMaterialization, DagsterInstance
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from bsky_warehouse.partitions import RANGE_END_TAG, RANGE_START_TAG, DayWindow
from bsky_warehouse.resources.bluesky import ArchiveSource
from bsky_warehouse.resources.warehouse import WarehouseResource
from bsky_warehouse.run_summary import COUNT_KEYS

# The code location `make ui` and the daemon load (`-m bsky_warehouse.definitions`), and Dagster's name for the
# repository of a Definitions object. A run launched from the UI carries their label as a tag; the UI lists a
# job's runs (its Runs tab, the Overview timeline) by that tag, so runs started here carry it too.
CODE_LOCATION = "bsky_warehouse.definitions"
REPOSITORY_TAGS = {REPOSITORY_LABEL_TAG: f"{SINGLETON_REPOSITORY_NAME}@{CODE_LOCATION}"}

# Assets that only run when asked for by name: labeling needs a configured LLM (or an import file), feed
# snapshots need the network.
NEEDS_CONFIGURATION = {"llm_labels", "feed_snapshots"}


def run_window(
    window: DayWindow,
    instance: DagsterInstance,
    db_path: str | None = None,
    archive_dir: str | None = None,
    run_config: dict[str, Any] | None = None,
    assets: list[str] | None = None,
    resources: dict[str, Any] | None = None,
    raise_on_error: bool = True,
    log_level: str = "INFO",
    checks: bool = True,
) -> dict[str, Any]:
    """One run materializes the selected assets (default: the daily job's, but NEEDS_CONFIGURATION) for every day
    of the window.

    Every asset accepts a partition range, so a window is one run, as a single-run backfill would be.
    Returns what was materialized and every asset-check evaluation. `checks=False` leaves the asset checks (GX
    suites, dbt tests) out of the run, for tests that exercise many runs and check the data themselves.
    """
    from bsky_warehouse.definitions import build_definitions

    overrides: dict[str, Any] = dict(resources or {})
    if db_path:
        overrides["warehouse"] = WarehouseResource(path=db_path)
    if archive_dir:
        overrides["archive"] = ArchiveSource(directory=archive_dir)
    defs = build_definitions(**overrides)
    job = defs.resolve_job_def("warehouse_daily")
    if assets is None:
        assets = sorted(
            key.to_user_string()
            for key in job.asset_layer.selected_asset_keys
            if key.to_user_string() not in NEEDS_CONFIGURATION
        )
    days = window.days()
    keys = {AssetKey(name) for name in assets} if assets else set(job.asset_layer.selected_asset_keys)
    # The checks of the selected assets that the job itself holds: a plain `asset_selection` would also pull in
    # checks the job leaves out on purpose (the freshness checks, which judge the clock, not the run).
    job_checks = {key for key in job.asset_layer.asset_graph.asset_check_keys if key.asset_key in keys}
    job = job.get_subset(asset_selection=keys, asset_check_selection=job_checks if checks else set())
    result = job.execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}, **(run_config or {})},
        tags={**REPOSITORY_TAGS, RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()},
        raise_on_error=raise_on_error,
    )
    return {**summarize_run(result), "window": [str(window.start), str(window.end)]}


def run_job(
    job_name: str,
    instance: DagsterInstance,
    db_path: str | None = None,
    run_config: dict[str, Any] | None = None,
    resources: dict[str, Any] | None = None,
    partition_key: str | None = None,
    raise_on_error: bool = True,
    log_level: str = "INFO",
) -> dict[str, Any]:
    """One run of a job of the definitions (an author scan, a rater calibration), recorded in the instance."""
    from bsky_warehouse.definitions import build_definitions

    overrides: dict[str, Any] = dict(resources or {})
    if db_path:
        overrides["warehouse"] = WarehouseResource(path=db_path)
    job = build_definitions(**overrides).resolve_job_def(job_name)
    result = job.execute_in_process(
        instance=instance,
        partition_key=partition_key,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}, **(run_config or {})},
        tags=REPOSITORY_TAGS,
        raise_on_error=raise_on_error,
    )
    return summarize_run(result)


def run_author_scan(scan_key: str, instance: DagsterInstance, **kwargs: Any) -> dict[str, Any]:
    """Add the author's partition (if new) and run the scan job for it: posts, scores, the dbt report."""
    from bsky_warehouse.assets.authors import author_partitions

    if not instance.has_dynamic_partition(author_partitions.name, scan_key):
        instance.add_dynamic_partitions(author_partitions.name, [scan_key])
    return {**run_job("author_scan", instance, partition_key=scan_key, **kwargs), "author": scan_key}


def run_calibration_job(config: dict[str, Any], instance: DagsterInstance, **kwargs: Any) -> dict[str, Any]:
    """Fit one rater's calibration (CalibrationConfig fields in `config`) as a run of `rater_calibration`."""
    run_config = {"ops": {"rater_calibrations": {"config": config}}}
    return {**run_job("rater_calibration", instance, run_config=run_config, **kwargs), "calibration": config}


def summarize_run(result: Any) -> dict[str, Any]:
    """What a run materialized, which steps it skipped and every asset-check evaluation."""
    events = result.get_asset_materialization_events()
    materialized = sorted({e.asset_key.to_user_string() for e in events})
    checks = [
        {
            "asset": evaluation.asset_key.to_user_string(),
            "check": evaluation.check_name,
            "passed": evaluation.passed,
            "severity": evaluation.severity.value,
        }
        for evaluation in result.get_asset_check_evaluations()
    ]
    skipped = sorted(
        {
            event.step_key
            for event in result.all_events
            if event.event_type_value == "STEP_SKIPPED" and event.step_key is not None
        }
    )
    failures = [
        f"{event.step_key}: {root_cause(event.step_failure_data.error)}"
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error
    ]
    return {
        "run_id": result.run_id,
        "success": result.success,
        "assets_materialized": materialized,
        "steps_skipped": skipped,
        "checks": checks,
        "failures": failures,
        "materializations": [
            [event.asset_key.to_user_string(), counting_metadata(event.step_materialization_data.materialization)]
            for event in events
        ],
    }


def counting_metadata(materialization: AssetMaterialization) -> dict[str, Any]:
    """The counts of one materialization (see run_summary.COUNT_KEYS), as plain values."""
    metadata = materialization.metadata
    return {key: getattr(metadata[key], "value", metadata[key]) for key in COUNT_KEYS if key in metadata}


def root_cause(error: Any) -> str:
    """The innermost error of Dagster's wrapped chain: the exception our code raised, with its message."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return str(error.message).strip()
