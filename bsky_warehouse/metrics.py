"""Agreement metrics for scorers and labelers, their uncertainty, and paired comparisons; pure, numpy only.

They back the CLI `eval` commands, and the dbt marts `scorer_agreement` and `labeler_agreement` compute the
same figures in SQL, so the definitions here are the ones the SQL follows: average ranks for ties (Spearman
and AUC), the Mann–Whitney form of AUC, and macro F1 over the classes that occur in either sequence.

A figure from a few hundred posts is an estimate, so every one comes with a 95% interval: Wilson's for an
accuracy (a closed form the mart can compute too, and unlike the normal approximation never outside [0, 1]),
a percentile bootstrap for macro F1 and the correlations (no closed form). The bootstrap draws
`BOOTSTRAP_RESAMPLES` resamples of the posts from numpy's PCG64 seeded with `BOOTSTRAP_SEED`, so a figure is
the same on every run. Two systems are compared on the same posts (paired): McNemar's exact test for
accuracy, a paired bootstrap for Spearman.

Every function returns None rather than NaN or raising when its figure is undefined (fewer than two pairs, a
constant input, a single class): a missing figure is an honest answer in a report, a NaN poisons aggregates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from statistics import NormalDist

import numpy as np

__all__ = [
    "BOOTSTRAP_MAX_POSTS",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "accuracy",
    "average_ranks",
    "bootstrap_interval",
    "confusion",
    "correlation_intervals",
    "macro_f1",
    "macro_f1_interval",
    "mcnemar_exact",
    "paired_spearman_difference",
    "pearson",
    "resampled_spearman",
    "roc_auc",
    "spearman",
    "wilson_interval",
]

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240308
# Above this many posts the correlation intervals resample a seeded subsample of this size and scale its spread
# by sqrt(m / n) (correlation_intervals): a resample costs time linear in its posts, and the global marts
# rebuild the intervals on every run.
BOOTSTRAP_MAX_POSTS = 20_000
CONFIDENCE = 0.95
Interval = tuple[float, float]


def _paired(x: Iterable[float], y: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """Two equally long float arrays; unequal lengths are a caller bug, so they raise."""
    xs = np.asarray(list(x), dtype=float)
    ys = np.asarray(list(y), dtype=float)
    if xs.shape != ys.shape:
        raise ValueError(f"length mismatch: {xs.size} vs {ys.size}")
    return xs, ys


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def average_ranks(values: Iterable[float]) -> np.ndarray:
    """1-based ranks with tied values sharing the mean of the ranks they span (SQL `rank() + (ties-1)/2`)."""
    arr = np.asarray(list(values), dtype=float)
    order = np.argsort(arr, kind="mergesort")
    sorted_values = arr[order]
    ranks = np.empty(arr.size, dtype=float)
    start = 0
    while start < arr.size:
        end = start
        while end + 1 < arr.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def pearson(x: Iterable[float], y: Iterable[float]) -> float | None:
    """Pearson correlation; None for n < 2 or when either side is constant (the correlation is 0/0)."""
    xs, ys = _paired(x, y)
    if xs.size < 2:
        return None
    dx = xs - xs.mean()
    dy = ys - ys.mean()
    sxx = float(np.dot(dx, dx))
    syy = float(np.dot(dy, dy))
    if sxx == 0.0 or syy == 0.0:
        return None
    r = float(np.dot(dx, dy)) / math.sqrt(sxx * syy)
    return _finite(max(-1.0, min(1.0, r)))


def spearman(x: Iterable[float], y: Iterable[float]) -> float | None:
    """Spearman's rho as the Pearson correlation of average ranks (exact with ties, like scipy's)."""
    xs, ys = _paired(x, y)
    if xs.size < 2:
        return None
    return pearson(average_ranks(xs), average_ranks(ys))


def roc_auc(scores: Iterable[float], labels: Iterable[bool | int]) -> float | None:
    """ROC AUC as the Mann–Whitney U statistic over average ranks, so a tied positive/negative pair counts ½.

    None when there is no positive or no negative label (the AUC is undefined with one class).
    """
    xs = np.asarray(list(scores), dtype=float)
    ys = np.asarray([bool(label) for label in labels], dtype=bool)
    if xs.shape != ys.shape:
        raise ValueError(f"length mismatch: {xs.size} vs {ys.size}")
    n_pos = int(ys.sum())
    n_neg = int(ys.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = float(average_ranks(xs)[ys].sum())
    return _finite((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _paired_labels(y_true: Iterable[Hashable], y_pred: Iterable[Hashable]) -> tuple[list, list]:
    truth = list(y_true)
    predicted = list(y_pred)
    if len(truth) != len(predicted):
        raise ValueError(f"length mismatch: {len(truth)} vs {len(predicted)}")
    return truth, predicted


def accuracy(y_true: Iterable[Hashable], y_pred: Iterable[Hashable]) -> float | None:
    """Share of exact matches; None for no pairs."""
    truth, predicted = _paired_labels(y_true, y_pred)
    if not truth:
        return None
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def macro_f1(
    y_true: Iterable[Hashable], y_pred: Iterable[Hashable], labels: Sequence[Hashable] | None = None
) -> float | None:
    """Unweighted mean of per-class F1 = 2TP / (2TP + FP + FN).

    The classes are `labels` when given, else every class in either sequence (what the dbt mart uses). A
    given class that occurs in neither sequence scores F1 = 0, scikit-learn's default, so that naming a
    class the labeler never produced cannot raise the average. None for no pairs or no classes.
    """
    truth, predicted = _paired_labels(y_true, y_pred)
    if not truth:
        return None
    classes = list(labels) if labels is not None else sorted(set(truth) | set(predicted), key=repr)
    if not classes:
        return None
    scores = []
    for cls in classes:
        tp = sum(t == cls and p == cls for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != cls and p == cls for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == cls and p != cls for t, p in zip(truth, predicted, strict=True))
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return sum(scores) / len(scores)


def confusion(y_true: Iterable[Hashable], y_pred: Iterable[Hashable]) -> dict[str, dict[str, int]]:
    """Counts as {true class: {predicted class: n}}, keys stringified, only cells that occur.

    The same shape as the mart's `json_group_object(truth, json_group_object(predicted, n))`, so the two
    compare directly after a JSON round trip. Empty input gives an empty dict (nothing is undefined here).
    """
    truth, predicted = _paired_labels(y_true, y_pred)
    out: dict[str, dict[str, int]] = {}
    for t, p in zip(truth, predicted, strict=True):
        row = out.setdefault(str(t), {})
        row[str(p)] = row.get(str(p), 0) + 1
    return out


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval | None:
    """Wilson score interval for a proportion successes / n; None for n = 0.

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and keeps its coverage near 0 and 1,
    where a good labeler's accuracy lives; the mart computes the same closed form in SQL.
    """
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    z = _z(confidence)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) row indices drawn with replacement; the same seed gives the same resamples."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _percentiles(values: Sequence[float | None], confidence: float) -> Interval | None:
    defined = np.asarray([v for v in values if v is not None], dtype=float)
    if defined.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(defined, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_interval(
    statistic: Callable[..., float | None],
    columns: Sequence[Sequence[object]],
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> Interval | None:
    """Percentile bootstrap interval of `statistic(*columns)`, resampling rows (posts) with replacement.

    The columns are paired (row i of each belongs to one post), so a resample keeps the pairs together.
    Resamples where the statistic is undefined (say, one class left) are left out; None when the sample is
    empty or no resample is defined.
    """
    arrays = [np.asarray(list(c) if not isinstance(c, np.ndarray) else c) for c in columns]
    n = len(arrays[0]) if arrays else 0
    if any(len(a) != n for a in arrays):
        raise ValueError(f"length mismatch: {[len(a) for a in arrays]}")
    if n == 0:
        return None
    values = [statistic(*(a[idx] for a in arrays)) for idx in _resample_indices(n, n_resamples, seed)]
    return _percentiles(values, confidence)


def _macro_f1_codes(truth: np.ndarray, predicted: np.ndarray, k: int, scored: np.ndarray) -> float | None:
    """macro_f1 on integer-coded labels: F1 of every class in `scored` that occurs in either sequence."""
    cells = np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k)
    tp = np.diag(cells)
    fp = cells.sum(axis=0) - tp
    fn = cells.sum(axis=1) - tp
    present = scored & ((tp + fp + fn) > 0)
    if not present.any():
        return None
    return float(np.mean(2.0 * tp[present] / (2.0 * tp[present] + fp[present] + fn[present])))


def macro_f1_interval(
    y_true: Iterable[Hashable],
    y_pred: Iterable[Hashable],
    exclude: Iterable[Hashable] = (),
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> Interval | None:
    """Percentile bootstrap interval of `macro_f1` over the classes present in each resample, `exclude`
    excepted (as `macro_f1(..., labels=...)` with the same classes); integer-coded so 2,000 resamples are
    cheap."""
    truth, predicted = _paired_labels(y_true, y_pred)
    if not truth:
        return None
    classes = sorted(set(truth) | set(predicted), key=repr)
    code = {c: i for i, c in enumerate(classes)}
    excluded = set(exclude)
    scored = np.asarray([c not in excluded for c in classes], dtype=bool)
    t = np.asarray([code[v] for v in truth], dtype=np.int64)
    p = np.asarray([code[v] for v in predicted], dtype=np.int64)
    k = len(classes)
    values = [_macro_f1_codes(t[idx], p[idx], k, scored) for idx in _resample_indices(len(t), n_resamples, seed)]
    return _percentiles(values, confidence)


def _resample_weights(n: int, n_resamples: int, seed: int) -> Iterable[np.ndarray]:
    """The resamples of `_resample_indices` as counts (how often each post was drawn), a block of rows at a
    time so memory stays bounded on a large day; the same generator drawn block by block yields the same
    indices as one draw (a test holds the two equal)."""
    rng = np.random.default_rng(seed)
    block_rows = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_resamples, block_rows):
        rows = min(block_rows, n_resamples - start)
        block = rng.integers(0, n, size=(rows, n))
        flat = (np.arange(rows)[:, None] * n + block).ravel()
        yield np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(float)


def _weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks each post would have in each resample (rows of `weights`): a post drawn w times takes w
    places, tied values share the mean of the places they span, as `average_ranks` of the resample does."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    group_of_sorted = np.cumsum(np.r_[True, sorted_values[1:] != sorted_values[:-1]]) - 1
    group = np.empty(values.size, dtype=np.int64)
    group[order] = group_of_sorted
    group_weight = np.add.reduceat(weights[:, order], starts, axis=1)
    before = np.cumsum(group_weight, axis=1) - group_weight
    return (before + (group_weight + 1.0) / 2.0)[:, group]


def _weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson of each resample from its counts; NaN where a side is constant (undefined, as in `pearson`)."""
    x = np.broadcast_to(x, weights.shape)
    y = np.broadcast_to(y, weights.shape)
    total = weights.sum(axis=1)
    mx = (weights * x).sum(axis=1) / total
    my = (weights * y).sum(axis=1) / total
    dx = x - mx[:, None]
    dy = y - my[:, None]
    sxy = (weights * dx * dy).sum(axis=1)
    sxx = (weights * dx * dx).sum(axis=1)
    syy = (weights * dy * dy).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    # a constant side has a zero sum of squares up to rounding: undefined, as pearson() says
    r[(sxx <= 1e-12 * np.maximum(1.0, total)) | (syy <= 1e-12 * np.maximum(1.0, total))] = np.nan
    return np.clip(r, -1.0, 1.0)


