"""Offline scorers: the profanity-check default on clear cases and on the 361 real reference posts, the
factory, and the pure Detoxify label mapping (the model itself is exercised in test_detoxify.py)."""

from __future__ import annotations

import csv
import importlib.util

import pytest

from bsky_warehouse.metrics import pearson, roc_auc, spearman
from bsky_warehouse.project import REFERENCE_DIR
from bsky_warehouse.records import PROB_COLUMNS, PostText, ScoreResult
from bsky_warehouse.scorers import (
    DETOXIFY_LABEL_COLUMNS,
    DetoxifyScorer,
    ProfanityCheckScorer,
    detoxify_column,
    make_scorer,
    map_detoxify_scores,
)

CLEAN = [
    "Had a lovely walk by the river this morning, the ducks were out.",
    "Thanks so much for sharing your research, this is really helpful.",
    "Our library is hosting a free coding workshop for kids on Saturday.",
]
TOXIC = [
    "You are a fucking idiot and everyone hates you.",
    "Shut up you stupid worthless piece of shit.",
    "Go to hell, you disgusting moron.",
]


def score(scorer: ProfanityCheckScorer, texts: list[str]) -> list[ScoreResult]:
    results: list[ScoreResult] = []
    scorer.score([PostText(uri=f"at://p/{i}", text=t) for i, t in enumerate(texts)], results.append)
    return results


@pytest.fixture(scope="module")
def scorer() -> ProfanityCheckScorer:
    return ProfanityCheckScorer()


def test_identity(scorer: ProfanityCheckScorer):
    assert scorer.name == "profanity-check"
    assert scorer.version.startswith("alt-profanity-check-")
    assert scorer.version.removeprefix("alt-profanity-check-")[0].isdigit()


def test_toxic_sentences_score_above_clean_ones(scorer: ProfanityCheckScorer):
    results = score(scorer, CLEAN + TOXIC)
    assert all(r.status == "ok" and set(r.probs) == {"prob_toxicity"} for r in results)
    probs = [r.probs["prob_toxicity"] for r in results]
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert max(probs[: len(CLEAN)]) < 0.5 < min(probs[len(CLEAN) :])


def test_empty_and_whitespace_texts_are_skipped(scorer: ProfanityCheckScorer):
    results = score(scorer, ["", "  \n\t", "hello there", "x"])
    assert [(r.status, r.reason) for r in results] == [
        ("skipped", "text_too_short"),
        ("skipped", "text_too_short"),
        ("ok", None),
        ("ok", None),
    ]
    assert results[0].probs == {}


def test_min_text_length_setting():
    results = score(ProfanityCheckScorer(min_text_length=5), ["  abc  ", "abcde"])
    assert [r.status for r in results] == ["skipped", "ok"]


def test_one_result_per_post_in_order_across_batches():
    texts = [CLEAN[i % 3] if i % 4 else "" for i in range(23)]
    small = score(ProfanityCheckScorer(batch_size=5), texts)
    large = score(ProfanityCheckScorer(batch_size=512), texts)
    assert [r.uri for r in small] == [f"at://p/{i}" for i in range(len(texts))]
    assert small == large


def test_results_are_reported_after_each_batch():
    scorer = ProfanityCheckScorer(batch_size=4)
    seen: list[ScoreResult] = []
    reported_before_call: list[int] = []
    real_predict = scorer.predict

    def counting_predict(texts: list[str]) -> list[dict[str, float]]:
        reported_before_call.append(len(seen))
        return real_predict(texts)

    scorer.predict = counting_predict  # type: ignore[method-assign]
    scorer.score([PostText(uri=str(i), text="hi there") for i in range(10)], seen.append)
    assert reported_before_call == [0, 4, 8]
    assert len(seen) == 10


def test_batch_of_only_skipped_posts_makes_no_model_call():
    scorer = ProfanityCheckScorer(batch_size=2)
    scorer.predict = lambda texts: pytest.fail("model called for empty texts")  # type: ignore[method-assign]
    seen: list[ScoreResult] = []
    scorer.score([PostText(uri="a", text=""), PostText(uri="b", text=" ")], seen.append)
    assert [r.status for r in seen] == ["skipped", "skipped"]


