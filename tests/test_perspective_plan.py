"""Planning the last of the Perspective quota: the pure pieces (quota arithmetic, allocation, the weighted
systematic sample), the command line's preflight, and end to end through Dagster over four sample days: fit the
distilled scorer, plan, and score only the planned posts against the local Perspective server."""

from __future__ import annotations

import contextlib
import io
import json
import random
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import duckdb
import pytest
from dagster import DagsterInstance

from bsky_warehouse import perspective_plan as pp
from bsky_warehouse.cli import dbt_fed_by, main
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.perspective_plan import (
    Candidate,
    PlanError,
    PlanParams,
    allocate,
    inclusion_probabilities,
    parse_now,
    parse_quota,
    plan_sample,
    systematic_sample,
    uncertainty_weight,
)
from bsky_warehouse.pipeline import run_job, run_window
from bsky_warehouse.project import SAMPLE_DIR
from bsky_warehouse.reference import REFERENCE_SCORER
from bsky_warehouse.resources.perspective import PerspectiveResource
from tests.servers.perspective_server import DEFAULT_KEY, PerspectiveServer
from tests.test_topics import materialized

NOW = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)


def candidates(n: int, days: int = 2, langs: tuple[str, ...] = ("en", "ja"), seed: int = 0) -> list[Candidate]:
    rng = random.Random(seed)
    return [
        Candidate(f"at://did:plc:t/app.bsky.feed.post/{i:05d}", date(2024, 3, 10 + i % days),
                  langs[i // days % len(langs)], None if i % 9 == 0 else rng.random())
        for i in range(n)
    ]  # fmt: skip


# Quota ------------------------------------------------------------------------------------------------------


def test_quota_is_qps_times_the_seconds_left_less_the_margin():
    quota = parse_quota("1", "2026-12-31", NOW, margin=0.1)
    assert quota.deadline == datetime(2027, 1, 1, tzinfo=UTC)
    assert quota.seconds == 3600 and quota.requests == 3600 and quota.posts == 3240
    assert parse_quota("0.5", "2026-12-31", NOW, margin=0).posts == 1800
    month = parse_quota("1", "2026-12-31", datetime(2026, 12, 1, tzinfo=UTC), margin=0.1)
    assert month.requests == 31 * 86400 and month.posts == int(31 * 86400 * 0.9)
    assert parse_quota("2", "2026-12-31", NOW, margin=0.25).as_dict()["posts"] == 5400


@pytest.mark.parametrize(
    ("qps", "until", "message"),
    [("0", "2026-12-31", "--qps must be a positive"), ("-1", "2026-12-31", "--qps must be a positive"),
     ("nan", "2026-12-31", "--qps must be a positive"), ("inf", "2026-12-31", "--qps must be a positive"),
     ("fast", "2026-12-31", "--qps 'fast' is not a number"), ("1", "31/12/2026", "is not a date"),
     ("1", "2027-01-01", "after 2026-12-31, when Perspective stops answering"), ("1", "2026-12-30", "is over")],
)  # fmt: skip
def test_bad_quota_arguments_are_one_line_errors(qps, until, message):
    with pytest.raises(PlanError, match=message) as err:
        parse_quota(qps, until, NOW)
    assert "\n" not in str(err.value)


def test_now_is_parsed_as_utc_when_it_names_no_zone():
    assert parse_now("2026-12-31T23:00:00Z", NOW) == NOW
    assert parse_now("2026-12-31T23:00:00", datetime(2000, 1, 1, tzinfo=UTC)) == NOW
    assert parse_now(None, NOW) == NOW
    with pytest.raises(PlanError, match="not an ISO time"):
        parse_now("yesterday", NOW)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--qps", "0"], "error: --qps must be a positive"), (["--qps", "1", "--until", "2027-02-01"], "stops answering"),
     (["--qps", "1", "--until", "soon"], "is not a date"), (["--qps", "1", "--until", "2020-01-01"], "is over"),
     (["--qps", "1", "--min-weight", "0"], "--min-weight must be above 0")],
)  # fmt: skip
def test_cli_preflight_exits_2_with_one_line_and_no_warehouse(tmp_path, monkeypatch, capsys, argv, message):
    db = tmp_path / "wh.duckdb"
    monkeypatch.setenv("BSKY_WAREHOUSE_DB", str(db))
    assert main(["perspective", "plan", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not db.exists()


# Sampling ---------------------------------------------------------------------------------------------------


def test_uncertainty_weight_peaks_at_one_half_and_keeps_a_floor():
    assert uncertainty_weight(0.5) == pytest.approx(1.0)
    assert uncertainty_weight(0.0) == uncertainty_weight(1.0) == pytest.approx(0.1)
    assert uncertainty_weight(None) == 1.0 and uncertainty_weight(float("nan")) == 1.0
    assert uncertainty_weight(0.2) == pytest.approx(uncertainty_weight(0.8))
    assert uncertainty_weight(0.05) < uncertainty_weight(0.2) < uncertainty_weight(0.4) < 1
    assert uncertainty_weight(0.0, min_weight=0.3) == pytest.approx(0.3)


def test_allocation_is_proportional_with_one_per_stratum_first():
    sizes = {"a": 60, "b": 30, "c": 9, "d": 1}
    assert allocate(sizes, 1000) == sizes
    out = allocate(sizes, 20)
    assert sum(out.values()) == 20 and all(out[k] >= 1 for k in sizes) and out["d"] == 1
    assert out["a"] > out["b"] > out["c"]
    assert allocate(sizes, 4) == {"a": 1, "b": 1, "c": 1, "d": 1}
    small = allocate(sizes, 2)
    assert sum(small.values()) == 2 and small["a"] == 1 and small["b"] == 1
    assert allocate(sizes, 0) == {"a": 0, "b": 0, "c": 0, "d": 0}
    for budget in range(101):
        got = allocate(sizes, budget)
        assert sum(got.values()) == budget and all(got[k] <= sizes[k] for k in sizes), budget


def test_inclusion_probabilities_sum_to_the_take_and_cap_at_one():
    weights = [10.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    probabilities = inclusion_probabilities(weights, 3)
    assert sum(probabilities) == pytest.approx(3)
    assert probabilities[0] == 1.0 and probabilities[1:] == pytest.approx([0.4] * 5)
    assert inclusion_probabilities([1.0, 3.0], 1) == pytest.approx([0.25, 0.75])
    assert inclusion_probabilities([1.0, 2.0], 5) == [1.0, 1.0]
    assert inclusion_probabilities([1.0, 2.0], 0) == [0.0, 0.0]
    with pytest.raises(PlanError, match="positive and finite"):
        inclusion_probabilities([1.0, 0.0, 1.0], 1)


def test_systematic_sample_draws_exactly_k_each_with_its_probability():
    keys = [f"k{i}" for i in range(8)]
    weights = [1.0, 1.0, 2.0, 3.0, 0.5, 0.5, 4.0, 12.0]
    probabilities = inclusion_probabilities(weights, 3)
    seen: Counter[int] = Counter()
    trials = 4000
    for seed in range(trials):
        drawn = systematic_sample(keys, probabilities, seed, "stratum")
        assert len(drawn) == 3 and len(set(drawn)) == 3
        seen.update(drawn)
    assert seen[7] == trials  # capped at 1: always
    for i, p in enumerate(probabilities):
        assert seen[i] / trials == pytest.approx(p, abs=0.03), i
    assert systematic_sample(keys, probabilities, 5, "s") == systematic_sample(keys, probabilities, 5, "s")


def test_plan_is_stratified_weighted_and_reproducible_whatever_the_order():
    pool = candidates(400)
    plan = plan_sample(pool, PlanParams(budget=60, seed=3, distilled_version="distilled-x"))
    assert len(plan.posts) == 60 and plan.candidates == 400
    assert [(s.day, s.lang, s.candidates) for s in plan.strata] == [
        (date(2024, 3, 10), "en", 100), (date(2024, 3, 10), "ja", 100),
        (date(2024, 3, 11), "en", 100), (date(2024, 3, 11), "ja", 100),
    ]  # fmt: skip
    assert [s.planned for s in plan.strata] == [15, 15, 15, 15]
    shuffled = list(pool)
    random.Random(1).shuffle(shuffled)
    again = plan_sample(shuffled, PlanParams(budget=60, seed=3, distilled_version="distilled-x"))
    assert again.plan_id == plan.plan_id and again.posts == plan.posts
    other = plan_sample(pool, PlanParams(budget=60, seed=4, distilled_version="distilled-x"))
    assert other.plan_id != plan.plan_id and {p.uri for p in other.posts} != {p.uri for p in plan.posts}
    by_uri = {c.uri: c for c in pool}
    for post in plan.posts:
        c = by_uri[post.uri]
        assert (post.day, post.lang, post.prediction) == (c.day, c.lang, c.prediction)
        assert post.weight == pytest.approx(uncertainty_weight(c.prediction))
        assert post.reason == (pp.REASON_NO_PREDICTION if c.prediction is None else pp.REASON_PREDICTION)
        assert 0 < post.inclusion_probability <= 1


def test_plan_leans_toward_uncertain_posts_and_takes_everything_that_fits():
    sure = [Candidate(f"at://s/{i:04d}", date(2024, 3, 10), "en", 0.01) for i in range(500)]
    unsure = [Candidate(f"at://u/{i:04d}", date(2024, 3, 10), "en", 0.5) for i in range(500)]
    plan = plan_sample(sure + unsure, PlanParams(budget=100))
    share = sum(p.uri.startswith("at://u/") for p in plan.posts) / len(plan.posts)
    expected = 1.0 / (1.0 + uncertainty_weight(0.01))  # weights 1 against about 0.136
    assert share == pytest.approx(expected, abs=0.05)
    everything = plan_sample(sure[:10], PlanParams(budget=50))
    assert len(everything.posts) == 10 and all(p.inclusion_probability == 1.0 for p in everything.posts)
    assert plan_sample(sure, PlanParams(budget=0)).posts == []
    with pytest.raises(PlanError, match="min_weight"):
        plan_sample(sure, PlanParams(budget=1, min_weight=0))


# Through Dagster: fit, plan, score the planned sample against the local Perspective server --------------------

WINDOW = DayWindow(date(2024, 3, 10), date(2024, 3, 14))
INGEST = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"]
PLAN_ARGS = ["perspective", "plan", "--qps", "0.01", "--until", "2026-12-31", "--now", "2026-12-31T23:00:00Z", "--json"]
PLANNED_POSTS = 32  # 0.01 QPS x 3600 s = 36 requests, less the 10% margin


def query(db: str, sql: str, params: dict | None = None) -> list[tuple]:
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(sql, params or {}).fetchall()
    finally:
        con.close()


def cli_json(db: str, argv: list[str]) -> dict[str, Any]:
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("BSKY_WAREHOUSE_DB", db)
        assert main(argv) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def planned_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = str(tmp_path_factory.mktemp("plan") / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    out: dict[str, Any] = {"db": db}

    def window(assets: list[str], config: dict[str, Any] | None, resources: dict | None = None) -> dict[str, Any]:
        ops = {"toxicity_scores": {"config": config}} if config is not None else {}
        result = run_window(WINDOW, instance, db_path=db, archive_dir=str(SAMPLE_DIR), assets=assets,
                            run_config={"ops": ops}, resources=resources, raise_on_error=False,
                            log_level="WARNING")  # fmt: skip
        return {"result": result, "scores": materialized(instance, result["run_id"], "toxicity_scores")}

    planned = {"scorer": "perspective", "sample": "planned"}
    out["reference"] = window([*INGEST, "toxicity_scores"], {"scorer": REFERENCE_SCORER})
    out["embeddings"] = window(["post_embeddings"], None)
    fit = run_job("distill_perspective", instance, db_path=db, raise_on_error=False, log_level="WARNING",
                  run_config={"ops": {"distilled_models": {"config": {"training_scorers": [REFERENCE_SCORER],
                                                                      "attributes": ["TOXICITY"]}}}})  # fmt: skip
    out["fit"] = {"result": fit, "meta": materialized(instance, fit["run_id"], "distilled_models")[0]}
    out["distilled"] = window(["toxicity_scores"], {"scorer": "perspective-distilled"})
    out["before_plan_rows"] = query(db, "SELECT scorer, count(*) FROM toxicity_scores GROUP BY 1 ORDER BY 1")
    out["no_plan"] = window(["toxicity_scores"], planned)
    out["plan"] = cli_json(db, PLAN_ARGS)
    out["plan_again"] = cli_json(db, PLAN_ARGS)
    out["dry_run"] = cli_json(db, [*PLAN_ARGS, "--seed", "7", "--dry-run"])
    out["plan_rows"] = query(db, "SELECT plan_id, count(*) FROM perspective_plan GROUP BY 1")
    out["wrong_scorer"] = window(["toxicity_scores"], {"scorer": "profanity-check", "sample": "planned"})
    out["eligible"] = dict(query(db, "SELECT uri, text FROM cleaned_posts WHERE passes_filters"))
    with PerspectiveServer(qps=40) as server:
        perspective = PerspectiveResource(
            api_key=DEFAULT_KEY, base_url=server.url, qps=40, languages=[], use_post_langs=False,
            backoff_base_s=0.05, backoff_max_s=0.5, timeout_s=5, min_text_length=1,
        )  # fmt: skip
        resources = {"perspective": perspective}
        out["score"] = window(["toxicity_scores", *dbt_fed_by("toxicity_scores")], planned, resources)
        out["requested_texts"] = Counter(server.counts)
        out["perspective_rows"] = query(
            db, "SELECT uri, status, partition_date FROM toxicity_scores WHERE scorer = 'perspective' ORDER BY uri"
        )
        out["weights"] = weights_and_summary(db)
        out["rescore"] = window(["toxicity_scores"], planned, resources)
        out["requested_after_rescore"] = Counter(server.counts)
        out["coverage"] = query(
            db, "SELECT day, passing_filters, unaccounted_posts FROM marts.pipeline_coverage ORDER BY day"
        )
        out["summary"] = query(
            db,
            """SELECT scorer, sum(posts_scored), sum(posts_failed), sum(posts_skipped)
               FROM marts.daily_toxicity_summary WHERE attribute = 'toxicity' GROUP BY 1 ORDER BY 1""",
        )
        out["after_rows"] = query(db, "SELECT scorer, count(*) FROM toxicity_scores GROUP BY 1 ORDER BY 1")
        out["replan"] = cli_json(db, PLAN_ARGS)
        # Then the whole window in full: every day becomes a census.
        out["full"] = window(["toxicity_scores", *dbt_fed_by("toxicity_scores")], {"scorer": "perspective"},
                             resources)  # fmt: skip
        out["weights_after_full"] = weights_and_summary(db)
    return out


def weights_and_summary(db: str) -> dict[str, Any]:
    """Perspective's rows with their inclusion probabilities, and the daily TOXICITY summary of every scorer."""
    return {
        "rows": query(
            db,
            """SELECT uri, partition_date, prob_toxicity, inclusion_probability FROM toxicity_scores
               WHERE scorer = 'perspective' AND status = 'ok' ORDER BY uri""",
        ),
        "summary": {
            (scorer, day): rest
            for scorer, day, *rest in query(
                db,
                """SELECT scorer, day, sample, n, n_represented, mean, median, share_ge_0_5
                   FROM marts.daily_toxicity_summary WHERE attribute = 'toxicity'""",
            )
        },
    }


@pytest.mark.integration
def test_setup_runs_succeed(planned_runs):
    for name in ("reference", "embeddings", "distilled"):
        assert planned_runs[name]["result"]["success"], (name, planned_runs[name]["result"]["failures"])
    assert planned_runs["fit"]["result"]["success"], planned_runs["fit"]["result"]["failures"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("run", "cause"),
    [("no_plan", "run `bsky-warehouse perspective plan` first"),
     ("wrong_scorer", "scorer 'profanity-check' scores every post")],
)  # fmt: skip
def test_a_planned_run_that_cannot_work_fails_naming_the_cause(planned_runs, run, cause):
    result = planned_runs[run]["result"]
    assert not result["success"]
    assert any(cause in failure for failure in result["failures"]), result["failures"]


@pytest.mark.integration
def test_plan_spends_the_quota_on_a_stratified_uncertainty_weighted_sample(planned_runs):
    plan, db = planned_runs["plan"], planned_runs["db"]
    eligible = planned_runs["eligible"]
    assert plan["quota"]["requests"] == 36 and plan["posts_allowed"] == PLANNED_POSTS
    assert plan["candidates"] == len(eligible) and plan["already_scored_by_perspective"] == 0
    assert plan["planned"] == len(plan["posts"]) == plan["stored_rows"] == PLANNED_POSTS
    assert plan["distilled_version"] == planned_runs["fit"]["meta"]["model_version"]
    strata = {(s["day"], s["lang"]): s for s in plan["strata"]}
    langs = query(
        db,
        "SELECT partition_date::VARCHAR, coalesce(nullif(lang_primary, ''), 'und'), count(*) FROM cleaned_posts "
        "WHERE passes_filters GROUP BY ALL",
    )
    assert {(d, lang): n for d, lang, n in langs} == {k: s["candidates"] for k, s in strata.items()}
    assert len(strata) <= PLANNED_POSTS and all(s["planned"] >= 1 for s in strata.values())
    # Every eligible post trained the model: its weight comes from the out-of-fold prediction.
    oof = dict(query(db, "SELECT uri, prediction FROM distilled_oof_predictions WHERE attribute = 'prob_toxicity'"))
    for post in plan["posts"]:
        assert post["reason"] == pp.REASON_OUT_OF_FOLD and post["prediction"] == pytest.approx(oof[post["uri"]])
        assert post["weight"] == pytest.approx(uncertainty_weight(post["prediction"]))
    all_weights = [uncertainty_weight(p) for p in oof.values()]
    planned_weights = [p["weight"] for p in plan["posts"]]
    assert sum(planned_weights) / len(planned_weights) > sum(all_weights) / len(all_weights)


@pytest.mark.integration
def test_the_same_inputs_plan_the_same_sample_once_and_a_dry_run_stores_nothing(planned_runs):
    plan, again, dry = planned_runs["plan"], planned_runs["plan_again"], planned_runs["dry_run"]
    assert again["plan_id"] == plan["plan_id"] and again["posts"] == plan["posts"]
    assert dry["plan_id"] != plan["plan_id"] and dry["stored_rows"] == 0
    assert planned_runs["plan_rows"] == [(plan["plan_id"], PLANNED_POSTS)]


@pytest.mark.integration
def test_perspective_scores_only_the_planned_posts_and_leaves_the_rest_unscored(planned_runs):
    score = planned_runs["score"]
    assert score["result"]["success"], score["result"]["failures"]
    planned = {p["uri"] for p in planned_runs["plan"]["posts"]}
    eligible = planned_runs["eligible"]
    assert set(planned_runs["requested_texts"]) == {eligible[u] for u in planned}
    assert all(n == 1 for n in planned_runs["requested_texts"].values())
    rows = planned_runs["perspective_rows"]
    assert {uri for uri, *_ in rows} == planned and all(status == "ok" for _, status, _ in rows)
    metas = score["scores"]  # one per day of the window, each with the window's figures
    assert len(metas) == len(WINDOW.days())
    for meta in metas:
        assert meta["requested"] == meta["planned"] == PLANNED_POSTS
        assert meta["unplanned_not_scored"] == len(eligible) - PLANNED_POSTS
        assert meta["sample"] == "planned" and meta["plan_id"] == planned_runs["plan"]["plan_id"]
    # Other scorers' rows are untouched; nothing unplanned became a failed or skipped row.
    before = dict(planned_runs["before_plan_rows"])
    assert dict(planned_runs["after_rows"]) == {**before, "perspective": PLANNED_POSTS}
    summary = {scorer: tuple(rest) for scorer, *rest in planned_runs["summary"]}
    assert summary["perspective"] == (PLANNED_POSTS, 0, 0)


@pytest.mark.integration
def test_coverage_still_accounts_for_every_post(planned_runs):
    coverage = planned_runs["coverage"]
    assert [str(day) for day, *_ in coverage] == [d.isoformat() for d in WINDOW.days()]
    assert all(unaccounted == 0 for *_, unaccounted in coverage)
    assert sum(passing for _, passing, _ in coverage) == len(planned_runs["eligible"])


@pytest.mark.integration
def test_rescoring_asks_nothing_and_a_new_plan_never_names_a_scored_post(planned_runs):
    assert planned_runs["rescore"]["result"]["success"]
    assert planned_runs["requested_after_rescore"] == planned_runs["requested_texts"]
    assert all(m["requested"] == 0 for m in planned_runs["rescore"]["scores"])
    replan = planned_runs["replan"]
    scored = {uri for uri, *_ in planned_runs["perspective_rows"]}
    assert replan["already_scored_by_perspective"] == PLANNED_POSTS
    assert replan["candidates"] == len(planned_runs["eligible"]) - PLANNED_POSTS
    assert replan["plan_id"] != planned_runs["plan"]["plan_id"]
    assert not scored & {p["uri"] for p in replan["posts"]} and replan["planned"] == PLANNED_POSTS


def hajek(values: list[float], probabilities: list[float]) -> tuple[float, float, float]:
    """The weighted mean, share >= 0.5 and median (smallest value whose cumulative weight reaches half), by hand."""
    weights = [1 / p for p in probabilities]
    total = sum(weights)
    mean = sum(w * v for w, v in zip(weights, values, strict=True)) / total
    share = sum(w for w, v in zip(weights, values, strict=True) if v >= 0.5) / total
    cumulative = 0.0
    for value, weight in sorted(zip(values, weights, strict=True)):
        cumulative += weight
        if cumulative / total >= 0.5 - 1e-12:
            return mean, share, value
    raise AssertionError("weights never reached half")


@pytest.mark.integration
def test_a_planned_day_is_weighted_back_to_the_day_and_a_full_run_makes_it_a_census(planned_runs):
    plan = {p["uri"]: p["inclusion_probability"] for p in planned_runs["plan"]["posts"]}
    weights = planned_runs["weights"]
    rows = weights["rows"]
    # Every scored post carries the probability the plan drew it with.
    assert {uri: pi for uri, _, _, pi in rows} == pytest.approx(plan)
    assert any(pi < 1 for pi in plan.values())
    by_day: dict[date, list[tuple[float, float]]] = {}
    for _, day, value, pi in rows:
        by_day.setdefault(day, []).append((value, pi))
    for day, pairs in by_day.items():
        sample, n, represented, mean, median, share = weights["summary"][("perspective", day)]
        values, probabilities = [v for v, _ in pairs], [p for _, p in pairs]
        expected_mean, expected_share, expected_median = hajek(values, probabilities)
        assert n == len(pairs)
        assert sample == ("census" if all(p == 1 for p in probabilities) else "weighted")
        assert represented == pytest.approx(sum(1 / p for p in probabilities))
        assert mean == pytest.approx(expected_mean) and share == pytest.approx(expected_share)
        assert median == pytest.approx(expected_median)
    assert any(weights["summary"][("perspective", day)][0] == "weighted" for day in by_day)
    # A scorer that scored every post is a census, its mean the plain one.
    reference = {day: rest for (scorer, day), rest in weights["summary"].items() if scorer == REFERENCE_SCORER}
    assert reference and all(sample == "census" and represented == n for sample, n, represented, *_ in
                             reference.values())  # fmt: skip

    full = planned_runs["full"]
    assert full["result"]["success"], full["result"]["failures"]
    after = planned_runs["weights_after_full"]
    assert len(after["rows"]) == len(planned_runs["eligible"])
    assert all(pi == 1.0 for *_, pi in after["rows"])
    for day in WINDOW.days():
        sample, n, represented, mean, *_ = after["summary"][("perspective", day)]
        values = [v for _, d, v, _ in after["rows"] if d == day]
        assert sample == "census" and n == represented == len(values)
        assert mean == pytest.approx(sum(values) / len(values))


def test_record_inclusion_sets_the_plan_probabilities_and_one_elsewhere_and_rewrites_nothing_twice():
    from bsky_warehouse.schema import COLUMNS_ADDED, TABLES

    con = duckdb.connect()
    for ddl in (*TABLES.values(), *COLUMNS_ADDED):
        con.execute(ddl)
    day = date(2024, 3, 10)
    for uri, scorer in (("a", "perspective"), ("b", "perspective"), ("c", "perspective"), ("a", "other")):
        con.execute(
            "INSERT INTO toxicity_scores (uri, scorer, scorer_version, status, scored_at, partition_date) "
            "VALUES ($u, $s, 'v', 'ok', now(), $d)",
            {"u": uri, "s": scorer, "d": day},
        )
    con.execute("UPDATE toxicity_scores SET inclusion_probability = 0.5 WHERE uri = 'c'")
    for uri, probability in (("a", 0.25), ("b", 0.75)):
        con.execute(
            "INSERT INTO perspective_plan VALUES ('P', now(), $u, $d, 'en', 1, $p, NULL, 'no_prediction', NULL, '{}')",
            {"u": uri, "d": day, "p": probability},
        )

    def probabilities() -> dict[tuple[str, str], float]:
        rows = con.execute("SELECT uri, scorer, inclusion_probability FROM toxicity_scores").fetchall()
        return {(uri, scorer): p for uri, scorer, p in rows}

    assert pp.record_inclusion(con, "perspective", "P", day) == 3
    assert probabilities() == {("a", "perspective"): 0.25, ("b", "perspective"): 0.75, ("c", "perspective"): 1.0,
                               ("a", "other"): 1.0}  # fmt: skip
    assert pp.record_inclusion(con, "perspective", "P", day) == 0
    assert pp.record_inclusion(con, "perspective", None, day) == 2
    assert set(probabilities().values()) == {1.0}
    assert pp.record_inclusion(con, "perspective", None, day) == 0
