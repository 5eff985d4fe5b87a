"""Bridging a toxicity time series across a change of instrument: a monotone map from a local scorer onto
Perspective's scale, fitted on the posts both scored.

Perspective stops answering after 2026; a study that switches to a local scorer (by default the distilled one)
gets a series whose level and spread differ from the one before the switch, even where the posts do not. The
mapping here is quantile (equipercentile) mapping: the local scorer's quantiles on the overlap are sent to
Perspective's quantiles at the same probabilities, with straight lines between knots and the end knots held
beyond them. Quantile mapping rather than isotonic regression because the marts report shares above a
threshold: isotonic regression estimates E[Perspective | local], which shrinks toward the mean and so
understates every share ≥ 0.5; matching distributions keeps means, medians and shares comparable.

Everything here is pure (arrays in, arrays out) so that the fitting, the versioning and the interpolation are
tested without a warehouse; the asset (assets/bridge.py) reads the overlap and stores the knots, and the mart
`scorer_bridge` applies the same interpolation in SQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bsky_warehouse.distill import DEFAULT_TRAINING_SCORERS, SCORER_NAME

METHOD = "quantile-map-v1"
DEFAULT_LOCAL_SCORER = SCORER_NAME
# The live scorer first: where a post has both, the live score is the one the series before the switch shows.
DEFAULT_REFERENCE_SCORERS = DEFAULT_TRAINING_SCORERS
DEFAULT_KNOTS = 101
MIN_OVERLAP = 20
POSITIVE_AT = 0.5


class BridgeError(ValueError):
    """A mapping that cannot be fitted as asked (too little overlap, a bad parameter)."""


@dataclass(frozen=True)
class Knots:
    """A non-decreasing piecewise-linear map: strictly increasing `local` values, non-decreasing `reference`."""

    local: np.ndarray
    reference: np.ndarray

    def __post_init__(self) -> None:
        if len(self.local) == 0 or len(self.local) != len(self.reference):
            raise BridgeError("knots need as many reference values as local ones, at least one")
        if np.any(np.diff(self.local) <= 0) or np.any(np.diff(self.reference) < 0):
            raise BridgeError("knots must increase in local and not decrease in reference")


@dataclass(frozen=True)
class Overlap:
    """One attribute's posts scored by both instruments: the local value (a distilled model's out-of-fold
    prediction where it was trained on the post) and the reference value, in the same order as `uris`."""

    attribute: str
    uris: list[str]
    local: np.ndarray
    reference: np.ndarray
    out_of_fold: np.ndarray
    # 1 / the probability the post entered the reference's sample: above 1 for a post of a planned Perspective
    # sample (toxicity_scores.inclusion_probability), 1 for a post scored in a full run. None: all 1.
    weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not len(self.uris) == len(self.local) == len(self.reference) == len(self.out_of_fold):
            raise BridgeError(f"{self.attribute}: overlap arrays differ in length")
        if self.weight is not None and len(self.weight) != len(self.uris):
            raise BridgeError(f"{self.attribute}: overlap arrays differ in length")

    def weights(self) -> np.ndarray:
        return np.ones(len(self.uris)) if self.weight is None else np.asarray(self.weight, dtype=np.float64)


def fit_quantile_map(
    local: np.ndarray, reference: np.ndarray, n_knots: int = DEFAULT_KNOTS, weights: np.ndarray | None = None
) -> Knots:
    """Knots at `n_knots` evenly spaced probabilities (fewer when there are fewer posts): each local quantile
    paired with the reference quantile at the same probability. Local quantiles that tie (a scorer with many
    equal scores) collapse into one knot at the mean of their reference quantiles, so the map stays a function.

    `weights` (1 / inclusion probability per post) make the quantiles those of the posts the overlap stands for:
    a planned Perspective sample over-represents borderline posts, and unweighted it would bend the map toward
    them. Equal weights give exactly the unweighted map (linear interpolation between order statistics);
    unequal ones use the weighted inverse distribution function, the only quantile numpy weights."""
    local = np.asarray(local, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if n_knots < 2:
        raise BridgeError(f"n_knots must be at least 2, got {n_knots}")
    if len(local) != len(reference) or len(local) == 0:
        raise BridgeError("quantile mapping needs the same non-empty set of posts from both scorers")
    if not (np.all(np.isfinite(local)) and np.all(np.isfinite(reference))):
        raise BridgeError("quantile mapping needs finite scores")
    probabilities = np.linspace(0.0, 1.0, min(n_knots, len(local)))
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if len(weights) != len(local) or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise BridgeError("quantile mapping needs one finite positive weight per post")
    if weights is None or np.all(weights == weights[0]):
        xs = np.quantile(local, probabilities)
        ys = np.quantile(reference, probabilities)
    else:
        xs = np.quantile(local, probabilities, weights=weights, method="inverted_cdf")
        ys = np.quantile(reference, probabilities, weights=weights, method="inverted_cdf")
    unique, group = np.unique(xs, return_inverse=True)
    collapsed = np.bincount(group, weights=ys) / np.bincount(group)
    return Knots(unique, np.maximum.accumulate(collapsed))


def apply_map(values: np.ndarray, knots: Knots) -> np.ndarray:
    """Local scores on the reference scale: linear between knots, the end knot's value beyond either end."""
    return np.interp(np.asarray(values, dtype=np.float64), knots.local, knots.reference)


def mapping_version(spec: Mapping[str, object], overlaps: Sequence[Overlap], local_versions: Sequence[str]) -> str:
    """Same parameters, scorer versions and overlap data → same version; any change in them → a new one."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"method": METHOD, **spec}, sort_keys=True, default=list).encode())
    digest.update("\n".join(sorted(local_versions)).encode())
    for overlap in sorted(overlaps, key=lambda o: o.attribute):
        digest.update(overlap.attribute.encode())
        digest.update("\n".join(overlap.uris).encode())
        for values in (overlap.local, overlap.reference):
            digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(overlap.out_of_fold, dtype=bool).tobytes())
        if overlap.weight is not None and np.any(overlap.weights() != 1):
            digest.update(np.ascontiguousarray(overlap.weights(), dtype=np.float64).tobytes())
    return f"bridge-{digest.hexdigest()[:16]}"


def overlap_figures(overlap: Overlap, knots: Knots) -> dict[str, float | int]:
    """What the mapping does on the posts it was fitted on: the reference's mean and share ≥ 0.5 beside the
    local scorer's, raw and mapped (mapped ≈ reference is the point), weighted as the fit was."""
    mapped = apply_map(overlap.local, knots)
    weights = overlap.weights()

    def mean(values: np.ndarray) -> float:
        return float(np.average(values, weights=weights))

    return {
        "n": len(overlap.uris),
        "n_out_of_fold": int(np.sum(overlap.out_of_fold)),
        "n_weighted": int(np.sum(weights != 1)),
        "knots": len(knots.local),
        "reference_mean": mean(overlap.reference),
        "local_mean": mean(overlap.local),
        "mapped_mean": mean(mapped),
        "reference_share_ge_0_5": mean(overlap.reference >= POSITIVE_AT),
        "local_share_ge_0_5": mean(overlap.local >= POSITIVE_AT),
        "mapped_share_ge_0_5": mean(mapped >= POSITIVE_AT),
    }
