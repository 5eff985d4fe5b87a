"""`bsky-warehouse status` as a shell user runs it, and the incidents it reports, recorded by the real sensors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context

from bsky_warehouse.assets.operations import (
    freshness_deadline_cron,
    record_failed_runs,
    resolve_incidents_on_success,
)
from bsky_warehouse.incidents import incidents_for_run
from bsky_warehouse.partitions import RANGE_END_TAG, RANGE_START_TAG, DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import REPO_ROOT, SAMPLE_DIR
from bsky_warehouse.resources.warehouse import WarehouseResource
from bsky_warehouse.status import window_days

INGEST = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts", "toxicity_scores"]
MARTS = ["stg_raw_posts", "stg_rejected_records", "stg_post_deletions", "stg_cleaned_posts", "stg_toxicity_scores",
         "stg_llm_labels", "daily_post_counts", "pipeline_coverage"]  # fmt: skip


def status_cli(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    # A run history that does not exist yet: status reads it only where one is, and never creates it.
    env = {**os.environ, "BSKY_WAREHOUSE_DB": db, "DAGSTER_HOME": str(Path(db).parent / "no_history")}
    command = [sys.executable, "-m", "bsky_warehouse.cli", "status", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_window_days_end_at_as_of_and_start_no_earlier_than_the_first_partition():
    assert window_days(date(2024, 3, 12), 3, date(2024, 3, 1)) == [date(2024, 3, d) for d in (10, 11, 12)]
    assert window_days(date(2024, 3, 9), 5, date(2024, 3, 8)) == [date(2024, 3, 8), date(2024, 3, 9)]
    with pytest.raises(ValueError, match="at least 1"):
        window_days(date(2024, 3, 9), 0, date(2024, 3, 8))


def test_freshness_deadline_is_an_hour_of_the_day():
    assert freshness_deadline_cron(6) == "0 6 * * *"
    with pytest.raises(ValueError, match="0-23"):
        freshness_deadline_cron(24)


def test_an_incident_per_failed_step_with_the_runs_days():
    tags = {RANGE_START_TAG: "2024-03-10", RANGE_END_TAG: "2024-03-12"}
    at = datetime(2024, 3, 13, tzinfo=UTC)
    incidents = incidents_for_run("r1", "warehouse_daily", tags, [("a", " boom "), ("b", "x" * 5000)], at)
    assert [(i.step_key, i.range_start, i.range_end) for i in incidents] == [
        ("a", date(2024, 3, 10), date(2024, 3, 12)),
        ("b", date(2024, 3, 10), date(2024, 3, 12)),
    ]
    assert incidents[0].error == "boom" and len(incidents[1].error) == 2000
    (whole,) = incidents_for_run("r2", "author_scan", {}, [], at)
    assert whole.step_key is None and whole.range_start is None and "before any step" in whole.error


def test_no_warehouse_is_a_clear_error_and_nothing_is_created(tmp_path):
    db = tmp_path / "absent" / "wh.duckdb"
    proc = status_cli(str(db))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no warehouse at") and "BSKY_WAREHOUSE_DB" in proc.stderr
    assert "Traceback" not in proc.stderr and not db.exists() and not db.parent.exists()


@pytest.mark.integration
def test_status_reports_a_missing_day_and_a_failed_run_until_it_is_fixed(tmp_path):
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    kwargs = {"db_path": db, "archive_dir": str(SAMPLE_DIR), "log_level": "WARNING"}
    for day in ("2024-03-10", "2024-03-11", "2024-03-13"):  # the 12th is never run
        assert run_window(DayWindow.for_day(day), instance, assets=[*INGEST, *MARTS], **kwargs)["success"]

    complete = status_cli(db, "--as-of", "2024-03-11", "--days", "2")
    assert complete.returncode == 0, complete.stdout + complete.stderr
    assert complete.stdout.strip().endswith("OK")

    gap = status_cli(db, "--as-of", "2024-03-13", "--days", "4", "--json")
    assert gap.returncode == 1, gap.stderr
    report = json.loads(gap.stdout)
    by_table = {t["table"]: t for t in report["tables"]}
    assert by_table["raw_posts"] == {"table": "raw_posts", "last_day": "2024-03-13", "missing_days": ["2024-03-12"]}
    assert by_table["marts.daily_post_counts"]["missing_days"] == []  # no raw posts that day: nothing to count
    assert report["healthy"] is False and report["open_incidents"] == []

    # A run that fails (Perspective with no key) is recorded by the real failure sensor, then closed by the
    # success sensor once the same job succeeds over that day.
    failed = run_window(
        DayWindow.for_day("2024-03-11"), instance, assets=["toxicity_scores"], raise_on_error=False,
        run_config={"ops": {"toxicity_scores": {"config": {"scorer": "perspective"}}}}, **kwargs,
    )  # fmt: skip
    assert not failed["success"]
    warehouse = WarehouseResource(path=db)
    evaluate_run_sensor(record_failed_runs, instance, failed["run_id"], DagsterEventType.RUN_FAILURE, warehouse)
    evaluate_run_sensor(record_failed_runs, instance, failed["run_id"], DagsterEventType.RUN_FAILURE, warehouse)
    with warehouse.read_only() as con:
        rows = con.execute(
            "SELECT job_name, range_start, range_end, step_key, error FROM pipeline_incidents"
        ).fetchall()
    assert len(rows) == 1  # evaluated twice, recorded once
    assert rows[0][:4] == ("warehouse_daily", date(2024, 3, 11), date(2024, 3, 11), "toxicity_scores")
    assert "PERSPECTIVE_API_KEY" in rows[0][4] or "key" in rows[0][4].lower()

    incident = json.loads(status_cli(db, "--as-of", "2024-03-11", "--days", "2", "--json").stdout)
    assert [i["run_id"] for i in incident["open_incidents"]] == [failed["run_id"]]

    fixed = run_window(DayWindow.for_day("2024-03-11"), instance, assets=["toxicity_scores"], **kwargs)
    evaluate_run_sensor(
        resolve_incidents_on_success, instance, fixed["run_id"], DagsterEventType.RUN_SUCCESS, warehouse
    )
    after = status_cli(db, "--as-of", "2024-03-11", "--days", "2", "--json")
    assert after.returncode == 0, after.stdout
    con = duckdb.connect(db, read_only=True)
    assert con.execute("SELECT resolved_by_run_id FROM pipeline_incidents").fetchall() == [(fixed["run_id"],)]
    con.close()


def evaluate_run_sensor(sensor, instance, run_id, event_type, warehouse) -> None:
    """Call a run-status sensor with the run's real status event from the instance, as the daemon would."""
    run = instance.get_run_by_id(run_id)
    (entry,) = [e for e in instance.all_logs(run_id, of_type=event_type)]
    context = build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=entry.dagster_event, dagster_instance=instance, dagster_run=run,
        resources={"warehouse": warehouse},
    )  # fmt: skip
    if event_type == DagsterEventType.RUN_FAILURE:
        context = context.for_run_failure()
    sensor(context)


@pytest.mark.integration
def test_a_day_that_was_run_and_brought_no_posts_is_not_missing(tmp_path):
    """The sample has no post on 9 March: with the run history at hand, status knows that day was built."""
    import shutil

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.from_config(str(home))
    try:
        window = DayWindow(date(2024, 3, 8), date(2024, 3, 11))
        assert run_window(window, instance, db_path=db, archive_dir=str(SAMPLE_DIR), assets=[*INGEST, *MARTS],
                          log_level="WARNING")["success"]  # fmt: skip
    finally:
        instance.dispose()
    without_history = json.loads(status_cli(db, "--as-of", "2024-03-10", "--days", "3", "--json").stdout)
    assert {t["table"]: t["missing_days"] for t in without_history["tables"]}["raw_posts"] == ["2024-03-09"]
    env_home = {"DAGSTER_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "bsky_warehouse.cli", "status", "--as-of", "2024-03-10", "--days", "3", "--json"],
        cwd=REPO_ROOT, env={**os.environ, "BSKY_WAREHOUSE_DB": db, **env_home}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    assert {t["table"]: t["missing_days"] for t in report["tables"]}["raw_posts"] == []
    assert report["failed_checks"] == [] and proc.returncode == 0, proc.stdout + proc.stderr
