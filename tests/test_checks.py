"""Great Expectations suites as Dagster asset checks: they catch bad rows, and blocking ones stop downstream."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
from dagster import DagsterInstance

from bsky_warehouse.checks.expectations import SUITES, validate
from bsky_warehouse.partitions import DayWindow, window_from_tags
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import SAMPLE_DIR
from bsky_warehouse.reference import REFERENCE_SCORER

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
            "non_finite_probs": [None, None, None],
            "copies_overall": [1, 2, 2],
            "reason_consistent": [True, True, False],
            "inclusion_probability_valid": [True, True, True],
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
    assert outcomes["scores_prob_in_unit_interval"].unexpected_uris == ["a"]
    assert not outcomes["scores_status_accepted"].passed
    assert outcomes["scores_status_accepted"].unexpected_sample == ["bogus"]
    assert not outcomes["scores_uri_scorer_unique"].passed
    assert outcomes["scores_uri_scorer_unique"].unexpected_uris == ["b"]
    assert not outcomes["scores_reason_iff_not_ok"].passed
    assert outcomes["scores_reason_iff_not_ok"].metadata()["unexpected_uris"] == ["b"]


@pytest.mark.integration
def test_bad_scores_fail_blocking_checks_and_downstream_models_do_not_run(tmp_path):
    db = str(tmp_path / "wh.duckdb")
    window = DayWindow.for_day("2024-03-12")
    instance = DagsterInstance.ephemeral()
    first = run_window(window, instance, db_path=db, archive_dir=str(SAMPLE_DIR),
                       assets=["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"])  # fmt: skip
    gx_checks = {c.name for suite in SUITES for c in suite.checks}
    assert first["success"] and all(c["passed"] for c in first["checks"] if c["check"] in gx_checks)

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
        assets=["toxicity_scores", "stg_toxicity_scores", "scorer_agreement_figures", "scorer_agreement"],
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
        rows = [("a", 0, 0.1), ("a", 0, 0.1), ("b", 7, 0.2), ("c", 0, 2.5), ("d", 0, float("nan"))]
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
    # topic 7 unknown; distance 2.5; distance NaN (which pandas would pass as missing)
    assert outcomes["topics_assigned_from_stored_model"].unexpected_count == 3
    assert outcomes["topics_assigned_from_stored_model"].unexpected_uris == ["b", "d", "c"]
    assert outcomes["embeddings_key_unique"].passed
    assert not outcomes["embeddings_unit_length"].passed and outcomes["embeddings_unit_length"].unexpected_count == 1


# --------------------------------------------------------------------------------------------------
# The row rules as SQL, evaluated by DuckDB
# --------------------------------------------------------------------------------------------------


def _eval(sql: str, rows: list[dict[str, object]], types: dict[str, str]) -> list[object]:
    """`sql` evaluated per row of a throwaway DuckDB table with these column types, in row order."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"CREATE TABLE t (i INTEGER, {', '.join(f'{c} {t}' for c, t in types.items())})")
    for i, row in enumerate(rows):
        columns = ", ".join(["i", *row])
        con.execute(f"INSERT INTO t ({columns}) VALUES ({', '.join(['?'] * (len(row) + 1))})", [i, *row.values()])
    return [v for (v,) in con.execute(f"SELECT {sql} FROM t ORDER BY i").fetchall()]


def test_non_finite_names_the_nan_and_infinite_columns():
    from bsky_warehouse.checks.expectations import non_finite_sql

    rows = [
        {"p": 0.5, "q": None},
        {"p": float("nan"), "q": 0.1},
        {"p": float("inf"), "q": float("-inf")},
        {"p": None, "q": None},
    ]
    assert _eval(non_finite_sql(["p", "t.q"]), rows, {"p": "DOUBLE", "q": "DOUBLE"}) == [
        None,
        "p=nan",
        "p=inf, q=-inf",
        None,
    ]


