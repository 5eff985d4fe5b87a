"""The distilled Perspective scorer: the pure pieces (features, folding, nested CV, versions), the scorer, and the
fit, scoring and agreement materialized through Dagster over the shipped sample with the 2024 reference scores."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import duckdb
import numpy as np
import pytest
from dagster import DagsterInstance

from bsky_warehouse import distill, distill_fit
from bsky_warehouse.distill import (
    DistillError,
    DistillParams,
    TrainingSet,
    attribute_column,
    design_matrix,
    text_features,
    trainable_attributes,
)
from bsky_warehouse.distill_fit import (
    cross_validate_attribute,
    fit_distilled,
    fold_pipeline,
    make_pipeline,
    model_version,
    select_and_fit,
)
from bsky_warehouse.evaluation import evaluated_on, scorer_agreement
from bsky_warehouse.metrics import pearson, roc_auc, spearman
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_job, run_window
from bsky_warehouse.project import SAMPLE_DIR
from bsky_warehouse.records import PostText, ScoreResult
from bsky_warehouse.reference import REFERENCE_SCORER
from bsky_warehouse.schema import EMBEDDING_DIM
from bsky_warehouse.scorers import DistilledScorer
from tests.test_topics import materialized

SAMPLE = DayWindow(date(2024, 3, 8), date(2024, 3, 20))
INGEST = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"]
AGREEMENT_DBT = ["stg_toxicity_scores", "scorer_agreement_figures", "scorer_agreement"]
LIVE = "perspective"


def uris(n: int) -> list[str]:
    return [f"at://did:plc:test/app.bsky.feed.post/{i:05d}" for i in range(n)]


def synthetic(n: int = 120, seed: int = 0) -> tuple[TrainingSet, np.ndarray]:
    """Unit embeddings from 5 latent factors, a toxicity that follows the first, noise text features, a nuance
    score of pure noise on two posts in three, and 4 anchors."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 5))
    vectors = factors @ rng.normal(size=(5, EMBEDDING_DIM)) + 0.5 * rng.normal(size=(n, EMBEDDING_DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    toxicity = distill.sigmoid(1.5 * factors[:, 0] + rng.normal(0, 0.3, n))
    nuance = np.where(np.arange(n) % 3 == 0, np.nan, rng.uniform(0, 1, n))
    text = rng.normal(size=(n, len(distill.TEXT_FEATURES)))
    targets = {"prob_toxicity": toxicity, "prob_nuance": nuance}
    sources = {c: ["ref"] * n for c in targets}
    anchors = rng.normal(size=(4, EMBEDDING_DIM))
    return TrainingSet(uris(n), vectors.astype(np.float32), text, targets, sources), anchors


# Pure pieces -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "column"),
    [("TOXICITY", "prob_toxicity"), ("toxicity", "prob_toxicity"), ("prob_nuance", "prob_nuance"),
     ("AFFINITY_EXPERIMENTAL", "prob_affinity"), ("moral_outrage", "prob_moral_outrage")],
)  # fmt: skip
def test_attribute_names_map_to_columns(name, column):
    assert attribute_column(name) == column


def test_unknown_attribute_and_family_are_refused():
    with pytest.raises(DistillError, match="unknown attribute 'HAPPINESS'"):
        attribute_column("HAPPINESS")
    with pytest.raises(DistillError, match="unknown model family 'forest'"):
        DistillParams(family="forest").text_weights()


def test_text_features_read_profanity_and_counts_deterministically():
    texts = ["What a lovely morning in the park.", "Shut up you fucking idiot!!", "", "Why? WHY?"]
    features = text_features(texts)
    assert features.shape == (4, len(distill.TEXT_FEATURES))
    assert np.array_equal(features, text_features(texts))
    column = {name: i for i, name in enumerate(distill.TEXT_FEATURES)}
    assert features[1, column["profanity_logit"]] > features[0, column["profanity_logit"]] + 2
    assert features[1, column["profane_terms"]] > features[0, column["profane_terms"]]
    assert features[1, column["strong_terms"]] == 3 and features[0, column["strong_terms"]] == 0  # shut, fucking, idiot
    assert (
        features[1, column["strongest_weight"]] > distill.STRONG_TERM_WEIGHT > features[0, column["strongest_weight"]]
    )
    assert features[1, column["exclamations"]] == 2 and features[3, column["questions"]] == 2
    assert features[1, column["second_person"]] == 1 and features[3, column["caps_share"]] == pytest.approx(4 / 6)
    assert text_features([]).shape == (0, len(distill.TEXT_FEATURES))


def test_folded_head_predicts_what_the_fitted_pipeline_does():
    training, anchors = synthetic()
    x = design_matrix(training.embeddings, training.text, anchors)
    z = distill.logit(training.targets["prob_toxicity"])
    pipeline = make_pipeline(0.4).fit(x, z)
    head = fold_pipeline("prob_toxicity", pipeline, anchors, training.text.shape[1])
    fresh = np.random.default_rng(9)
    vectors, text = fresh.normal(size=(30, EMBEDDING_DIM)), fresh.normal(size=(30, training.text.shape[1]))
    expected = distill.sigmoid(pipeline.predict(design_matrix(vectors, text, anchors)))
    assert np.allclose(head.predict(vectors, text), expected, atol=1e-9)
    assert head.text_weight == 0.4 and head.alpha in distill.ALPHAS


def test_nested_cv_never_predicts_a_row_with_a_model_fitted_on_it(monkeypatch):
    """Spy on every pipeline fitted: no row it predicts was among its training rows, inner folds included; the
    outer folds predict every row exactly once."""
    training, anchors = synthetic(60)
    x = design_matrix(training.embeddings, training.text, anchors)
    x[:, 0] = np.arange(len(x))  # column 0 names the row
    predictions: list[tuple[set[float], list[float]]] = []
    real = distill_fit.make_pipeline

    class Spy:
        def __init__(self, weight):
            self.inner = real(weight)

        def fit(self, rows, z):
            self.trained = set(rows[:, 0].tolist())
            self.inner.fit(rows, z)
            return self

        def predict(self, rows):
            predictions.append((self.trained, rows[:, 0].tolist()))
            return self.inner.predict(rows)

        @property
        def named_steps(self):
            return self.inner.named_steps

    monkeypatch.setattr(distill_fit, "make_pipeline", Spy)
    monkeypatch.setattr(distill_fit, "clone", lambda estimator: Spy(estimator.inner.named_steps["extras"].weight))
    y = training.targets["prob_toxicity"][:60]
    n_text = len(distill.TEXT_FEATURES)
    oof, fold, weights, _ = cross_validate_attribute("prob_toxicity", x, y, DistillParams(), anchors, n_text)
    assert predictions and all(not trained & set(predicted) for trained, predicted in predictions)
    everything = set(range(60))
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4] and len(weights) == 5
    for k in range(5):
        test = set(np.flatnonzero(fold == k).tolist())
        assert any(set(p) == test and t == everything - test for t, p in predictions), k
    assert np.all((oof > 0) & (oof < 1))


