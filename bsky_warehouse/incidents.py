"""Pipeline incidents: every failed run recorded in the warehouse, beside the data it failed to make.

The seed researchers lost days to cron jobs that failed silently. A run-failure sensor writes one row per failed
step (job, partition window, step, root error) into `pipeline_incidents`; a run-success sensor closes the
incidents of the same job whose days the successful run covered. `bsky-warehouse status` reads the open ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

import duckdb

from bsky_warehouse.partitions import window_from_tags
from bsky_warehouse.resources.warehouse import transaction

# A root error longer than this is cut: the full trace stays in the Dagster run, the table says what broke.
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Incident:
    run_id: str
    job_name: str
    range_start: date | None
    range_end: date | None  # inclusive, as Dagster's partition range tags are
    step_key: str | None
    error: str
    failed_at: datetime


def incidents_for_run(
    run_id: str,
    job_name: str,
    tags: Mapping[str, str],
    step_errors: Iterable[tuple[str | None, str]],
    failed_at: datetime,
) -> list[Incident]:
    """One incident per failed step (or one for the run when no step failed, e.g. a run that could not start)."""
    window = window_from_tags(tags)
    start, end = (window.start, window.days()[-1]) if window else (None, None)
    errors = list(step_errors) or [(None, "the run failed before any step did")]
    return [
        Incident(run_id, job_name, start, end, step, error.strip()[:MAX_ERROR_CHARS], failed_at)
        for step, error in errors
    ]


def record_incidents(con: duckdb.DuckDBPyConnection, incidents: list[Incident]) -> None:
    """Replace the run's incidents (a sensor tick re-evaluated for the same run records it once)."""
    run_ids = sorted({i.run_id for i in incidents})
    with transaction(con):
        for run_id in run_ids:
            con.execute("DELETE FROM pipeline_incidents WHERE run_id = $r", {"r": run_id})
        for i in incidents:
            con.execute(
                """INSERT INTO pipeline_incidents BY NAME
                   SELECT $run_id AS run_id, $job AS job_name, $start AS range_start, $end AS range_end,
                          $step AS step_key, $error AS error, $at AS failed_at,
                          NULL::VARCHAR AS resolved_by_run_id, NULL::TIMESTAMPTZ AS resolved_at""",
                {"run_id": i.run_id, "job": i.job_name, "start": i.range_start, "end": i.range_end,
                 "step": i.step_key, "error": i.error, "at": i.failed_at},
            )  # fmt: skip


def resolve_incidents(
    con: duckdb.DuckDBPyConnection, job_name: str, tags: Mapping[str, str], run_id: str, at: datetime
) -> int:
    """Close the job's open incidents that the successful run covered: every day of an incident's range is in
    the run's window (an unpartitioned incident is closed by any successful run of its job). Returns how many."""
    window = window_from_tags(tags)
    params = {"job": job_name, "run_id": run_id, "at": at}
    if window is None:
        cover = "range_start IS NULL"
    else:
        cover = "(range_start IS NULL OR (range_start >= $start AND range_end < $end))"
        params |= {"start": window.start, "end": window.end}
    with transaction(con):
        return con.execute(
            f"""UPDATE pipeline_incidents SET resolved_by_run_id = $run_id, resolved_at = $at
                WHERE job_name = $job AND resolved_at IS NULL AND failed_at < $at AND {cover}""",
            params,
        ).fetchall()[0][0]
