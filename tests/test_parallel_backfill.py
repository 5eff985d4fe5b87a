"""A real Dagster instance backfilling 7 partitions as several concurrent runs with the multiprocess executor."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import REPO_ROOT, SAMPLE_DIR
from tests.processes import wait_for_all

pytestmark = pytest.mark.integration
ASSETS = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts", "toxicity_scores", "stg_raw_posts",
          "stg_rejected_records", "stg_post_deletions", "stg_cleaned_posts", "daily_post_counts"]  # fmt: skip
RANGES = [("2024-03-10", "2024-03-12"), ("2024-03-13", "2024-03-14"), ("2024-03-15", "2024-03-16")]


def counts(db: str) -> dict[str, list[tuple]]:
    con = duckdb.connect(db, read_only=True)
    try:
        out = {}
        for table in ("raw_posts", "cleaned_posts", "post_deletions", "rejected_records", "toxicity_scores"):
            out[table] = con.execute(
                f"SELECT partition_date::VARCHAR, count(*) FROM {table} GROUP BY 1 ORDER BY 1"
            ).fetchall()
        out["daily_post_counts"] = con.execute("SELECT * FROM marts.daily_post_counts ORDER BY day").fetchall()
        return out
    finally:
        con.close()


def test_concurrent_multiprocess_runs_all_succeed_and_equal_a_sequential_run(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    # Create the instance's storage once, as a deployment would; concurrent first starts race on its schema.
    DagsterInstance.from_config(str(home)).dispose()
    db = str(tmp_path / "parallel.duckdb")
    env = {**os.environ, "DAGSTER_HOME": str(home), "BSKY_WAREHOUSE_DB": db}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "asset",
                "materialize",
                "-m",
                "bsky_warehouse.definitions",
                "--select",
                ",".join(ASSETS),
                "--partition-range",
                f"{start}...{end}",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for start, end in RANGES
    ]
    # The same days as one sequential run in this process, while the concurrent runs go on (another file, its own
    # in-memory instance): they spend much of their time queued on the `duckdb` pool, not computing.
    sequential = str(tmp_path / "sequential.duckdb")
    window = DayWindow.for_day(RANGES[0][0])
    window = DayWindow(window.start, DayWindow.for_day(RANGES[-1][1]).end)
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(wait_for_all, procs)
        sequential_run = run_window(
            window, DagsterInstance.ephemeral(), db_path=sequential, archive_dir=str(SAMPLE_DIR), assets=ASSETS
        )
        outputs = waiting.result()
    assert sequential_run["success"]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]
        assert "Could not set lock" not in out
        assert "multiprocess" in out.lower()

    instance = DagsterInstance.from_config(str(home))
    runs = instance.get_runs(RunsFilter())
    assert len(runs) == len(RANGES)
    assert all(run.status == DagsterRunStatus.SUCCESS for run in runs)

    assert counts(db) == counts(sequential)
    assert len(counts(db)["raw_posts"]) == 7