def test_cross_validation_recovers_a_learnable_target_and_not_noise():
    training, anchors = synthetic(150)
    model, fits = fit_distilled(training, DistillParams(), "synthetic", ["ref"], anchors)
    figures = {f.attribute: f.figures() for f in fits}
    assert figures["prob_toxicity"]["spearman"] > 0.6
    assert figures["prob_toxicity"]["n"] == 150
    assert figures["prob_nuance"]["n"] == 100  # a third of the posts have no nuance score
    assert abs(figures["prob_nuance"]["spearman"]) < 0.3  # uniform noise: out of fold nothing is learnt
    assert set(model.heads) == {"prob_toxicity", "prob_nuance"}


def test_selection_sees_only_the_rows_it_is_given():
    training, anchors = synthetic(80)
    x = design_matrix(training.embeddings, training.text, anchors)
    z = distill.logit(training.targets["prob_toxicity"])
    pipeline, weight = select_and_fit(x, z, DistillParams(), seed=1)
    again, weight_again = select_and_fit(x.copy(), z.copy(), DistillParams(), seed=1)
    assert weight == weight_again and weight in distill.FAMILIES["ridge"]
    assert np.allclose(pipeline.predict(x), again.predict(x))
    _, w0 = select_and_fit(x, z, DistillParams(family="ridge-embeddings"), seed=1)
    assert w0 == 0.0


