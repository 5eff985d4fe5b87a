"""`eval scorers` intervals and `eval compare` of two scorers, on real scores of the sample (issue #20)."""

from __future__ import annotations

import json
from datetime import date

import duckdb
import pytest
from dagster import DagsterInstance

from bsky_warehouse.cli import INGEST_ASSETS, main
from bsky_warehouse.evaluation import compare_scorers, scorer_agreement, with_scorer_intervals
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import SAMPLE_DIR
from bsky_warehouse.reference import REFERENCE_SCORER

pytestmark = pytest.mark.integration
WINDOW = DayWindow(date(2024, 3, 13), date(2024, 3, 17))


@pytest.fixture(scope="module")
def scored_db(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("scorers") / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    for scorer in ("profanity-check", REFERENCE_SCORER):
        result = run_window(WINDOW, instance, db_path=db, archive_dir=str(SAMPLE_DIR),
                            assets=[*INGEST_ASSETS, "toxicity_scores"],
                            run_config={"ops": {"toxicity_scores": {"config": {"scorer": scorer}}}})  # fmt: skip
        assert result["success"]
    return db


def test_every_scorer_figure_has_an_interval_around_it(scored_db):
    con = duckdb.connect(scored_db, read_only=True)
    rows = with_scorer_intervals(con, scorer_agreement(con))
    con.close()
    assert rows
    for row in rows:
        for name in ("pearson", "spearman", "auc"):
            low, high = row[f"{name}_ci"]
            assert low <= row[name] <= high, (row["attribute"], name)
            assert high - low < 0.5


def test_compare_scorers_is_paired(scored_db):
    con = duckdb.connect(scored_db, read_only=True)
    same = compare_scorers(con, "profanity-check", "scorer:profanity-check", "toxicity")
    better = compare_scorers(con, REFERENCE_SCORER, "profanity-check", "toxicity")
    con.close()
    assert same["difference"] == 0.0 and same["difference_ci"] == [0.0, 0.0] and same["p_value"] == 1.0
    # the reference against itself has Spearman 1: it beats any other scorer, on the same posts
    assert better["spearman_a"] == pytest.approx(1.0)
    assert better["difference"] == pytest.approx(1.0 - better["spearman_b"])
    assert 0 < better["difference_ci"][0] <= better["difference"] <= better["difference_ci"][1]
    assert better["n"] == same["n"] > 0


def test_eval_scorers_json_rounds_intervals(scored_db, monkeypatch, capsys):
    monkeypatch.setenv("BSKY_WAREHOUSE_DB", scored_db)
    assert main(["eval", "scorers", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = next(r for r in out["scorers"] if r["attribute"] == "toxicity")
    assert all(v == round(v, 3) for v in [row["spearman"], *row["spearman_ci"], *row["auc_ci"]])
    assert out["intervals"]["bootstrap_resamples"] == 2000