def test_a_blank_reason_is_no_reason():
    from bsky_warehouse.checks.expectations import reason_consistent_sql

    rows = [
        {"status": "ok", "reason": None},
        {"status": "failed", "reason": "api_error"},
        {"status": "failed", "reason": ""},
        {"status": "skipped", "reason": " \t\n"},
        {"status": "failed", "reason": "\u00a0"},
        {"status": "failed", "reason": None},
        {"status": "ok", "reason": "api_error"},
        {"status": "ok", "reason": ""},
    ]
    assert _eval(reason_consistent_sql(), rows, {"status": "VARCHAR", "reason": "VARCHAR"}) == [
        True, True, False, False, False, False, False, False,
    ]  # fmt: skip


def test_an_ok_answer_has_an_ideology_exactly_when_sociopolitical():
    from bsky_warehouse.checks.expectations import answer_consistent_sql

    rows = [
        {"status": "ok", "is_sociopolitical": True, "political_ideology": "left"},
        {"status": "ok", "is_sociopolitical": False, "political_ideology": None},
        {"status": "ok", "is_sociopolitical": True, "political_ideology": None},
        {"status": "ok", "is_sociopolitical": False, "political_ideology": "right"},
        {"status": "ok", "is_sociopolitical": None, "political_ideology": None},
        {"status": "failed", "is_sociopolitical": None, "political_ideology": None},
        {"status": "failed", "is_sociopolitical": None, "political_ideology": "left"},
        # A label file's ideology on a post it called not sociopolitical is kept apart, and only there.
        {"status": "ok", "is_sociopolitical": False, "political_ideology": None, "dropped_ideology": "unclear"},
        {"status": "ok", "is_sociopolitical": True, "political_ideology": "left", "dropped_ideology": "unclear"},
        {"status": "failed", "is_sociopolitical": None, "political_ideology": None, "dropped_ideology": "left"},
    ]
    rows = [{"dropped_ideology": None, **row} for row in rows]
    types = {"status": "VARCHAR", "is_sociopolitical": "BOOLEAN", "political_ideology": "VARCHAR",
             "dropped_ideology": "VARCHAR"}  # fmt: skip
    assert _eval(answer_consistent_sql(), rows, types) == [
        True, True, False, False, False, True, False, True, False, False,
    ]  # fmt: skip


def test_filter_reason_blank_counts_as_unset():
    from bsky_warehouse.checks.expectations import filter_reason_consistent_sql

    rows = [
        {"passes_filters": True, "filter_reason": None},
        {"passes_filters": False, "filter_reason": "empty_text"},
        {"passes_filters": False, "filter_reason": "  "},
        {"passes_filters": True, "filter_reason": ""},
    ]
    types = {"passes_filters": "BOOLEAN", "filter_reason": "VARCHAR"}
    assert _eval(filter_reason_consistent_sql(), rows, types) == [True, True, False, False]


def test_unexpected_row_ids_are_distinct_and_in_order():
    from bsky_warehouse.checks.expectations import unexpected_row_ids

    result = {"partial_unexpected_index_list": [{"uri": "b", "x": 1}, {"uri": "a"}, {"uri": "b"}, {"x": 2}]}
    assert unexpected_row_ids(result) == ["b", "a"]
    assert unexpected_row_ids({}) == []


# --------------------------------------------------------------------------------------------------
# A real warehouse, corrupted, then the asset checks run alone
# --------------------------------------------------------------------------------------------------

CHECKED_DAY = date(2024, 3, 12)
OTHER_DAY = date(2024, 3, 13)
CHECKED_ASSETS = ("raw_posts", "cleaned_posts", "toxicity_scores", "llm_labels")
GX_CHECKS = {c.name: s.asset for s in SUITES if s.asset in CHECKED_ASSETS for c in s.checks}