def test_trainable_attributes_need_enough_scores():
    training, _ = synthetic(60)
    assert trainable_attributes(training, None, 40) == ["prob_toxicity", "prob_nuance"]  # 40 nuance scores
    assert trainable_attributes(training, None, 41) == ["prob_toxicity"]
    assert trainable_attributes(training, ["nuance", "TOXICITY"], 40) == ["prob_toxicity", "prob_nuance"]
    with pytest.raises(DistillError, match="too few training scores"):
        trainable_attributes(training, ["NUANCE"], 41)
    with pytest.raises(DistillError, match="no attribute has"):
        trainable_attributes(training, None, 61)


def test_version_digests_data_features_and_parameters():
    training, anchors = synthetic(50)
    columns = ["prob_toxicity"]
    base = model_version(training, columns, DistillParams(), "m", ["ref"], anchors)
    assert base == model_version(training, columns, DistillParams(), "m", ["ref"], anchors.copy())
    assert base.startswith("distilled-") and len(base) == len("distilled-") + 16
    changed_target = TrainingSet(
        training.uris, training.embeddings, training.text,
        {**training.targets, "prob_toxicity": training.targets["prob_toxicity"] + 1e-6}, training.sources,
    )  # fmt: skip
    changed_embedding = TrainingSet(
        training.uris, training.embeddings[::-1].copy(), training.text, training.targets, training.sources
    )
    others = {
        model_version(changed_target, columns, DistillParams(), "m", ["ref"], anchors),
        model_version(changed_embedding, columns, DistillParams(), "m", ["ref"], anchors),
        model_version(training, columns, DistillParams(seed=1), "m", ["ref"], anchors),
        model_version(training, columns, DistillParams(family="ridge-embeddings"), "m", ["ref"], anchors),
        model_version(training, columns, DistillParams(), "other-model", ["ref"], anchors),
        model_version(training, columns, DistillParams(), "m", ["live", "ref"], anchors),
        model_version(training, columns, DistillParams(), "m", ["ref"], anchors + 1e-3),
        model_version(training, ["prob_toxicity", "prob_nuance"], DistillParams(), "m", ["ref"], anchors),
    }
    assert base not in others and len(others) == 8


def test_fit_is_deterministic():
    training, anchors = synthetic(60)
    first, fits = fit_distilled(training, DistillParams(), "m", ["ref"], anchors, ["TOXICITY"])
    second, fits_again = fit_distilled(training, DistillParams(), "m", ["ref"], anchors, ["TOXICITY"])
    assert first.version == second.version
    assert np.array_equal(fits[0].oof, fits_again[0].oof)
    assert np.array_equal(first.heads["prob_toxicity"].embedding_coef, second.heads["prob_toxicity"].embedding_coef)


