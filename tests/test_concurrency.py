"""Two processes writing one DuckDB file at once queue on the warehouse lock instead of failing, and both
record their run in a run history neither found (they create it together)."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pytest
from dagster import DagsterInstance

from bsky_warehouse.project import REPO_ROOT, SAMPLE_DIR
from tests.processes import wait_for_all

pytestmark = pytest.mark.integration


def test_parallel_runs_on_one_file_never_hit_the_duckdb_lock(tmp_path):
    db = tmp_path / "wh.duckdb"
    # Every process starts on a run history that does not exist yet: they create it at once.
    env = {**os.environ, "BSKY_WAREHOUSE_DB": str(db), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bsky_warehouse.cli",
                "materialize",
                "--start",
                start,
                "--end",
                end,
                "--archive",
                str(SAMPLE_DIR),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for start, end in (("2024-03-10", "2024-03-13"), ("2024-03-13", "2024-03-17"))
    ]
    outputs = wait_for_all(procs)
    for proc, out in zip(procs, outputs, strict=True):
        # The head names the failed step and the errors parsed from dbt's log; the tail, how the run ended.
        assert proc.returncode == 0, out[:4000] + "\n...\n" + out[-2000:]
        assert "Could not set lock" not in out
    history = DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    try:
        assert len(history.get_runs()) == len(procs), "each run is in the run history both created"
    finally:
        history.dispose()
    con = duckdb.connect(str(db), read_only=True)
    days = con.execute("SELECT count(DISTINCT partition_date) FROM raw_posts").fetchall()[0][0]
    mart_days = con.execute("SELECT count(*) FROM marts.daily_post_counts").fetchall()[0][0]
    con.close()
    assert days == 7 and mart_days == 7
