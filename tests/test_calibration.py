"""Personal calibration: cross-validation that holds folds out, the 40-judgement floor, idempotent refits,
projection over every post, and the real 2024 hand labels against the recorded GPT-4 labels."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from bsky_warehouse import calibration, calibration_fit
from bsky_warehouse.calibration import (
    MIN_JUDGEMENTS,
    CalibrationError,
    Judged,
    NotEnoughJudgements,
    System,
    run_calibration,
)
from bsky_warehouse.calibration_fit import cross_validate
from bsky_warehouse.evaluation import HAND_LABEL_SEED
from bsky_warehouse.label_files import normalize_sociopolitical
from bsky_warehouse.project import REFERENCE_DIR

NOW = datetime(2024, 3, 20, tzinfo=UTC)
DAYS = [date(2024, 3, 10), date(2024, 3, 11), date(2024, 3, 12)]


def uris(n: int) -> list[str]:
    return [f"at://did:plc:test/app.bsky.feed.post/{i:05d}" for i in range(n)]


def rater_of(scores: np.ndarray, rng: np.random.Generator, noise: float = 0.4) -> np.ndarray:
    """A rater far stricter than the scorer: 0–4 ratings following sqrt(score), rounded, with noise."""
    return np.clip(np.round(4 * np.sqrt(scores) + rng.normal(0, noise, scores.size)), 0, 4)


# Pure cross-validation -----------------------------------------------------------------------------------


def test_calibrated_model_beats_a_miscalibrated_system_out_of_fold():
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 1, 200)
    judged = Judged(uris(200), scores, rater_of(scores, rng) / 4)
    cv = cross_validate("toxicity", judged, with_embeddings=False)
    assert cv.metric == "mae"
    assert cv.error_system == pytest.approx(float(np.mean(np.abs(scores - judged.target))))
    assert cv.error_calibrated < 0.7 * cv.error_system
    assert cv.error_calibrated < 0.7 * cv.error_baseline
    assert cv.brier_calibrated < cv.brier_system
    assert [f["n"] for f in cv.per_fold] == [40] * 5


def test_pure_noise_rater_gets_chance_error_not_zero():
    """Judgements unrelated to anything, 384 random embedding dimensions for 60 posts: a model that saw the
    held-out posts could fit them exactly; out of fold it can do no better than the constant."""
    rng = np.random.default_rng(2)
    n = 60
    embeddings = rng.normal(size=(n, 384)).astype(np.float32)
    toxicity = Judged(uris(n), rng.uniform(0, 1, n), rng.integers(0, 5, n) / 4, embeddings)
    cv = cross_validate("toxicity", toxicity, with_embeddings=True)
    assert cv.error_calibrated > 0.85 * cv.error_baseline
    assert cv.error_baseline > 0.2  # chance on a uniform 0–4 rating is about 0.3

    labels = np.tile([0.0, 1.0], n // 2)
    sociopolitical = Judged(uris(n), rng.integers(0, 2, n).astype(float), rng.permutation(labels), embeddings)
    cv = cross_validate("sociopolitical", sociopolitical, with_embeddings=True)
    assert cv.metric == "error_rate"
    assert cv.error_calibrated > 0.3


def test_every_fold_is_fitted_without_the_posts_it_predicts(monkeypatch):
    """Spy on every pipeline the cross-validation fits: no post it predicts was in its training rows, and every
    post is predicted exactly once."""
    seen: list[tuple[set[float], list[float]]] = []
    real_clone = calibration_fit.clone

    class Spy:
        def __init__(self, estimator):
            self.estimator = estimator

        def fit(self, x, y):
            seen.append(({float(v) for v in x[:, 0]}, []))
            self.estimator.fit(x, y)
            return self

        def predict(self, x):
            seen[-1][1].extend(float(v) for v in x[:, 0])
            return self.estimator.predict(x)

    monkeypatch.setattr(calibration_fit, "clone", lambda estimator: Spy(real_clone(estimator)))
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 1, 97)  # distinct values identify the posts
    cross_validate("toxicity", Judged(uris(97), scores, rater_of(scores, rng) / 4), with_embeddings=False)
    assert len(seen) == calibration.FOLDS
    for trained, predicted in seen:
        assert not trained & set(predicted)
        assert len(trained) + len(predicted) == 97
    assert sorted(v for _, predicted in seen for v in predicted) == sorted(scores.tolist())


def test_embeddings_that_carry_nothing_about_the_rater_are_not_projected():
    rng = np.random.default_rng(6)
    scores = rng.uniform(0, 1, 120)
    judged = Judged(uris(120), scores, rater_of(scores, rng) / 4, rng.normal(size=(120, 384)).astype(np.float32))
    fitted = calibration_fit.calibrate("toxicity", judged, use_embeddings=True, embedding_model="noise")
    alone, with_embeddings = fitted
    assert with_embeddings.cv.error_calibrated > alone.cv.error_calibrated
    assert calibration_fit.choose_projection(fitted) is alone
    assert alone.version != with_embeddings.version


# Against the warehouse -----------------------------------------------------------------------------------


def add_scores(con, scorer: str, values: dict[str, float | None]) -> None:
    rows = [
        (uri, scorer, "1", "ok" if p is not None else "failed", None if p is not None else "api_error", NOW,
         DAYS[i % len(DAYS)], p)
        for i, (uri, p) in enumerate(values.items())
    ]  # fmt: skip
    con.executemany(
        """INSERT INTO toxicity_scores (uri, scorer, scorer_version, status, reason, scored_at, partition_date,
                                        prob_toxicity) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        rows,
    )


