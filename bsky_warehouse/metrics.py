"""Agreement metrics for scorers and labelers, pure and dependency-light (numpy only).

They back the CLI `eval` commands, and the dbt marts `scorer_agreement` and `labeler_agreement` compute the
same figures in SQL, so the definitions here are the ones the SQL follows: average ranks for ties (Spearman
and AUC), the Mann–Whitney form of AUC, and macro F1 over the classes that occur in either sequence.

Every function returns None rather than NaN or raising when its figure is undefined (fewer than two pairs, a
constant input, a single class): a missing figure is an honest answer in a report, a NaN poisons aggregates.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

__all__ = ["accuracy", "average_ranks", "confusion", "macro_f1", "pearson", "roc_auc", "spearman"]


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
