"""Running the warehouse job over a window of days, in process (the CLI and the tests use this)."""

from __future__ import annotations

import sys
from typing import Any

from dagster import AssetCheckKey, AssetKey, AssetMaterialization, DagsterInstance, JobDefinition
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.snap import snapshot_from_execution_plan
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from bsky_warehouse.partitions import RANGE_END_TAG, RANGE_START_TAG, DayWindow
from bsky_warehouse.resources.bluesky import ArchiveSource
from bsky_warehouse.resources.warehouse import WarehouseResource
from bsky_warehouse.run_summary import COUNT_KEYS

# The code location `make ui` and the daemon load (`-m bsky_warehouse.definitions`), and Dagster's name for the
# repository of a Definitions object. A run launched from the UI carries their label as a tag and their names in
# its origin: the UI lists a job's runs (its Runs tab) by the tag, places them on the Overview timeline and
# re-executes them by the origin, so runs started here carry both.
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
    result = execute_located_run(
        job,
        instance,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}, **(run_config or {})},
        tags={RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()},
        raise_on_error=raise_on_error,
        asset_selection=keys,
        asset_check_selection=job_checks if checks else set(),
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
    result = execute_located_run(
        job,
        instance,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}, **(run_config or {})},
        partition_key=partition_key,
        raise_on_error=raise_on_error,
    )
    return summarize_run(result)


def job_origin(job_name: str) -> RemoteJobOrigin:
    """The origin a run of `job_name` has when the webserver or daemon launches it from the project's code location.

    Only the location's and repository's names identify it to the UI, which finds the job in its own workspace by
    them (to re-execute a run, or to place it on the Overview timeline).
    """
    target = LoadableTargetOrigin(executable_path=sys.executable, module_name=CODE_LOCATION)
    location = ManagedGrpcPythonEnvCodeLocationOrigin(loadable_target_origin=target, location_name=CODE_LOCATION)
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), job_name)


def execute_located_run(
    job: JobDefinition,
    instance: DagsterInstance,
    run_config: dict[str, Any],
    tags: dict[str, str] | None = None,
    raise_on_error: bool = True,
    partition_key: str | None = None,
    asset_selection: set[AssetKey] | None = None,
    asset_check_selection: set[AssetCheckKey] | None = None,
) -> JobExecutionResult:
    """Execute `job` in this process, as `execute_in_process` does, but as a run recorded with its code location.

    `execute_in_process` records a run without an origin, which the UI cannot re-execute ("Re-execute" fails) or
    place on the Overview timeline. This creates the run as a launched run is created (its origin, its asset and
    check selection, so a re-execution rebuilds the same steps) and executes it in process with the job's resources.
    """
    ephemeral = job.as_ephemeral_job(resource_defs={}, input_values={})
    selected = list(asset_selection) if asset_selection is not None else None
    run_tags = merge_run_tags(ephemeral, partition_key, {**REPOSITORY_TAGS, **(tags or {})}, selected, instance,
                              run_config)  # fmt: skip
    subset = InMemoryJob(ephemeral)
    if asset_selection is not None:
        subset = subset.get_subset(asset_selection=asset_selection, asset_check_selection=asset_check_selection)
    plan = create_execution_plan(
        subset, run_config=run_config, instance_ref=instance.get_ref() if instance.is_persistent else None,
        tags=run_tags,
    )  # fmt: skip
    definition = subset.get_definition()
    run = instance.create_run(
        job_name=job.name,
        run_id=None,
        run_config=run_config,
        status=None,
        tags=run_tags,
        root_run_id=None,
        parent_run_id=None,
        step_keys_to_execute=plan.step_keys_to_execute,
        execution_plan_snapshot=snapshot_from_execution_plan(plan, definition.get_job_snapshot_id()),
        job_snapshot=definition.get_job_snapshot(),
        parent_job_snapshot=definition.get_parent_job_snapshot(),
        asset_selection=frozenset(asset_selection) if asset_selection is not None else None,
        asset_check_selection=frozenset(asset_check_selection) if asset_check_selection is not None else None,
        resolved_op_selection=None,
        op_selection=None,
        remote_job_origin=job_origin(job.name),
        job_code_origin=None,
        asset_graph=definition.asset_layer.asset_graph,
    )
    return execute_run(InMemoryJob(ephemeral), run, instance, raise_on_error=raise_on_error)


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
