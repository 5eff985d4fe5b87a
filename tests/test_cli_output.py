"""What a shell user sees: every option explained, and a `materialize` that ends in a short table of counts with
dbt's log in a file, not hundreds of lines of log and no warnings on stderr (issues #13, #19)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from bsky_warehouse.cli import build_parser
from bsky_warehouse.project import REPO_ROOT, SAMPLE_DIR


def _actions(parser: argparse.ArgumentParser, path: str = "bsky-warehouse"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_and_argument_has_help():
    missing = [f"{path} {'/'.join(a.option_strings) or a.dest}" for path, a in _actions(build_parser()) if not a.help]
    assert missing == []


def _materialize(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BSKY_WAREHOUSE_START_DATE")}
    env.update(BSKY_WAREHOUSE_DB=str(tmp_path / "wh.duckdb"), DAGSTER_HOME=str(tmp_path / "home"))
    return subprocess.run(
        [sys.executable, "-m", "bsky_warehouse.cli", "materialize", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip


def test_sample_planned_needs_the_perspective_scorer(tmp_path):
    proc = _materialize(tmp_path, "--start", "2024-03-13", "--sample", "planned")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --sample planned applies to --scorer perspective only (run `perspective plan` first)"
    ]
    assert not (tmp_path / "wh.duckdb").exists()


@pytest.mark.integration
def test_materialize_prints_a_short_table_of_counts_and_logs_dbt_to_a_file(tmp_path):
    proc = _materialize(tmp_path, "--start", "2024-03-13", "--archive", str(SAMPLE_DIR))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) < 40, proc.stdout
    assert lines[0].startswith("succeeded: 2024-03-13 .. 2024-03-13 (1 day)")
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.split()[0] in ("raw_posts", "cleaned_posts")}
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        raw = con.execute("SELECT count(*) FROM raw_posts").fetchall()[0][0]
        cleaned = con.execute("SELECT count(*) FROM cleaned_posts").fetchall()[0][0]
        rejected = con.execute("SELECT count(*) FROM rejected_records").fetchall()[0][0]
    finally:
        con.close()
    assert int(rows["raw_posts"][2].replace(",", "")) == raw > 0
    assert int(rows["cleaned_posts"][2].replace(",", "")) == cleaned > 0
    rejected_line = next(line for line in lines if line.startswith("rejected_records"))
    assert int(rejected_line.split()[3]) == rejected
    assert any(line.startswith("dbt: ") and "models built" in line for line in lines)
    assert any(line.startswith("checks: ") and line.endswith(" 0 failed") for line in lines)
    log = Path(lines[-1].split("dbt log: ")[1].split(";")[0])
    assert log.is_file() and "Running with dbt" in log.read_text()
    # The first dbt process of a new warehouse file parses the project in full; the run's next one reuses its parse.
    first, second = log.read_text().split("Running with dbt")[1:]
    assert "Unable to do partial parsing" in first and "Unable to do partial parsing" not in second, second[:2000]
    assert "Running with dbt" not in proc.stdout
    for noise in ("Warning", "Traceback", "nanobind", "Telemetry"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    assert (tmp_path / "home" / "dagster.yaml").read_text() == (REPO_ROOT / "dagster.yaml").read_text()