def test_distilled_scorer_leaves_posts_without_embedding_for_later_and_keeps_order():
    training, anchors = synthetic(60)
    model, _ = fit_distilled(training, DistillParams(), "m", ["ref"], anchors, ["TOXICITY"])
    stored = {u: v for u, v in zip(training.uris[:3], training.embeddings[:3], strict=True)}
    posts = [PostText(training.uris[0], "hello there"), PostText(training.uris[5], "no embedding yet"),
             PostText(training.uris[1], "  "), PostText(training.uris[2], "you idiot")]  # fmt: skip
    results: list[ScoreResult] = []
    asked: list[list[str]] = []

    def lookup(wanted):
        asked.append(wanted)
        return {u: stored[u] for u in wanted if u in stored}

    stats = DistilledScorer(model, lookup, batch_size=2).score(posts, results.append)
    assert stats == {"without_embedding": 1}
    assert [(r.uri, r.status, r.reason) for r in results] == [
        (training.uris[0], "ok", None), (training.uris[1], "skipped", "text_too_short"), (training.uris[2], "ok", None)
    ]  # fmt: skip
    assert asked == [[training.uris[0], training.uris[5]], [training.uris[2]]]
    expected = model.predict(np.stack([stored[training.uris[2]]]), text_features(["you idiot"]))["prob_toxicity"]
    assert results[2].probs == {"prob_toxicity": pytest.approx(float(expected[0]), abs=1e-12)}


@pytest.mark.parametrize(
    ("n", "n_oof", "is_distilled", "expected"),
    [(10, 0, False, "as_scored"), (10, 10, True, "out_of_fold"), (10, 0, True, "held_out"),
     (10, 4, True, "out_of_fold+held_out")],
)  # fmt: skip
def test_evaluated_on_names_what_was_compared(n, n_oof, is_distilled, expected):
    assert evaluated_on(n, n_oof, is_distilled) == expected


# Through Dagster over the shipped sample -------------------------------------------------------------------------


def rows(db: str, sql: str, params: dict | None = None) -> list[tuple]:
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(sql, params or {}).fetchall()
    finally:
        con.close()


def scores_of(db: str, scorer: str) -> list[tuple]:
    return rows(db, "SELECT * FROM toxicity_scores WHERE scorer = $s ORDER BY uri", {"s": scorer})


def add_live_scores(db: str, share: int) -> int:
    """Live `perspective` rows for every `share`-th reference post (its TOXICITY and NUANCE, as if re-scored)."""
    con = duckdb.connect(db)
    try:
        con.execute(
            """INSERT INTO toxicity_scores BY NAME
               SELECT uri, $live AS scorer, 'live-test' AS scorer_version, status, reason, $now AS scored_at,
                      partition_date, prob_toxicity, prob_nuance
               FROM toxicity_scores WHERE scorer = $ref AND status = 'ok' AND hash(uri) % $share = 0""",
            {"live": LIVE, "ref": REFERENCE_SCORER, "now": datetime(2026, 11, 30, tzinfo=UTC), "share": share},
        )
        return con.execute("SELECT count(*) FROM toxicity_scores WHERE scorer = $l", {"l": LIVE}).fetchall()[0][0]
    finally:
        con.close()