def _weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUC of each resample from its counts; NaN where a resample holds one class."""
    ranks = _weighted_ranks(scores, weights)
    n_pos = weights[:, labels].sum(axis=1)
    n_neg = weights[:, ~labels].sum(axis=1)
    rank_sum = (weights[:, labels] * ranks[:, labels]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def _percentiles_of(values: np.ndarray, confidence: float) -> Interval | None:
    return _percentiles([None if math.isnan(v) else float(v) for v in values], confidence)


def correlation_intervals(
    scores: Sequence[float],
    reference: Sequence[float],
    threshold: float = 0.5,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
    max_posts: int = BOOTSTRAP_MAX_POSTS,
) -> dict[str, Interval | None]:
    """Bootstrap intervals of Pearson, Spearman and ROC AUC (reference >= threshold as the label) of a scorer
    against a reference, all three over the same resamples of the posts, as `scorer_agreement` reports them.

    Each resample's figures equal `pearson`, `spearman` and `roc_auc` of the resampled posts (a test holds
    them to it); they are computed from the draw counts so that 2,000 resamples of a large day stay cheap.

    More than `max_posts` posts: the bootstrap runs on a seeded subsample of `max_posts` (m of the n), and each
    end's distance from the subsample's own figure is scaled by sqrt(m / n) and laid around the figure of all
    n posts. The three figures are smooth functions of means, so their spread shrinks as 1 / sqrt(n); a test
    holds the scaled interval to the full bootstrap's.
    """
    xs, ys = _paired(scores, reference)
    if xs.size == 0:
        return {"pearson": None, "spearman": None, "auc": None}
    if xs.size > max_posts:
        return _subsampled_intervals(xs, ys, threshold, n_resamples, seed, confidence, max_posts)
    labels = ys >= threshold
    found: dict[str, list[np.ndarray]] = {"pearson": [], "spearman": [], "auc": []}
    for weights in _resample_weights(xs.size, n_resamples, seed):
        found["pearson"].append(_weighted_pearson(xs, ys, weights))
        found["spearman"].append(_weighted_pearson(_weighted_ranks(xs, weights), _weighted_ranks(ys, weights), weights))
        found["auc"].append(_weighted_auc(xs, labels, weights))
    return {name: _percentiles_of(np.concatenate(parts), confidence) for name, parts in found.items()}


def _subsampled_intervals(
    xs: np.ndarray,
    ys: np.ndarray,
    threshold: float,
    n_resamples: int,
    seed: int,
    confidence: float,
    max_posts: int,
) -> dict[str, Interval | None]:
    keep = np.sort(np.random.default_rng(seed).choice(xs.size, size=max_posts, replace=False))
    sub_x, sub_y = xs[keep], ys[keep]
    inner = correlation_intervals(sub_x, sub_y, threshold, n_resamples, seed, confidence, max_posts)
    scale = math.sqrt(max_posts / xs.size)
    figures = {
        "pearson": (pearson(xs, ys), pearson(sub_x, sub_y), (-1.0, 1.0)),
        "spearman": (spearman(xs, ys), spearman(sub_x, sub_y), (-1.0, 1.0)),
        "auc": (roc_auc(xs, ys >= threshold), roc_auc(sub_x, sub_y >= threshold), (0.0, 1.0)),
    }
    out: dict[str, Interval | None] = {}
    for name, (full, sub, (floor, ceiling)) in figures.items():
        interval = inner[name]
        if interval is None or full is None or sub is None:
            out[name] = None
            continue
        low, high = interval
        out[name] = (max(floor, full - scale * (sub - low)), min(ceiling, full + scale * (high - sub)))
    return out


def resampled_spearman(x: Sequence[float], y: Sequence[float], n_resamples: int, seed: int) -> np.ndarray:
    """Spearman of every resample (NaN where undefined), in the order `_resample_indices` draws them."""
    xs, ys = _paired(x, y)
    parts = [
        _weighted_pearson(_weighted_ranks(xs, w), _weighted_ranks(ys, w), w)
        for w in _resample_weights(xs.size, n_resamples, seed)
    ]
    return np.concatenate(parts) if parts else np.empty(0)


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, float | int]:
    """McNemar's exact test of two systems' accuracy on the same posts.

    Only discordant posts carry information about which system is better: `a_only` (A right, B wrong) and
    `b_only`. Under equal accuracy each discordant post is a fair coin, so the two-sided p-value is
    min(1, 2 · P(Binomial(a_only + b_only, ½) <= min(a_only, b_only))); 1.0 with no discordant post.
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(f"length mismatch: {len(a_correct)} vs {len(b_correct)}")
    a_only = sum(bool(a) and not bool(b) for a, b in zip(a_correct, b_correct, strict=True))
    b_only = sum(bool(b) and not bool(a) for a, b in zip(a_correct, b_correct, strict=True))
    discordant = a_only + b_only
    smaller = min(a_only, b_only)
    if discordant <= 5000:
        tail = sum(math.comb(discordant, k) for k in range(smaller + 1)) / 2**discordant
    else:  # in log space: the exact integers grow to thousands of digits
        logs = [math.lgamma(discordant + 1) - math.lgamma(k + 1) - math.lgamma(discordant - k + 1) for k in
                range(smaller + 1)]  # fmt: skip
        top = max(logs)
        tail = math.exp(top - discordant * math.log(2.0)) * math.fsum(math.exp(v - top) for v in logs)
    n = len(a_correct)
    return {
        "n": n,
        "a_only": a_only,
        "b_only": b_only,
        "difference": (a_only - b_only) / n if n else 0.0,
        "p_value": min(1.0, 2.0 * tail),
    }