def add_judgements(con, rater: str, task: str, values: dict[str, float]) -> None:
    con.executemany(
        "INSERT INTO human_judgements VALUES (?, ?, ?, ?, ?, 'test.csv', ?, ?)",
        [
            (uri, rater, task, v, None if task == "toxicity" else ("yes" if v else "no"), line, NOW)
            for line, (uri, v) in enumerate(values.items(), start=2)
        ],
    )


def add_labels(con, labeler: str, model: str, prompt_version: str, values: dict[str, bool], at: datetime) -> None:
    con.executemany(
        """INSERT INTO llm_labels (uri, labeler, model, prompt_version, status, is_sociopolitical, labeled_at,
                                   partition_date) VALUES (?, ?, ?, ?, 'ok', ?, ?, ?)""",
        [
            (uri, labeler, model, prompt_version, v, at, DAYS[i % len(DAYS)])
            for i, (uri, v) in enumerate(values.items())
        ],
    )


def table(con, name: str) -> list[tuple]:
    exclude = " EXCLUDE (fitted_at)" if name == "rater_calibrations" else ""
    return con.execute(f"SELECT *{exclude} FROM {name} ORDER BY ALL").fetchall()


@pytest.fixture
def scored(warehouse):
    """150 scored posts (plus 3 failed), a strict rater who judged 90 of them (5 of those 'unsure')."""
    rng = np.random.default_rng(4)
    posts = uris(153)
    scores = rng.uniform(0, 1, 150)
    with warehouse.connect() as con:
        add_scores(con, "synthetic", {**dict(zip(posts, scores, strict=False)), **dict.fromkeys(posts[150:])})
        ratings = rater_of(scores[:90], rng)
        ratings[:5] = -1.0
        add_judgements(con, "strict", "toxicity", dict(zip(posts[:90], ratings, strict=True)))
    return warehouse


def test_fewer_than_40_usable_judgements_is_an_error_naming_the_rater(warehouse):
    posts = uris(60)
    with warehouse.connect() as con:
        add_scores(con, "synthetic", {u: 0.5 for u in posts})
        # 44 judgements of scored posts, 5 of them unsure, plus 10 of posts the scorer never saw: 39 usable.
        add_judgements(con, "few", "toxicity", {**{u: 2.0 for u in posts[:39]}, **{u: -1.0 for u in posts[39:44]}})
        add_judgements(
            con, "few", "toxicity", {f"at://did:plc:elsewhere/app.bsky.feed.post/{i}": 1.0 for i in range(10)}
        )
    with pytest.raises(NotEnoughJudgements) as err:
        run_calibration(warehouse, "few", "toxicity", "scorer:synthetic")
    assert err.value.usable == MIN_JUDGEMENTS - 1
    assert "'few'" in str(err.value) and "39 usable" in str(err.value) and "5 unsure" in str(err.value)
    with warehouse.connect() as con:
        assert con.execute("SELECT count(*) FROM calibrated_predictions").fetchall() == [(0,)]
        add_judgements(con, "few", "toxicity", {posts[50]: 3.0})
    assert run_calibration(warehouse, "few", "toxicity", "scorer:synthetic")["n_judgements"] == MIN_JUDGEMENTS