@pytest.fixture(scope="module")
def distilled_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = str(tmp_path_factory.mktemp("distill") / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    out: dict[str, Any] = {"db": db}

    def window(name: str, assets: list[str], ops: dict[str, Any] | None = None) -> None:
        result = run_window(SAMPLE, instance, db_path=db, archive_dir=str(SAMPLE_DIR), assets=assets,
                            run_config={"ops": ops or {}}, raise_on_error=False, log_level="WARNING")  # fmt: skip
        out[name] = {"result": result, "scores": materialized(instance, result["run_id"], "toxicity_scores")}

    def fit(name: str, **config: Any) -> None:
        result = run_job("distill_perspective", instance, db_path=db, raise_on_error=False, log_level="WARNING",
                         run_config={"ops": {"distilled_models": {"config": config}}})  # fmt: skip
        metas = materialized(instance, result["run_id"], "distilled_models")
        out[name] = {"result": result, "meta": metas[0] if metas else None}

    def distilled(version: str | None = None) -> dict[str, Any]:
        return {"toxicity_scores": {"config": {"scorer": "perspective-distilled", "distilled_version": version}}}

    # Ingest and the 2024 reference scores; then score with no model stored yet (fails, naming the job).
    window("reference", [*INGEST, "toxicity_scores"], {"toxicity_scores": {"config": {"scorer": REFERENCE_SCORER}}})
    window("no_model", ["toxicity_scores"], distilled())
    window("embeddings", ["post_embeddings"])
    attributes = ["TOXICITY", "NUANCE"]
    fit("fit", training_scorers=[REFERENCE_SCORER], attributes=attributes)
    out["after_fit"] = {t: rows(db, f"SELECT * FROM {t} ORDER BY ALL") for t in ("distilled_oof_predictions",)}
    fit("refit", training_scorers=[REFERENCE_SCORER], attributes=attributes)
    window("score", ["toxicity_scores", *AGREEMENT_DBT], distilled())
    out["scores_first"] = scores_of(db, "perspective-distilled")
    out["score_summary"] = rows(
        db,
        """SELECT count(*) FILTER (WHERE scorer_version = $v AND status = 'ok'),
                  count(*) FILTER (WHERE prob_toxicity BETWEEN 0 AND 1 AND prob_nuance BETWEEN 0 AND 1),
                  count(*) FILTER (WHERE prob_insult IS NOT NULL)
           FROM toxicity_scores WHERE scorer = 'perspective-distilled'""",
        {"v": out["fit"]["meta"]["model_version"]},
    )[0]
    window("rescore", ["toxicity_scores", *AGREEMENT_DBT], distilled())
    out["scores_again"] = scores_of(db, "perspective-distilled")
    out["agreement_all_oof"] = rows(db, "SELECT * FROM marts.scorer_agreement ORDER BY ALL")
    # A model trained on live scores of about a third of the posts scores everything: the rest are held out.
    out["live_rows"] = add_live_scores(db, 3)
    fit("live_fit", training_scorers=[LIVE], attributes=attributes)
    window("live_score", ["toxicity_scores", *AGREEMENT_DBT], distilled(out["live_fit"]["meta"]["model_version"]))
    out["python_agreement"] = scorer_agreement(duckdb.connect(db, read_only=True))
    out["mart"] = rows(
        db,
        """SELECT scorer, reference, attribute, n, pearson, spearman, auc, n_out_of_fold, evaluated_on
           FROM marts.scorer_agreement ORDER BY ALL""",
    )
    fit("unknown_family", training_scorers=[REFERENCE_SCORER], model_family="forest")
    return out


@pytest.mark.integration
@pytest.mark.parametrize(
    ("run", "cause"),
    [("no_model", "run the job distill_perspective"), ("unknown_family", "unknown model family 'forest'")],
)
def test_a_run_that_cannot_work_fails_naming_the_cause(distilled_runs, run, cause):
    """Scoring before any fit, and a fit of an unknown family."""
    result = distilled_runs[run]["result"]
    assert not result["success"]
    assert any(cause in failure for failure in result["failures"])


@pytest.mark.integration
def test_fit_records_cross_validated_figures_per_attribute(distilled_runs):
    fit = distilled_runs["fit"]
    assert fit["result"]["success"], fit["result"]["failures"]
    meta = fit["meta"]
    assert meta["model"] == "fitted" and meta["attributes"] == 2
    figures = meta["cv"]
    assert set(figures) == {"toxicity", "nuance"}
    eligible = rows(distilled_runs["db"], "SELECT count(*) FROM cleaned_posts WHERE passes_filters")[0][0]
    assert figures["toxicity"]["n"] == meta["training_posts"] == eligible == 358
    assert meta["without_embedding"] == 0
    # On the real 2024 scores: well above profanity-check's 0.54, and the 0.80 target met.
    assert figures["toxicity"]["spearman"] >= 0.80
    assert figures["toxicity"]["auc"] > 0.9
    assert figures["nuance"]["spearman"] > 0.7
    assert meta["cv_spearman_toxicity"] == figures["toxicity"]["spearman"]
    assert "| toxicity | 358 |" in meta["cv_figures"]
    stored = rows(
        distilled_runs["db"],
        "SELECT attribute, n_train, cv_spearman, cv_folds FROM distilled_models WHERE model_version = $v ORDER BY 1",
        {"v": meta["model_version"]},
    )
    assert stored == [("prob_nuance", 358, pytest.approx(figures["nuance"]["spearman"]), 5),
                      ("prob_toxicity", 358, pytest.approx(figures["toxicity"]["spearman"]), 5)]  # fmt: skip


@pytest.mark.integration
def test_out_of_fold_predictions_are_stored_for_every_training_post(distilled_runs):
    db, version = distilled_runs["db"], distilled_runs["fit"]["meta"]["model_version"]
    oof = rows(
        db,
        """SELECT o.attribute, o.uri, o.target, o.prediction, s.prob_toxicity, s.prob_nuance
           FROM distilled_oof_predictions o JOIN toxicity_scores s ON s.uri = o.uri AND s.scorer = $ref
           WHERE o.model_version = $v""",
        {"v": version, "ref": REFERENCE_SCORER},
    )
    assert len(oof) == 2 * 358
    for attribute, _, target, prediction, toxicity, nuance in oof:
        assert target == (toxicity if attribute == "prob_toxicity" else nuance)
        assert 0 < prediction < 1
    toxicity = [(p, t) for a, _, t, p, *_ in oof if a == "prob_toxicity"]
    figure = distilled_runs["fit"]["meta"]["cv"]["toxicity"]["spearman"]
    assert spearman([p for p, _ in toxicity], [t for _, t in toxicity]) == pytest.approx(figure, abs=1e-12)


@pytest.mark.integration
def test_refit_over_the_same_data_keeps_the_version_and_changes_nothing(distilled_runs):
    first, refit = distilled_runs["fit"]["meta"], distilled_runs["refit"]["meta"]
    assert refit["model"] == "refitted_unchanged"
    assert refit["model_version"] == first["model_version"]
    assert refit["cv"] == first["cv"]
    db = distilled_runs["db"]
    assert rows(db, "SELECT * FROM distilled_oof_predictions ORDER BY ALL") != []
    versions = rows(db, "SELECT DISTINCT model_version FROM distilled_oof_predictions ORDER BY 1")
    assert first["model_version"] in {v for (v,) in versions}


@pytest.mark.integration
def test_other_training_data_is_a_new_version(distilled_runs):
    live = distilled_runs["live_fit"]["meta"]
    assert distilled_runs["live_fit"]["result"]["success"]
    assert live["model"] == "fitted"
    assert live["model_version"] != distilled_runs["fit"]["meta"]["model_version"]
    assert live["training_posts"] == distilled_runs["live_rows"]


@pytest.mark.integration
def test_scoring_writes_every_eligible_post_with_the_stored_version(distilled_runs):
    assert distilled_runs["score"]["result"]["success"], distilled_runs["score"]["result"]["failures"]
    version = distilled_runs["fit"]["meta"]["model_version"]
    scores = distilled_runs["scores_first"]
    assert len(scores) == 358
    assert distilled_runs["score_summary"] == (358, 358, 0)
    metas = distilled_runs["score"]["scores"]
    assert metas and all(m["scorer_version"] == version and m["without_embedding"] == 0 for m in metas)


@pytest.mark.integration
def test_rescoring_a_day_with_the_same_version_changes_nothing(distilled_runs):
    assert distilled_runs["rescore"]["result"]["success"], distilled_runs["rescore"]["result"]["failures"]
    assert distilled_runs["scores_again"] == distilled_runs["scores_first"]
    assert all(m["requested"] == 0 for m in distilled_runs["rescore"]["scores"])


@pytest.mark.integration
def test_agreement_on_training_posts_reads_only_out_of_fold_predictions(distilled_runs):
    """Every post of the reference is a training post of the first model: agreement is the CV figure, not the
    (better) agreement of the refitted model's own scores with the scores it was fitted on."""
    db = distilled_runs["db"]
    mart = {(r[0], r[1], r[2]): r for r in distilled_runs["agreement_all_oof"]}
    columns = [c for c, *_ in duckdb.connect(db, read_only=True).execute("DESCRIBE marts.scorer_agreement").fetchall()]
    row = dict(zip(columns, mart[("perspective-distilled", REFERENCE_SCORER, "toxicity")], strict=True))
    assert row["n"] == row["n_out_of_fold"] == 358 and row["evaluated_on"] == "out_of_fold"
    cv = distilled_runs["fit"]["meta"]["cv"]["toxicity"]
    assert row["spearman"] == pytest.approx(cv["spearman"], abs=1e-9)
    assert row["pearson"] == pytest.approx(cv["pearson"], abs=1e-9)
    assert row["auc"] == pytest.approx(cv["auc"], abs=1e-9)
    refit_scores = rows(
        db,
        """SELECT d.prob_toxicity, r.prob_toxicity FROM toxicity_scores d JOIN toxicity_scores r USING (uri)
           WHERE d.scorer = 'perspective-distilled' AND r.scorer = $ref""",
        {"ref": REFERENCE_SCORER},
    )
    in_sample = spearman([a for a, _ in refit_scores], [b for _, b in refit_scores])
    assert in_sample > row["spearman"] + 0.02  # what counting the training posts' own scores would have claimed


@pytest.mark.integration
def test_held_out_posts_are_compared_on_their_scores_training_posts_on_out_of_fold(distilled_runs):
    """The live model saw a third of the posts: those count out of fold, the rest with the scores it wrote."""
    db = distilled_runs["db"]
    assert distilled_runs["live_score"]["result"]["success"], distilled_runs["live_score"]["result"]["failures"]
    version = distilled_runs["live_fit"]["meta"]["model_version"]
    pairs = rows(
        db,
        """SELECT d.uri, d.prob_toxicity, o.prediction, r.prob_toxicity FROM toxicity_scores d
           JOIN toxicity_scores r ON r.uri = d.uri AND r.scorer = $ref
           LEFT JOIN distilled_oof_predictions o
             ON o.model_version = d.scorer_version AND o.uri = d.uri AND o.attribute = 'prob_toxicity'
           WHERE d.scorer = 'perspective-distilled' AND d.scorer_version = $v ORDER BY d.uri""",
        {"ref": REFERENCE_SCORER, "v": version},
    )
    trained = {u for (u,) in rows(db, "SELECT uri FROM toxicity_scores WHERE scorer = $l", {"l": LIVE})}
    assert {u for u, _, oof, _ in pairs if oof is not None} == trained
    values = [oof if oof is not None else score for _, score, oof, _ in pairs]
    reference = [r for *_, r in pairs]
    python = {(r["scorer"], r["attribute"]): r for r in distilled_runs["python_agreement"]}
    row = python[("perspective-distilled", "toxicity")]
    assert row["n"] == 358 and row["n_out_of_fold"] == len(trained) < 358
    assert row["evaluated_on"] == "out_of_fold+held_out"
    assert row["spearman"] == pytest.approx(spearman(values, reference), abs=1e-12)
    assert row["pearson"] == pytest.approx(pearson(values, reference), abs=1e-12)
    assert row["auc"] == pytest.approx(roc_auc(values, [r >= 0.5 for r in reference]), abs=1e-12)
    mart = {(r[0], r[1], r[2]): r for r in distilled_runs["mart"]}
    for (scorer, attribute), figures in python.items():
        got = mart[(scorer, REFERENCE_SCORER, attribute)]
        assert got[3] == figures["n"] and got[7] == figures["n_out_of_fold"] and got[8] == figures["evaluated_on"]
        for value, expected in zip(got[4:7], (figures["pearson"], figures["spearman"], figures["auc"]), strict=True):
            assert value == pytest.approx(expected, abs=1e-9)
    live_vs_reference = python[(LIVE, "toxicity")]
    assert live_vs_reference["evaluated_on"] == "as_scored"