@pytest.fixture(scope="module")
def sample_warehouse(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two real sample days: ingest and cleaning, the 2024 Perspective reference scores, GPT-4's recorded labels."""
    from bsky_warehouse.cli import recorded_labels_config

    db = str(tmp_path_factory.mktemp("checks") / "wh.duckdb")
    window = DayWindow(CHECKED_DAY, OTHER_DAY + timedelta(days=1))
    instance = DagsterInstance.ephemeral()
    scores = {"ops": {"toxicity_scores": {"config": {"scorer": REFERENCE_SCORER}}}}
    assets = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts", "toxicity_scores"]
    assert run_window(window, instance, db_path=db, archive_dir=str(SAMPLE_DIR), assets=assets, run_config=scores)[
        "success"
    ]
    assert run_window(window, instance, db_path=db, assets=["llm_labels"], run_config=recorded_labels_config("gpt-4"))[
        "success"
    ]
    return db


def run_gx_checks_alone(db: str, window: DayWindow) -> dict[str, tuple[bool, dict[str, object]]]:
    """Run only the GX asset checks of CHECKED_ASSETS over `window` (as a run of those days would), nothing
    materialized; returns each check's verdict and metadata values."""
    from dagster import AssetCheckKey, AssetKey, AssetSelection, Definitions, define_asset_job

    from bsky_warehouse.definitions import build_definitions
    from bsky_warehouse.partitions import RANGE_END_TAG, RANGE_START_TAG
    from bsky_warehouse.resources.warehouse import WarehouseResource

    keys = [AssetCheckKey(AssetKey(asset), name) for name, asset in GX_CHECKS.items()]
    job = define_asset_job("gx_checks_alone", selection=AssetSelection.checks(*keys))
    defs = Definitions.merge(build_definitions(warehouse=WarehouseResource(path=db)), Definitions(jobs=[job]))
    days = window.days()
    result = defs.resolve_job_def("gx_checks_alone").execute_in_process(
        instance=DagsterInstance.ephemeral(),
        tags={RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()},
        raise_on_error=False,
    )
    assert not result.get_asset_materialization_events()
    return {
        e.check_name: (e.passed, {k: v.value for k, v in e.metadata.items()})
        for e in result.get_asset_check_evaluations()
    }


def _pick(con, sql: str, n: int) -> list[str]:
    uris = [u for (u,) in con.execute(sql, {"day": CHECKED_DAY}).fetchall()][:n]
    assert len(uris) == n, sql
    return uris


def corrupt(db: str) -> dict[str, list[str]]:
    """Write one of each hole from issue #18 into CHECKED_DAY; returns the check that must catch each, with
    the uris it must name."""
    import duckdb

    con = duckdb.connect(db)
    scored = _pick(con, "SELECT uri FROM toxicity_scores WHERE partition_date = $day AND status = 'ok' ORDER BY uri", 9)
    labeled = _pick(con, "SELECT uri FROM llm_labels WHERE partition_date = $day AND status = 'ok' ORDER BY uri", 4)
    posts = _pick(con, "SELECT uri FROM cleaned_posts WHERE partition_date = $day ORDER BY uri DESC", 3)
    nan, inf, neg_inf, empty, blank, doubled, never, weightless, above_one = scored
    for uri, value in ((never, "NULL"), (weightless, "0"), (above_one, "1.5")):
        con.execute(f"UPDATE toxicity_scores SET inclusion_probability = {value} WHERE uri = $u", {"u": uri})
    for uri, column, value in (
        (nan, "prob_insult", "nan"),
        (inf, "prob_toxicity", "inf"),
        (neg_inf, "prob_spam", "-inf"),
    ):
        con.execute(f"UPDATE toxicity_scores SET {column} = $v::DOUBLE WHERE uri = $u", {"v": value, "u": uri})
    con.execute("UPDATE toxicity_scores SET status = 'failed', reason = '' WHERE uri = $u", {"u": empty})
    con.execute("UPDATE toxicity_scores SET status = 'skipped', reason = ' \t' WHERE uri = $u", {"u": blank})
    no_ideology, no_answer, no_reason, label_doubled = labeled
    con.execute(
        "UPDATE llm_labels SET is_sociopolitical = true, political_ideology = NULL WHERE uri = $u", {"u": no_ideology}
    )
    con.execute("UPDATE llm_labels SET is_sociopolitical = NULL, political_ideology = NULL WHERE uri = $u",
                {"u": no_answer})  # fmt: skip
    con.execute("UPDATE llm_labels SET status = 'failed', reason = '' WHERE uri = $u", {"u": no_reason})
    post_doubled, blank_filter, raw_moved = posts
    # Copies of day-one rows written into the other day: unique within each partition, doubled overall.
    moved = {"day": OTHER_DAY}
    con.execute("INSERT INTO toxicity_scores SELECT * REPLACE ($day AS partition_date) FROM toxicity_scores "
                "WHERE uri = $u", {**moved, "u": doubled})  # fmt: skip
    con.execute("INSERT INTO llm_labels SELECT * REPLACE ($day AS partition_date) FROM llm_labels WHERE uri = $u",
                {**moved, "u": label_doubled})  # fmt: skip
    con.execute("INSERT INTO cleaned_posts SELECT * REPLACE ($day AS partition_date, "
                "created_at + INTERVAL 1 DAY AS created_at) FROM cleaned_posts WHERE uri = $u",
                {**moved, "u": post_doubled})  # fmt: skip
    con.execute("UPDATE cleaned_posts SET passes_filters = false, filter_reason = '  ' WHERE uri = $u",
                {"u": blank_filter})  # fmt: skip
    con.execute("UPDATE raw_posts SET created_at = created_at - INTERVAL 2 DAY "
                "WHERE uri = $u AND partition_date = $day", {"u": raw_moved, "day": CHECKED_DAY})  # fmt: skip
    con.close()
    return {
        "scores_prob_in_unit_interval": [nan, inf, neg_inf],
        "scores_reason_iff_not_ok": [empty, blank],
        "scores_uri_scorer_unique": [doubled],
        "scores_inclusion_probability_valid": [never, weightless, above_one],
        "labels_ideology_accepted": [no_ideology, no_answer],
        "labels_reason_iff_not_ok": [no_reason],
        "labels_key_unique": [label_doubled],
        "cleaned_uri_unique_across_partitions": [post_doubled],
        "cleaned_filter_reason_consistent": [blank_filter],
        "raw_created_at_in_partition_day": [raw_moved],
    }


@pytest.mark.integration
def test_every_corruption_fails_a_check_that_names_its_uris(sample_warehouse, tmp_path):
    import shutil

    window = DayWindow.for_day(CHECKED_DAY)
    clean = run_gx_checks_alone(sample_warehouse, window)
    assert set(clean) == set(GX_CHECKS)
    assert all(passed for passed, _ in clean.values()), {k: m for k, (p, m) in clean.items() if not p}
    assert all(meta["unexpected_uris"] == [] and meta["rows_validated"] > 0 for _, meta in clean.values())

    db = str(tmp_path / "corrupted.duckdb")
    shutil.copy(sample_warehouse, db)
    expected = corrupt(db)
    verdicts = run_gx_checks_alone(db, window)
    failed = {name for name, (passed, _) in verdicts.items() if not passed}
    assert failed == set(expected)
    for name, uris in expected.items():
        assert set(uris) <= set(verdicts[name][1]["unexpected_uris"]), name
        assert verdicts[name][1]["unexpected_count"] >= len(uris), name
    assert set(verdicts["scores_prob_in_unit_interval"][1]["unexpected_sample"]) >= {
        "prob_insult=nan", "prob_toxicity=inf", "prob_spam=-inf",
    }  # fmt: skip
    # The only rows named are the corrupted ones (a copy is named once: the row in the checked day).
    assert set(verdicts["labels_ideology_accepted"][1]["unexpected_uris"]) == set(expected["labels_ideology_accepted"])
    assert verdicts["scores_uri_scorer_unique"][1]["unexpected_uris"] == expected["scores_uri_scorer_unique"]


@pytest.mark.integration
def test_dbt_probabilities_test_catches_nan_in_any_prob_column(sample_warehouse, tmp_path):
    import shutil

    import duckdb

    db = str(tmp_path / "nan.duckdb")
    shutil.copy(sample_warehouse, db)
    con = duckdb.connect(db)
    # A bridging attribute the 2024 reference scores carry: a NaN where a number was.
    target = "(SELECT min(uri) FROM toxicity_scores WHERE prob_affinity IS NOT NULL)"
    updated = con.execute(f"UPDATE toxicity_scores SET prob_affinity = 'nan'::DOUBLE WHERE uri = {target}").fetchone()
    con.close()
    assert updated == (1,)
    result = run_window(DayWindow.for_day(CHECKED_DAY), DagsterInstance.ephemeral(), db_path=db,
                        assets=["stg_toxicity_scores"], raise_on_error=False)  # fmt: skip
    verdicts = {c["check"]: c["passed"] for c in result["checks"] if c["asset"] == "stg_toxicity_scores"}
    probabilities = [name for name in verdicts if name.startswith("probabilities_")]
    assert len(probabilities) == 1 and verdicts[probabilities[0]] is False, verdicts
    # prob_toxicity's own range test is untouched by a NaN elsewhere: the new test is what catches it.
    assert [passed for name, passed in verdicts.items() if name.startswith("between_")] == [True], verdicts


def test_author_suite_checks_the_scanned_account_only(warehouse):
    from bsky_warehouse.checks.assets import run_scope
    from bsky_warehouse.checks.expectations import AuthorScan, suite_frame

    authors = next(s for s in SUITES if s.asset == "author_toxicity_scores")
    with warehouse.connect() as con:
        for key, did in (("alice.bsky.social", "did:plc:alice"), ("bob.bsky.social", "did:plc:bob")):
            con.execute("INSERT INTO author_scans VALUES ($k, $d, $k, now(), 3, 3, 0, 0, 1)", {"k": key, "d": did})
        rows = [("at://did:plc:alice/p/1", "did:plc:alice", "ok", None, 0.2),
                ("at://did:plc:alice/p/2", "did:plc:alice", "ok", None, float("nan")),
                ("at://did:plc:alice/p/3", "did:plc:alice", "failed", " ", None),
                ("at://did:plc:bob/p/1", "did:plc:bob", "ok", None, float("inf"))]  # fmt: skip
        for uri, did, status, reason, prob in rows:
            con.execute(
                """INSERT INTO author_toxicity_scores (uri, author_did, scorer, scorer_version, status, reason,
                                                       scored_at, prob_toxicity)
                   VALUES ($u, $d, 's', '1', $st, $r, now(), $p)""",
                {"u": uri, "d": did, "st": status, "r": reason, "p": prob},
            )
        scope = run_scope(authors, {"dagster/partition": "@Alice.bsky.social"})
        assert scope == AuthorScan("alice.bsky.social")
        outcomes = {o.name: o for o in validate(suite_frame(con, authors, scope), authors.checks)}
        assert run_scope(authors, {}) is None
        everyone = {o.name: o for o in validate(suite_frame(con, authors, None), authors.checks)}
    assert outcomes["author_scores_prob_in_unit_interval"].unexpected_uris == ["at://did:plc:alice/p/2"]
    assert outcomes["author_scores_prob_in_unit_interval"].unexpected_sample == ["prob_toxicity=nan"]
    assert outcomes["author_scores_reason_iff_not_ok"].unexpected_uris == ["at://did:plc:alice/p/3"]
    assert outcomes["author_scores_status_accepted"].passed and outcomes["author_scores_uri_scorer_unique"].passed
    assert outcomes["author_scores_prob_in_unit_interval"].rows == 3  # bob's infinity is not this scan's
    assert set(everyone["author_scores_prob_in_unit_interval"].unexpected_uris) == {
        "at://did:plc:alice/p/2", "at://did:plc:bob/p/1",
    }  # fmt: skip
