"""The CLI as a shell user types it, on a DuckLake: the same commands, the lake named where the file was."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bsky_warehouse.project import REPO_ROOT, SAMPLE_DIR
from bsky_warehouse.resources.warehouse import WarehouseResource

pytestmark = [pytest.mark.integration, pytest.mark.ducklake]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bsky_warehouse.cli", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )


def test_materialize_and_status_run_unchanged_on_a_ducklake(tmp_path, lake):
    env = {**os.environ, "BSKY_WAREHOUSE_DB": str(tmp_path / "local" / "wh.duckdb"),
           "DAGSTER_HOME": str(tmp_path / "dagster_home")}  # fmt: skip
    run = cli("materialize", "--start", "2024-03-14", "--end", "2024-03-16", "--archive", str(SAMPLE_DIR), env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "succeeded: 2024-03-14 .. 2024-03-15 (2 days)" in run.stdout
    assert "checks:" in run.stdout and ", 0 failed" in run.stdout
    assert f"warehouse: DuckLake {lake.catalog} (data {lake.data_path})" in run.stdout
    # Nothing was written to a file where the lake was meant.
    assert not (tmp_path / "local" / "wh.duckdb").exists()
    with WarehouseResource(path=env["BSKY_WAREHOUSE_DB"]).read_only() as con:
        days = con.execute("SELECT day FROM marts.daily_post_counts ORDER BY 1").fetchall()
    assert [str(d) for (d,) in days] == ["2024-03-14", "2024-03-15"]

    status = cli("status", "--as-of", "2024-03-16", "--days", "2", env=env)
    assert status.returncode in (0, 1), status.stdout + status.stderr
    assert "2024-03-15" in status.stdout, status.stdout
