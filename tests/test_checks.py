"""Great Expectations suites as Dagster asset checks: they catch bad rows, and blocking ones stop downstream."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from dagster import DagsterInstance

from bsky_warehouse.checks.expectations import SUITES, validate
from bsky_warehouse.partitions import DayWindow, window_from_tags
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import SAMPLE_DIR
from bsky_warehouse.resources.reference import REFERENCE_SCORER

SCORES = next(s for s in SUITES if s.asset == "toxicity_scores")


def test_window_from_run_tags():
    assert window_from_tags({"dagster/partition": "2024-03-10"}) == DayWindow(date(2024, 3, 10), date(2024, 3, 11))
    tags = {"dagster/asset_partition_range_start": "2024-03-10", "dagster/asset_partition_range_end": "2024-03-12"}
    assert window_from_tags(tags) == DayWindow(date(2024, 3, 10), date(2024, 3, 13))
    assert window_from_tags({}) is None


def test_gx_reports_unexpected_counts_and_samples():
    frame = pd.DataFrame(
        {
            "uri": ["a", "b", "b"],
            "scorer": ["s", "s", "s"],
            "status": ["ok", "ok", "bogus"],
            "reason": [None, None, None],
            **{c: [0.1, None, 0.2] for c in ("prob_toxicity", "prob_insult")},
            "copies_overall": [1, 2, 2],
            "reason_consistent": [True, True, False],
        }
    )
    frame.loc[0, "prob_insult"] = 1.7
    from bsky_warehouse.records import PROB_COLUMNS

    for column in PROB_COLUMNS:
        if column not in frame:
            frame[column] = None
    outcomes = {o.name: o for o in validate(frame, SCORES.checks)}
    assert not outcomes["scores_prob_in_unit_interval"].passed
    assert outcomes["scores_prob_in_unit_interval"].unexpected_count == 1
    assert outcomes["scores_prob_in_unit_interval"].unexpected_sample == [1.7]
    assert not outcomes["scores_status_accepted"].passed
    assert outcomes["scores_status_accepted"].unexpected_sample == ["bogus"]
    assert not outcomes["scores_uri_scorer_unique"].passed
    assert not outcomes["scores_reason_iff_not_ok"].passed


@pytest.mark.integration
def test_bad_scores_fail_blocking_checks_and_downstream_models_do_not_run(tmp_path):
    db = str(tmp_path / "wh.duckdb")
    window = DayWindow.for_day("2024-03-12")
    instance = DagsterInstance.ephemeral()
    first = run_window(window, instance, db_path=db, archive_dir=str(SAMPLE_DIR),
                       assets=["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"])  # fmt: skip
    assert first["success"] and all(c["passed"] for c in first["checks"])

    import duckdb

    con = duckdb.connect(db)
    uri = con.execute("SELECT uri FROM cleaned_posts WHERE partition_date = '2024-03-12' LIMIT 1").fetchall()[0][0]
    # A bad write sits in the partition: a probability of 1.7 and the same (uri, scorer) twice.
    con.execute(
        """INSERT INTO toxicity_scores (uri, scorer, scorer_version, status, scored_at, partition_date, prob_toxicity)
           VALUES ($u, 'hand-import', '1', 'ok', now(), '2024-03-12', 1.7),
                  ($u, 'hand-import', '1', 'ok', now(), '2024-03-12', 0.3)""",
        {"u": uri},
    )
    con.close()
    result = run_window(
        window, instance, db_path=db, raise_on_error=False,
        assets=["toxicity_scores", "stg_toxicity_scores", "scorer_agreement"],
        run_config={"ops": {"toxicity_scores": {"config": {"scorer": REFERENCE_SCORER}}}},
    )  # fmt: skip
    verdicts = {c["check"]: c["passed"] for c in result["checks"]}
    assert verdicts["scores_prob_in_unit_interval"] is False
    assert verdicts["scores_uri_scorer_unique"] is False
    assert verdicts["scores_status_accepted"] is True
    assert "toxicity_scores" in result["assets_materialized"]
    assert "scorer_agreement" not in result["assets_materialized"]
    assert "stg_toxicity_scores" not in result["assets_materialized"]
    assert not result["success"]


def test_topic_suites_catch_doubled_rows_unknown_topics_and_bad_embeddings(warehouse):
    from bsky_warehouse.checks.expectations import suite_frame

    day = date(2024, 3, 10)
    unit = [1.0] + [0.0] * 383
    with warehouse.connect() as con:
        con.execute("INSERT INTO topic_models VALUES ('v1', 0, 'cats', ['cats'], 3, $c, 'm', '{}', now())", {"c": unit})
        rows = [("a", 0, 0.1), ("a", 0, 0.1), ("b", 7, 0.2), ("c", 0, 2.5)]
        for uri, topic, distance in rows:
            con.execute(
                "INSERT INTO post_topics VALUES ($u, 'v1', $t, 'x', $d, now(), $day)",
                {"u": uri, "t": topic, "d": distance, "day": day},
            )
        for uri, vector in (("a", unit), ("b", [0.5] * 384)):
            con.execute(
                "INSERT INTO post_embeddings VALUES ($u, 'm', $v, now(), $day)", {"u": uri, "v": vector, "day": day}
            )
        outcomes = {}
        for suite in SUITES:
            if suite.asset in ("post_topics", "post_embeddings"):
                frame = suite_frame(con, suite, DayWindow.for_day(day))
                outcomes.update({o.name: o for o in validate(frame, suite.checks)})
    assert outcomes["topics_key_unique"].unexpected_count == 2
    assert not outcomes["topics_assigned_from_stored_model"].passed
    assert outcomes["topics_assigned_from_stored_model"].unexpected_count == 2  # topic 7 unknown; distance 2.5
    assert outcomes["embeddings_key_unique"].passed
    assert not outcomes["embeddings_unit_length"].passed and outcomes["embeddings_unit_length"].unexpected_count == 1
