"""The marts: an incremental build day by day equals a full refresh, and figures match Python's."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date

import duckdb
import pytest
from dagster import DagsterInstance

from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import DBT_ENV, DBT_PROJECT_DIR, SAMPLE_DIR, dbt_executable
from bsky_warehouse.reference import REFERENCE_SCORER

pytestmark = pytest.mark.integration
WINDOW = DayWindow(date(2024, 3, 13), date(2024, 3, 17))
INCREMENTAL_MARTS = ("daily_post_counts", "daily_toxicity_summary", "daily_sociopolitical_summary",
                     "toxicity_by_ideology", "pipeline_coverage")  # fmt: skip
PYTHON_ASSETS = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts", "toxicity_scores"]


def dbt(db: str, *args: str) -> None:
    env = {**os.environ, **DBT_ENV, "BSKY_WAREHOUSE_DB": db}
    proc = subprocess.run(
        [dbt_executable(), *args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
        env=env, cwd=DBT_PROJECT_DIR, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]


def table(db: str, name: str) -> list[tuple]:
    con = duckdb.connect(db, read_only=True)
    try:
        return sorted(con.execute(f"SELECT * FROM marts.{name}").fetchall(), key=repr)
    finally:
        con.close()


@pytest.fixture(scope="module")
def loaded_db(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("marts") / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    for scorer in ("profanity-check", REFERENCE_SCORER):
        result = run_window(WINDOW, instance, db_path=db, archive_dir=str(SAMPLE_DIR), assets=PYTHON_ASSETS,
                            run_config={"ops": {"toxicity_scores": {"config": {"scorer": scorer}}}})  # fmt: skip
        assert result["success"]
    dbt(db, "seed")
    return db


def test_incremental_day_by_day_equals_full_refresh(loaded_db):
    for day in WINDOW.days():
        dbt(loaded_db, "run", "--vars", json.dumps(DayWindow.for_day(day).dbt_vars()))
    incremental = {name: table(loaded_db, name) for name in INCREMENTAL_MARTS}
    assert all(incremental[name] for name in ("daily_post_counts", "daily_toxicity_summary", "pipeline_coverage"))
    dbt(loaded_db, "run", "--full-refresh")
    for name in INCREMENTAL_MARTS:
        assert table(loaded_db, name) == incremental[name], name
    # Re-running one day incrementally replaces that day and nothing else.
    dbt(loaded_db, "run", "--vars", json.dumps(DayWindow.for_day(WINDOW.start).dbt_vars()))
    for name in INCREMENTAL_MARTS:
        assert table(loaded_db, name) == incremental[name], name


def test_pipeline_coverage_accounts_for_every_post(loaded_db):
    dbt(loaded_db, "run", "--full-refresh")
    con = duckdb.connect(loaded_db, read_only=True)
    rows = con.execute(
        "SELECT day, raw_posts, deleted, duplicates, cleaned, unaccounted_posts, passing_filters, scores_ok "
        "FROM marts.pipeline_coverage ORDER BY day"
    ).fetchall()
    raw_by_day = dict(con.execute("SELECT partition_date, count(DISTINCT uri) FROM raw_posts GROUP BY 1").fetchall())
    con.close()
    assert [r[0] for r in rows] == WINDOW.days()
    for day, raw, deleted, duplicates, cleaned, unaccounted, passing, scores_ok in rows:
        assert raw == raw_by_day.get(day, 0)
        assert unaccounted == 0
        assert raw == deleted + duplicates + cleaned
        assert scores_ok == 2 * passing  # two scorers, every eligible post scored by each


def test_scorer_agreement_mart_matches_python_metrics(loaded_db):
    from bsky_warehouse.evaluation import scorer_agreement, with_scorer_intervals

    dbt(loaded_db, "run", "--select", "+scorer_agreement")  # with the staging views it reads
    con = duckdb.connect(loaded_db, read_only=True)
    mart = {
        (r[0], r[1], r[2]): r[3:]
        for r in con.execute(
            "SELECT scorer, reference, attribute, n, pearson, spearman, auc FROM marts.scorer_agreement"
        ).fetchall()
    }
    intervals = {
        (r[0], r[1], r[2]): r[3:]
        for r in con.execute(
            """SELECT scorer, reference, attribute, pearson_ci_low, pearson_ci_high, spearman_ci_low,
                      spearman_ci_high, auc_ci_low, auc_ci_high, ci_posts, ci_method FROM marts.scorer_agreement"""
        ).fetchall()
    }
    python = scorer_agreement(con)
    # Every pair the mart holds, as `eval scorers` computes its intervals (it asks for one reference at a time).
    printed = with_scorer_intervals(
        con, [{"scorer": s, "reference": r, "attribute": a, "n": v[0]} for (s, r, a), v in mart.items()]
    )
    con.close()
    assert python and set(intervals) == set(mart)
    for row in python:
        n, pearson, spearman, auc = mart[(row["scorer"], row["reference"], row["attribute"])]
        assert n == row["n"]
        for sql_value, py_value in ((pearson, row["pearson"]), (spearman, row["spearman"]), (auc, row["auc"])):
            assert (sql_value is None) == (py_value is None)
            if py_value is not None:
                assert sql_value == pytest.approx(py_value, abs=1e-9)
    # The mart's intervals are the ones `eval scorers` prints, and each holds its figure.
    for expected_row in printed:
        key = (expected_row["scorer"], expected_row["reference"], expected_row["attribute"])
        n, pearson, spearman, auc = mart[key]
        *ends, ci_posts, method = intervals[key]
        assert ci_posts == n and method == "percentile bootstrap, 2000 resamples, seed 20240308"
        for name, figure, (low, high) in zip(("pearson", "spearman", "auc"), (pearson, spearman, auc),
                                             (ends[0:2], ends[2:4], ends[4:6]), strict=True):  # fmt: skip
            expected = expected_row[f"{name}_ci"]
            assert (low is None) == (expected is None), (key, name)
            if expected is not None:
                assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)
                assert low <= figure + 1e-9 and figure - 1e-9 <= high and low < high


def test_every_mart_is_daily_or_global_by_its_own_config():
    """A mart is daily (incremental, replaced by day: the partitioned asset) or reads the whole history (a table,
    tag `global`: the unpartitioned asset); the tag alone puts a new model in the right Dagster asset."""
    from bsky_warehouse.assets.dbt import dbt_global_models, dbt_models
    from bsky_warehouse.project import DBT_MANIFEST

    nodes = json.loads(DBT_MANIFEST.read_text())["nodes"].values()
    marts = [n for n in nodes if n["resource_type"] == "model" and n["fqn"][1] in ("marts", "audit")]
    assert marts
    for node in marts:
        incremental = node["config"]["materialized"] == "incremental"
        assert incremental != ("global" in node["tags"]), node["name"]
    global_names = {n["name"] for n in marts if "global" in n["tags"]}
    assert {key.to_user_string() for key in dbt_global_models.keys} == global_names
    assert not {key.to_user_string() for key in dbt_models.keys} & global_names
    assert dbt_global_models.partitions_def is None and dbt_models.partitions_def is not None


def test_the_window_comes_from_the_environment_and_only_iso_dates_pass(tmp_path):
    """Dagster's dbt step gives the window as environment variables (a new window then costs dbt no parsing);
    they reach the compiled SQL, and a value that is not an ISO date stops the build (no SQL injection)."""
    from bsky_warehouse.partitions import dbt_env_for_days

    def compile_counts(window: dict[str, str]) -> subprocess.CompletedProcess:
        env = {**os.environ, **DBT_ENV, "BSKY_WAREHOUSE_DB": str(tmp_path / "wh.duckdb"), **window}
        return subprocess.run(
            [dbt_executable(), "compile", "--select", "daily_post_counts", "--target-path", str(tmp_path / "t"),
             "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
            env=env, cwd=DBT_PROJECT_DIR, capture_output=True, text=True,
        )  # fmt: skip

    proc = compile_counts(dbt_env_for_days([date(2024, 3, 13), date(2024, 3, 15)]))
    assert proc.returncode == 0, proc.stdout[-4000:]
    sql = next((tmp_path / "t" / "compiled").rglob("daily_post_counts.sql")).read_text()
    assert "partition_date >= cast('2024-03-13' as date) and partition_date < cast('2024-03-16' as date)" in sql
    assert "partition_date in (cast('2024-03-13' as date), cast('2024-03-15' as date))" in sql
    bad = compile_counts({"BSKY_DBT_MIN_DATE": "2024-03-13", "BSKY_DBT_DAYS": "2024-03-13') or (1 = 1"})
    assert bad.returncode != 0 and "days must hold ISO dates" in bad.stdout
