"""On a DuckLake, a backfill split into three concurrent multiprocess Dagster runs, with the writer pool raised,
holds what one sequential run of the same days holds in a DuckDB file; a reader process queries the marts
throughout and never waits for a lock or fails on one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import date

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import REPO_ROOT, SAMPLE_DIR
from bsky_warehouse.records import PROB_COLUMNS
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.backfills import PIPELINE_ASSETS, dagster_home, launch
from tests.processes import wait_for_all

pytestmark = [pytest.mark.integration, pytest.mark.ducklake]

RANGES = [("2024-03-10", "2024-03-12"), ("2024-03-13", "2024-03-14"), ("2024-03-15", "2024-03-16")]
_PROBS = ", ".join(f"round({c}, 9) AS {c}" for c in PROB_COLUMNS)
TABLES = {
    "raw_posts": "SELECT * EXCLUDE (ingested_at) FROM raw_posts ORDER BY ALL",
    "post_deletions": "SELECT * FROM post_deletions ORDER BY ALL",
    "rejected_records": "SELECT * EXCLUDE (ingested_at) FROM rejected_records ORDER BY ALL",
    "cleaned_posts": "SELECT * EXCLUDE (ingested_at) FROM cleaned_posts ORDER BY ALL",
    "toxicity_scores": f"""SELECT uri, scorer, status, reason, partition_date, {_PROBS}
                           FROM toxicity_scores ORDER BY ALL""",
    "daily_post_counts": "SELECT * FROM marts.daily_post_counts ORDER BY ALL",
    "pipeline_coverage": "SELECT * FROM marts.pipeline_coverage ORDER BY ALL",
    "daily_toxicity_summary": """SELECT day, scorer, attribute, posts_scored, posts_failed, posts_skipped, n, sample,
                                        round(n_represented, 6), round(mean, 9), round(median, 9), round(p90, 9),
                                        round(share_ge_0_5, 9)
                                 FROM marts.daily_toxicity_summary ORDER BY ALL""",
}

# Queries the marts until told to stop; a missing mart (before the first dbt build) is waited for, any other
# error is recorded. Prints what it saw as JSON.
READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from bsky_warehouse.resources.warehouse import WarehouseResource
    stop = Path(sys.argv[1])
    seen = {"queries": 0, "with_marts": 0, "errors": [], "max_wait_s": 0.0}
    while not stop.exists():
        started = time.monotonic()
        try:
            with WarehouseResource().read_only() as con:
                days = con.execute("SELECT count(*) FROM marts.daily_post_counts").fetchall()[0][0]
                con.execute("SELECT sum(raw_posts) FROM marts.pipeline_coverage").fetchall()
            seen["with_marts"] += 1
        except Exception as err:
            if "does not exist" not in str(err):
                seen["errors"].append(str(err)[:300])
        seen["queries"] += 1
        seen["max_wait_s"] = max(seen["max_wait_s"], time.monotonic() - started)
        time.sleep(0.2)
    print(json.dumps(seen))
    """
)


def snapshot(warehouse: WarehouseResource) -> dict[str, list[tuple]]:
    with warehouse.read_only() as con:
        return {name: con.execute(sql).fetchall() for name, sql in TABLES.items()}


def test_three_concurrent_runs_on_a_ducklake_equal_one_sequential_run_and_never_block_a_reader(
    tmp_path, lake, monkeypatch
):
    home = dagster_home(tmp_path, writer_limit=len(RANGES))
    env = {**os.environ, "DAGSTER_HOME": str(home), "BSKY_WAREHOUSE_DB": str(tmp_path / "lake-local" / "wh.duckdb")}
    stop = tmp_path / "stop-reader"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(stop)], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    runs = [launch(first, last, SAMPLE_DIR, env) for first, last in RANGES]
    outputs = wait_for_all(runs)
    time.sleep(1.0)  # a last read after every run ended
    stop.touch()
    seen = json.loads(reader.communicate(timeout=120)[0])
    for proc, out in zip(runs, outputs, strict=True):
        assert proc.returncode == 0, out[:3000] + "\n...\n" + out[-3000:]
        assert "multiprocess" in out.lower()
    history = DagsterInstance.from_config(str(home))
    try:
        statuses = [run.status for run in history.get_runs(RunsFilter())]
    finally:
        history.dispose()
    assert statuses == [DagsterRunStatus.SUCCESS] * len(RANGES)

    assert seen["errors"] == [], seen["errors"][:3]
    assert seen["with_marts"] > 0, seen  # it read the marts while the runs were still writing them
    lake_rows = snapshot(WarehouseResource(path=env["BSKY_WAREHOUSE_DB"]))

    # The reference: the same days as one run, in a DuckDB file.
    monkeypatch.delenv("BSKY_WAREHOUSE_CATALOG")
    monkeypatch.delenv("BSKY_WAREHOUSE_DATA_PATH")
    file_db = str(tmp_path / "sequential.duckdb")
    window = DayWindow(date.fromisoformat(RANGES[0][0]), date.fromisoformat("2024-03-17"))
    result = run_window(
        window,
        DagsterInstance.ephemeral(),
        db_path=file_db,
        archive_dir=str(SAMPLE_DIR),
        assets=PIPELINE_ASSETS,
        checks=False,
    )
    assert result["success"], result["failures"]
    file_rows = snapshot(WarehouseResource(path=file_db))
    assert len(file_rows["daily_post_counts"]) == 7
    for name in TABLES:
        assert lake_rows[name] == file_rows[name], name
