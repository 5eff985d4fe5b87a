"""The agreement metrics on hand-computed cases, on their undefined cases, and against scipy/scikit-learn."""

from __future__ import annotations

import math
import random

import pytest

from bsky_warehouse.metrics import accuracy, average_ranks, confusion, macro_f1, pearson, roc_auc, spearman


def test_average_ranks_share_tied_positions():
    assert average_ranks([10, 20, 20, 5, 20]).tolist() == [2.0, 4.0, 4.0, 1.0, 4.0]
    assert average_ranks([]).tolist() == []


def test_pearson_hand_computed():
    x, y = [1, 2, 3], [1, 5, 3]
    # means 2 and 3: dx = -1,0,1; dy = -2,2,0 -> sxy = 2, sxx = 2, syy = 8 -> r = 2 / 4
    assert pearson(x, y) == pytest.approx(0.5)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([0.1, 0.2], [0.3, 0.7]) == pytest.approx(1.0)


def test_spearman_uses_average_ranks_for_ties():
    # ranks x = 1, 2.5, 2.5, 4 ; ranks y = 1, 2, 3, 4 -> pearson of the ranks
    x, y = [1, 2, 2, 3], [10, 20, 30, 40]
    assert spearman(x, y) == pytest.approx(pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4]))
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)


def test_roc_auc_counts_ties_as_half():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    # positive 0.5 ties one negative (½), beats one (1): (1.5 + 2) / 4
    assert roc_auc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert roc_auc([0.9, 0.1], [False, True]) == 0.0


@pytest.mark.parametrize(
    ("x", "y"),
    [([], []), ([1.0], [2.0]), ([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [4, 4, 4])],
)
def test_correlations_are_none_when_undefined(x, y):
    assert pearson(x, y) is None
    assert spearman(x, y) is None


@pytest.mark.parametrize(("scores", "labels"), [([], []), ([0.3], [1]), ([0.1, 0.9], [1, 1]), ([0.1, 0.9], [0, 0])])
def test_auc_is_none_with_a_single_class(scores, labels):
    assert roc_auc(scores, labels) is None


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        pearson([1, 2], [1])
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [1])
    with pytest.raises(ValueError):
        accuracy(["a"], [])


def test_classification_metrics_hand_computed():
    truth = ["left", "left", "right", "moderate", "right"]
    predicted = ["left", "right", "right", "left", "right"]
    assert accuracy(truth, predicted) == pytest.approx(3 / 5)
    # left: tp1 fp1 fn1 -> 2/4; right: tp2 fp1 fn0 -> 4/5; moderate: tp0 fp0 fn1 -> 0
    assert macro_f1(truth, predicted) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert confusion(truth, predicted) == {
        "left": {"left": 1, "right": 1},
        "right": {"right": 2},
        "moderate": {"left": 1},
    }


def test_macro_f1_with_explicit_labels_counts_absent_classes_as_zero():
    truth, predicted = ["a", "b"], ["a", "b"]
    assert macro_f1(truth, predicted) == 1.0
    assert macro_f1(truth, predicted, labels=["a", "b", "c"]) == pytest.approx(2 / 3)
    assert macro_f1(truth, predicted, labels=["a"]) == 1.0


def test_classification_metrics_on_empty_input():
    assert accuracy([], []) is None
    assert macro_f1([], []) is None
    assert macro_f1(["a"], ["a"], labels=[]) is None
    assert confusion([], []) == {}


def test_confusion_stringifies_keys_like_the_json_mart():
    assert confusion([True, False, True], [True, True, True]) == {"True": {"True": 2}, "False": {"True": 1}}


def _random_scores(seed: int, n: int) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    # Rounded to force ties, as real scores often have.
    x = [round(rng.random(), 1) for _ in range(n)]
    y = [round(0.5 * xi + 0.5 * rng.random(), 2) for xi in x]
    return x, y


@pytest.mark.parametrize("seed", range(5))
def test_agree_with_scipy(seed: int):
    stats = pytest.importorskip("scipy.stats")
    x, y = _random_scores(seed, 200)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_agree_with_sklearn(seed: int):
    sk = pytest.importorskip("sklearn.metrics")
    x, y = _random_scores(seed, 200)
    labels = [v >= 0.5 for v in y]
    assert roc_auc(x, labels) == pytest.approx(sk.roc_auc_score(labels, x), abs=1e-12)

    rng = random.Random(seed)
    classes = ["left", "right", "moderate", "unclear"]
    truth = [rng.choice(classes) for _ in range(150)]
    predicted = [t if rng.random() < 0.6 else rng.choice(classes[:3]) for t in truth]
    assert accuracy(truth, predicted) == pytest.approx(sk.accuracy_score(truth, predicted))
    assert macro_f1(truth, predicted) == pytest.approx(sk.f1_score(truth, predicted, average="macro"))
    assert macro_f1(truth, predicted, labels=[*classes, "none"]) == pytest.approx(
        sk.f1_score(truth, predicted, labels=[*classes, "none"], average="macro", zero_division=0)
    )
    matrix = sk.confusion_matrix(truth, predicted, labels=classes)
    table = confusion(truth, predicted)
    for i, t in enumerate(classes):
        for j, p in enumerate(classes):
            assert table.get(t, {}).get(p, 0) == matrix[i, j]


def test_results_are_plain_floats_never_nan():
    for value in (pearson([1, 2, 3], [1, 3, 2]), spearman([1, 2, 3], [1, 3, 2]), roc_auc([1, 2], [0, 1])):
        assert type(value) is float
        assert not math.isnan(value)