def test_refit_is_idempotent_and_projects_over_every_scored_post(scored):
    first = run_calibration(scored, "strict", "toxicity", "scorer:synthetic")
    assert first["n_judgements"] == 85  # 90 judged, 5 unsure
    fit = first["fits"][0]
    assert fit["cv_error_calibrated"] < fit["cv_error_system"]
    with scored.connect() as con:
        calibrations, predictions = table(con, "rater_calibrations"), table(con, "calibrated_predictions")
        expected = con.execute(
            """SELECT uri, partition_date FROM toxicity_scores
               WHERE scorer = 'synthetic' AND status = 'ok' ORDER BY uri"""
        ).fetchall()
        projected = con.execute(
            """SELECT uri, partition_date, model_version, rater, task, system, prediction, flagged
               FROM calibrated_predictions ORDER BY uri"""
        ).fetchall()
    assert len(expected) == 150
    assert [(r[0], r[1]) for r in projected] == expected  # every scored post once, failed ones not at all
    assert {r[2:6] for r in projected} == {(first["model_version"], "strict", "toxicity", "scorer:synthetic")}
    assert all(0.0 <= r[6] <= 1.0 and r[7] == (r[6] >= calibration.FLAG_THRESHOLD) for r in projected)
    assert first["flagged_posts"] == sum(r[7] for r in projected)
    assert len(calibrations) == 1

    second = run_calibration(scored, "strict", "toxicity", "scorer:synthetic")
    assert second["model_version"] == first["model_version"]
    with scored.connect() as con:
        assert table(con, "rater_calibrations") == calibrations
        assert table(con, "calibrated_predictions") == predictions
        # New judgements make a new model, which replaces the old one's rows (no doubling).
        con.execute("UPDATE human_judgements SET value = 4 WHERE uri = $u", {"u": uris(1)[0]})
    third = run_calibration(scored, "strict", "toxicity", "scorer:synthetic")
    assert third["model_version"] != first["model_version"]
    with scored.connect() as con:
        assert con.execute("SELECT count(*), count(DISTINCT model_version) FROM calibrated_predictions").fetchall() == [
            (150, 1)
        ]
        assert con.execute("SELECT count(*) FROM rater_calibrations").fetchall() == [(1,)]


def test_labeler_with_embeddings_uses_the_latest_prompt_version_and_reports_both_feature_sets(warehouse):
    """The rater calls a post sociopolitical by one topic of its embedding; the labeler is 70% right. The
    embeddings model must beat the label alone, out of fold, and only posts with an embedding are projected."""
    rng = np.random.default_rng(5)
    n = 120
    posts = uris(n + 10)
    # Like sentence embeddings, most variance lies in a few directions (topics); the rater follows the first.
    topics = rng.normal(size=(n + 10, 4))
    embeddings = (topics @ rng.normal(size=(4, 384)) + 0.3 * rng.normal(size=(n + 10, 384))).astype(np.float32)
    truth = topics[:, 0] > 0
    noisy = np.where(rng.uniform(size=n + 10) < 0.3, ~truth, truth)
    with warehouse.connect() as con:
        add_labels(con, "import", "m", "v1", dict.fromkeys(posts, False), NOW - timedelta(days=1))
        add_labels(con, "import", "m", "v2", dict(zip(posts, noisy.tolist(), strict=True)), NOW)
        con.executemany(
            "INSERT INTO post_embeddings VALUES (?, 'test-model', ?, ?, ?)",
            [(u, e.tolist(), NOW, DAYS[i % 3]) for i, (u, e) in enumerate(zip(posts[:n], embeddings, strict=False))],
        )
        add_judgements(con, "reader", "sociopolitical", {u: float(t) for u, t in zip(posts[:80], truth, strict=False)})
    summary = run_calibration(warehouse, "reader", "sociopolitical", "labeler:import/m", use_embeddings=True)
    alone, with_embeddings = summary["fits"]
    assert (alone["features"], with_embeddings["features"]) == ("system", "system+embeddings")
    # The system's own error is that of the v2 labels (the v1 labels, all False, would be about 0.5).
    assert alone["cv_error_system"] == pytest.approx(float(np.mean(noisy[:80] != truth[:80])))
    assert with_embeddings["cv_error_calibrated"] < with_embeddings["cv_error_system"] - 0.1
    assert summary["model_version"] == with_embeddings["model_version"]
    assert summary["projected_posts"] == n  # the 10 posts without an embedding are not projected
    with warehouse.connect() as con:
        rows = con.execute(
            """SELECT features, embedding_model, projected, metric FROM rater_calibrations ORDER BY features"""
        ).fetchall()
    assert rows == [("system", None, False, "error_rate"), ("system+embeddings", "test-model", True, "error_rate")]

    with warehouse.connect() as con:
        con.execute("DELETE FROM post_embeddings WHERE uri = $u", {"u": posts[3]})
    with pytest.raises(CalibrationError, match="1 of the 80 judged posts have no 'test-model' embedding"):
        run_calibration(warehouse, "reader", "sociopolitical", "labeler:import/m", use_embeddings=True)


