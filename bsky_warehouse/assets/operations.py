"""Unattended operation: freshness checks on the daily data, and sensors that record failed runs as incidents.

A warehouse that runs for months under `dagster-daemon` must say loudly when a day is missing. The freshness
checks (Dagster's own time-partition checks) fail when yesterday's partition of raw posts or of the daily marts
is not there by the configured UTC hour; their sensor evaluates them (off by default, like every sensor that
launches runs). The incident sensors launch nothing, so they are on by default: every failed run of this code
location lands in `pipeline_incidents`, and a later success of the same job over the same days closes it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
    run_failure_sensor,
    run_status_sensor,
    schedule,
)

from bsky_warehouse.incidents import incidents_for_run, record_incidents, resolve_incidents
from bsky_warehouse.pipeline import root_cause
from bsky_warehouse.resources.warehouse import WarehouseResource
from bsky_warehouse.settings import DAILY_SOURCE, FRESHNESS_HOUR, SCHEDULE_CRON

# Yesterday's partition of these must exist by the deadline: the data itself and the marts researchers read.
FRESH_DAILY_ASSETS = ["raw_posts", "cleaned_posts", "daily_post_counts", "pipeline_coverage"]


def freshness_deadline_cron(hour: int) -> str:
    """The daily UTC deadline for yesterday's partition, as Dagster's freshness checks take it."""
    if not 0 <= hour <= 23:
        raise ValueError(f"{FRESHNESS_HOUR.name} must be an hour of the day, 0-23 (UTC), not {hour}")
    return f"0 {hour} * * *"


def scheduled_run_config(source: str) -> dict[str, Any]:
    """The source of the day's ingest. The steps run on the job's executor (definitions.STEP_EXECUTOR: forked from
    a server that imported the code once), which takes no run config of its own."""
    return {"ops": {"archive_ingest": {"config": {"source": source}}}}


def yesterday_request(scheduled_at: datetime, source: str) -> RunRequest:
    """The run a tick asks for: the UTC day before the tick, complete once it has ended."""
    day = (scheduled_at.astimezone(UTC) - timedelta(days=1)).date()
    return RunRequest(partition_key=day.isoformat(), run_config=scheduled_run_config(source))


def build_daily_schedule(job: Any) -> ScheduleDefinition:
    """`warehouse_yesterday_schedule`: yesterday's partition end to end, from the configured source, at the
    configured UTC time (off by default; turn it on where `dagster-daemon` runs)."""
    source = DAILY_SOURCE.get()

    @schedule(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=SCHEDULE_CRON.get(),
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Yesterday's partition end to end, from `{source}` ({DAILY_SOURCE.name}).",
    )
    def _schedule(context: ScheduleEvaluationContext) -> RunRequest:
        return yesterday_request(context.scheduled_execution_time or datetime.now(UTC), source)

    return _schedule


freshness_checks = build_time_partition_freshness_checks(
    assets=FRESH_DAILY_ASSETS,
    deadline_cron=freshness_deadline_cron(FRESHNESS_HOUR.get()),
    timezone="UTC",
)
freshness_sensor = build_sensor_for_freshness_checks(
    freshness_checks=freshness_checks, name="freshness_checks_sensor", default_status=DefaultSensorStatus.STOPPED
)


@run_failure_sensor(name="record_failed_runs", default_status=DefaultSensorStatus.RUNNING)
def record_failed_runs(context: RunFailureSensorContext, warehouse: WarehouseResource) -> None:
    """Each failed run of this code location becomes incidents: one per failed step, with its root error."""
    run = context.dagster_run
    steps = [
        (event.step_key, root_cause(event.step_failure_data.error))
        for event in context.get_step_failure_events()
        if event.step_failure_data and event.step_failure_data.error
    ]
    if not steps and context.failure_event.message:
        steps = [(None, context.failure_event.message)]
    incidents = incidents_for_run(run.run_id, run.job_name, run.tags, steps, datetime.now(UTC))
    with warehouse.connect() as con:
        record_incidents(con, incidents)
    context.log.info(f"recorded {len(incidents)} incident(s) for run {run.run_id} of {run.job_name}")


@run_status_sensor(
    name="resolve_incidents_on_success",
    run_status=DagsterRunStatus.SUCCESS,
    default_status=DefaultSensorStatus.RUNNING,
)
def resolve_incidents_on_success(context: RunStatusSensorContext, warehouse: WarehouseResource) -> None:
    """A successful run of a job closes that job's open incidents over the days it covered."""
    run = context.dagster_run
    with warehouse.connect() as con:
        closed = resolve_incidents(con, run.job_name, run.tags, run.run_id, datetime.now(UTC))
    if closed:
        context.log.info(f"run {run.run_id} of {run.job_name} closed {closed} incident(s)")