def paired_spearman_difference(
    a_scores: Sequence[float],
    b_scores: Sequence[float],
    reference: Sequence[float],
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, float | int | Interval | None]:
    """Spearman(A, reference) − Spearman(B, reference) on the same posts, with a paired bootstrap interval
    (each resample draws posts, and both systems are ranked on those posts) and a two-sided bootstrap p-value
    (twice the smaller share of resampled differences on either side of zero, at most 1)."""
    a, b = _paired(a_scores, b_scores)
    _, ref = _paired(a_scores, reference)
    difference = None
    rho_a, rho_b = spearman(a, ref), spearman(b, ref)
    if rho_a is not None and rho_b is not None:
        difference = rho_a - rho_b
    diffs: list[float | None] = []
    if a.size:
        # the same seed draws the same posts for both systems: the resamples are paired
        resampled = resampled_spearman(a, ref, n_resamples, seed) - resampled_spearman(b, ref, n_resamples, seed)
        diffs = [None if math.isnan(d) else float(d) for d in resampled]
    defined = np.asarray([d for d in diffs if d is not None], dtype=float)
    p_value = None
    if defined.size:
        p_value = float(min(1.0, 2.0 * min(np.mean(defined <= 0.0), np.mean(defined >= 0.0))))
    return {
        "n": int(a.size),
        "spearman_a": rho_a,
        "spearman_b": rho_b,
        "difference": difference,
        "ci": _percentiles(diffs, confidence),
        "p_value": p_value,
    }