def test_systems_and_tasks_are_checked():
    assert str(System.parse("labeler:import/gpt-4")) == "labeler:import/gpt-4"
    assert System.parse("scorer:perspective-2024-reference").producer == "perspective-2024-reference"
    for bad in ("scorer:", "labeler:import", "perspective", "labeler:/m"):
        with pytest.raises(CalibrationError, match="expected 'scorer:<scorer>'"):
            System.parse(bad)
    with pytest.raises(CalibrationError, match="must be scorer:<scorer>"):
        calibration.check_task("toxicity", System.parse("labeler:import/gpt-4"))
    with pytest.raises(CalibrationError, match="task 'ideology'"):
        calibration.check_task("ideology", System.parse("labeler:import/gpt-4"))


def test_real_hand_labels_against_recorded_gpt4_labels(warehouse):
    """The 2024 pilot's hand labels as a rater, its recorded GPT-4 labels as the system: the system's error
    out of fold is exactly its disagreement with the hand labels over the posts both labelled."""
    with HAND_LABEL_SEED.open(newline="", encoding="utf-8") as fh:
        seed = list(csv.DictReader(fh))
    uri_of = {row["link"]: row["uri"] for row in seed}
    hand = {row["uri"]: row["is_sociopolitical"] == "true" for row in seed if row["is_sociopolitical"]}
    with (REFERENCE_DIR / "pilot_posts_llm_labels.csv").open(newline="", encoding="utf-8") as fh:
        gpt4 = {uri_of[row["link"]]: normalize_sociopolitical(row["gpt4_civic_label"]) for row in csv.DictReader(fh)}
    gpt4 = {uri: label for uri, label in gpt4.items() if label is not None}
    both = sorted(hand.keys() & gpt4.keys())
    with warehouse.connect() as con:
        add_labels(con, "import", "gpt-4", "bluesky-research-2024", gpt4, NOW)
        add_judgements(con, "bluesky-research-2024", "sociopolitical", {u: float(v) for u, v in hand.items()})
    summary = run_calibration(warehouse, "bluesky-research-2024", "sociopolitical", "labeler:import/gpt-4")
    fit = summary["fits"][0]
    assert summary["n_judgements"] == len(both) > 300
    assert fit["cv_error_system"] == pytest.approx(sum(hand[u] != gpt4[u] for u in both) / len(both))
    # One binary feature: the calibration can only follow the label or ignore it; following it is right here.
    assert fit["cv_error_calibrated"] <= fit["cv_error_system"] + 1e-12 < fit["cv_error_baseline"]
    assert summary["projected_posts"] == len(gpt4)


def test_cli_calibrate(scored, monkeypatch, capsys):
    from bsky_warehouse.cli import main

    monkeypatch.setenv("BSKY_WAREHOUSE_DB", scored.path)
    assert main(["calibrate", "--rater", "strict", "--task", "toxicity", "--system", "scorer:synthetic", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["projected_posts"] == 150 and out["metric"] == "mae"
    assert main(["calibrate", "--rater", "nobody", "--task", "toxicity", "--system", "scorer:synthetic"]) == 2
    assert "rater 'nobody' has 0 usable" in capsys.readouterr().err


@pytest.mark.integration
def test_rater_calibrations_asset_materializes_with_the_cv_figures(scored):
    from dagster import materialize

    from bsky_warehouse.assets.calibration import rater_calibrations

    config = {"rater": "strict", "task": "toxicity", "system": "scorer:synthetic"}
    result = materialize(
        [rater_calibrations], resources={"warehouse": scored},
        run_config={"ops": {"rater_calibrations": {"config": config}}},
    )  # fmt: skip
    metadata = result.asset_materializations_for_node("rater_calibrations")[0].metadata
    assert metadata["cv_error_calibrated"].value < metadata["cv_error_system"].value
    assert metadata["projected_posts"].value == 150
    assert "| system |" in metadata["fits"].value