def test_empty_input_reports_nothing(scorer: ProfanityCheckScorer):
    assert score(scorer, []) == []


def test_agreement_with_perspective_on_reference_posts(scorer: ProfanityCheckScorer):
    """The 361 real Bluesky posts with 2024 Perspective TOXICITY: a floor under the measured agreement
    (Spearman 0.54, Pearson 0.76, AUC 0.95 at Perspective >= 0.5) that catches a broken model or mapping."""
    with (REFERENCE_DIR / "pilot_posts_perspective.csv").open(newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.DictReader(fh) if row["prob_toxic"].strip()]
    assert len(rows) == 361
    results = score(scorer, [row["text"] for row in rows])
    assert all(r.status == "ok" for r in results)
    ours = [r.probs["prob_toxicity"] for r in results]
    perspective = [float(row["prob_toxic"]) for row in rows]

    auc = roc_auc(ours, [p >= 0.5 for p in perspective])
    rho = spearman(ours, perspective)
    r = pearson(ours, perspective)
    assert auc is not None and auc >= 0.9
    assert rho is not None and rho >= 0.45
    assert r is not None and r >= 0.6


def test_factory():
    assert isinstance(make_scorer("profanity-check", batch_size=8), ProfanityCheckScorer)
    assert make_scorer("profanity-check", batch_size=8).batch_size == 8
    with pytest.raises(ValueError, match="profanity-check"):
        make_scorer("no-such-scorer")


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None,
    reason="the [detoxify] extra is installed",
)
def test_detoxify_without_extra_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match=r"bsky-warehouse\[detoxify\]"):
        DetoxifyScorer(tmp_path / "model.ckpt")


def test_detoxify_mapping_targets_real_columns():
    assert set(DETOXIFY_LABEL_COLUMNS.values()) <= set(PROB_COLUMNS)


@pytest.mark.parametrize(
    ("label", "column"),
    [
        ("toxicity", "prob_toxicity"),
        ("toxic", "prob_toxicity"),
        ("severe_toxicity", "prob_severe_toxicity"),
        ("severe_toxic", "prob_severe_toxicity"),
        ("obscene", "prob_profanity"),
        ("threat", "prob_threat"),
        ("insult", "prob_insult"),
        ("identity_attack", "prob_identity_attack"),
        ("identity_hate", "prob_identity_attack"),
        ("sexual_explicit", "prob_sexually_explicit"),
        ("Toxicity", "prob_toxicity"),
        ("muslim", None),
        ("male", None),
    ],
)
def test_detoxify_column(label: str, column: str | None):
    assert detoxify_column(label) == column


def test_map_detoxify_scores_original_and_unbiased_layouts():
    original = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
    assert map_detoxify_scores(original, [0.9, 0.1, 0.8, 0.05, 0.7, 0.2]) == {
        "prob_toxicity": 0.9,
        "prob_severe_toxicity": 0.1,
        "prob_profanity": 0.8,
        "prob_threat": 0.05,
        "prob_insult": 0.7,
        "prob_identity_attack": 0.2,
    }
    unbiased = ["toxicity", "severe_toxicity", "obscene", "identity_attack", "insult", "threat", "sexual_explicit"]
    outputs = [0.1 * i for i in range(16)]  # 7 named toxicity outputs, then 9 identity outputs
    mapped = map_detoxify_scores(unbiased, outputs)
    assert mapped["prob_sexually_explicit"] == pytest.approx(0.6)
    assert mapped["prob_identity_attack"] == pytest.approx(0.3)
    assert len(mapped) == 7


def test_map_detoxify_scores_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="outputs"):
        map_detoxify_scores(["toxic", "insult"], [0.5])
    with pytest.raises(ValueError, match="twice"):
        map_detoxify_scores(["toxic", "toxicity"], [0.5, 0.6])
