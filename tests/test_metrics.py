"""The agreement metrics on hand-computed cases, on their undefined cases, and against scipy/scikit-learn."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bsky_warehouse.metrics import (
    BOOTSTRAP_RESAMPLES,
    accuracy,
    average_ranks,
    bootstrap_interval,
    confusion,
    correlation_intervals,
    macro_f1,
    macro_f1_interval,
    mcnemar_exact,
    paired_spearman_difference,
    pearson,
    roc_auc,
    spearman,
    wilson_interval,
)


def test_average_ranks_share_tied_positions():
    assert average_ranks([10, 20, 20, 5, 20]).tolist() == [2.0, 4.0, 4.0, 1.0, 4.0]
    assert average_ranks([]).tolist() == []
    assert average_ranks(np.array([3.0, 1.0, 2.0, 1.0])).tolist() == [4.0, 1.5, 3.0, 1.5]


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


def test_wilson_interval_known_values():
    # 8/10 at 95%: the textbook Wilson score interval (Newcombe 1998, method 3)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    # 0/10 and 10/10: one end at the boundary, the other at z^2 / (n + z^2) from it
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    # 90%: z = 1.6449, half-width 1.6449 * sqrt(0.0025 + z^2 / 40000) / (1 + z^2 / 100) = 0.0812
    assert wilson_interval(50, 100, confidence=0.9) == pytest.approx((0.4188, 0.5812), abs=1e-4)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_known_tables():
    # 7 posts only A got right, 1 only B: p = 2 * (1 + 8) / 2^8
    result = mcnemar_exact([True] * 7 + [False] + [True] * 4, [False] * 7 + [True] + [True] * 4)
    assert (result["n"], result["a_only"], result["b_only"]) == (12, 7, 1)
    assert result["p_value"] == pytest.approx(18 / 256)
    assert result["difference"] == pytest.approx(6 / 12)
    assert mcnemar_exact([True] * 10, [False] * 10)["p_value"] == pytest.approx(2 / 1024)
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0  # no discordant post
    assert mcnemar_exact([True, False], [False, True])["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact([True], [])


def test_mcnemar_exact_agrees_with_scipy_binomtest():
    """Small tables exactly, the last two (over 5,000 discordant posts) in log space."""
    stats = pytest.importorskip("scipy.stats")
    for a_only, b_only in [(58, 20), (7, 18), (20, 14), (0, 5), (3000, 3100), (2600, 2900)]:
        a = [True] * a_only + [False] * b_only
        b = [False] * a_only + [True] * b_only
        expected = stats.binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue
        assert mcnemar_exact(a, b)["p_value"] == pytest.approx(expected, rel=1e-9)


def test_bootstrap_interval_of_a_mean_is_the_normal_one_for_a_large_sample():
    rng = np.random.default_rng(3)
    values = rng.normal(10.0, 2.0, size=2000)
    low, high = bootstrap_interval(lambda v: float(np.mean(v)), [values])
    half = 1.959964 * values.std() / math.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half, abs=0.02)
    assert high == pytest.approx(values.mean() + half, abs=0.02)
    assert bootstrap_interval(lambda v: float(np.mean(v)), [values]) == (low, high)  # fixed seed
    assert bootstrap_interval(lambda v: 1.0, [[]]) is None
    assert bootstrap_interval(lambda v: None, [[1, 2]]) is None


def test_macro_f1_interval_is_the_bootstrap_of_macro_f1_without_the_no_answer_class():
    rng = random.Random(5)
    classes = ["left", "right", "unclear"]
    truth = [rng.choice(classes) for _ in range(120)]
    predicted = [t if rng.random() < 0.6 else rng.choice([*classes, "none"]) for t in truth]

    def reference(t, p):
        present = sorted((set(t) | set(p)) - {"none"})
        return macro_f1(list(t), list(p), labels=present) if present else None

    expected = bootstrap_interval(reference, [truth, predicted], n_resamples=300)
    assert macro_f1_interval(truth, predicted, exclude=["none"], n_resamples=300) == pytest.approx(expected, abs=1e-12)
    low, high = macro_f1_interval(truth, predicted, exclude=["none"])
    assert low < reference(truth, predicted) < high
    assert macro_f1_interval([], []) is None


def test_correlation_intervals_are_the_bootstrap_of_the_plain_metrics():
    x, y = _random_scores(11, 80)
    got = correlation_intervals(x, y, n_resamples=300)
    assert got["pearson"] == pytest.approx(bootstrap_interval(pearson, [x, y], n_resamples=300), abs=1e-9)
    assert got["spearman"] == pytest.approx(bootstrap_interval(spearman, [x, y], n_resamples=300), abs=1e-9)
    auc = bootstrap_interval(lambda a, b: roc_auc(a, b >= 0.5), [x, np.asarray(y)], n_resamples=300)
    assert got["auc"] == pytest.approx(auc, abs=1e-9)
    assert got["spearman"][0] < spearman(x, y) < got["spearman"][1]
    assert correlation_intervals([], []) == {"pearson": None, "spearman": None, "auc": None}


def test_above_the_cap_a_subsample_bootstrap_scaled_by_root_m_over_n_matches_the_full_bootstrap():
    x, y = _random_scores(5, 6000)
    full = correlation_intervals(x, y, n_resamples=400)
    capped = correlation_intervals(x, y, n_resamples=400, max_posts=1500)
    assert correlation_intervals(x, y, n_resamples=400, max_posts=6000) == full  # at the cap: no subsample
    figures = {"pearson": pearson(x, y), "spearman": spearman(x, y), "auc": roc_auc(x, np.asarray(y) >= 0.5)}
    for name, figure in figures.items():
        (low, high), (full_low, full_high) = capped[name], full[name]
        assert low < figure < high, name
        # Width within a fifth of the full bootstrap's (a quarter of the posts: the unscaled width is double).
        assert (high - low) == pytest.approx(full_high - full_low, rel=0.2), name
        assert (low + high) / 2 == pytest.approx((full_low + full_high) / 2, abs=(full_high - full_low) / 4), name


def test_resample_counts_are_the_resampled_indices_block_by_block():
    from bsky_warehouse.metrics import _resample_indices, _resample_weights

    for n, resamples in [(60, 50), (70_000, 60)]:  # one block; several blocks of rows
        indices = _resample_indices(n, resamples, 7)
        counts = np.concatenate(list(_resample_weights(n, resamples, 7)))
        assert counts.shape == (resamples, n)
        assert all((np.bincount(indices[i], minlength=n) == counts[i]).all() for i in range(resamples))


def test_paired_spearman_difference():
    rng = np.random.default_rng(2)
    reference = rng.random(300)
    close = reference + rng.normal(0, 0.05, 300)
    noisy = reference + rng.normal(0, 0.5, 300)
    result = paired_spearman_difference(close, noisy, reference)
    assert result["n"] == 300
    assert result["difference"] == pytest.approx(spearman(close, reference) - spearman(noisy, reference))
    assert 0 < result["ci"][0] < result["difference"] < result["ci"][1]
    assert result["p_value"] < 0.01
    same = paired_spearman_difference(noisy, noisy, reference)
    assert same["difference"] == 0.0 and same["ci"] == (0.0, 0.0) and same["p_value"] == 1.0
    assert BOOTSTRAP_RESAMPLES == 2000
