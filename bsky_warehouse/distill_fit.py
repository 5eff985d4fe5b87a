"""Fitting the distilled Perspective (distill.py): the pipelines, the nested cross-validation, the fold into
linear heads, and the version.

Kept apart from distill.py because it imports scikit-learn (about 3 s): only the fit (the `distilled_models`
asset, the bench) imports this module, never the scorer or the Dagster definitions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from bsky_warehouse.distill import (
    ALGORITHM,
    ALPHAS,
    ANCHOR_TEXTS,
    TARGET_CLIP,
    TEXT_FEATURES,
    AttributeFit,
    DistilledModel,
    DistillError,
    DistillParams,
    LinearHead,
    TrainingSet,
    design_matrix,
    profanity_version,
    sigmoid,
    target_logit,
    trainable_attributes,
)
from bsky_warehouse.metrics import spearman
from bsky_warehouse.schema import EMBEDDING_DIM

# Pipelines --------------------------------------------------------------------------------------------------


class WeightedExtras(BaseEstimator, TransformerMixin):
    """Leaves the first `n_embedding` columns as they are; standardizes the rest (on the rows it is fitted on)
    and multiplies them by `weight`. Under one ridge penalty, the weight sets how much those columns are shrunk
    relative to the embedding."""

    def __init__(self, n_embedding: int = EMBEDDING_DIM, weight: float = 0.2) -> None:
        self.n_embedding = n_embedding
        self.weight = weight

    def fit(self, x: np.ndarray, y: object = None) -> WeightedExtras:
        extras = np.asarray(x, dtype=np.float64)[:, self.n_embedding :]
        self.mean_ = extras.mean(axis=0)
        scale = extras.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        extras = (x[:, self.n_embedding :] - self.mean_) / self.scale_ * self.weight
        return np.hstack([x[:, : self.n_embedding], extras])


def make_pipeline(weight: float) -> Pipeline:
    return Pipeline([("extras", WeightedExtras(EMBEDDING_DIM, weight)), ("ridge", RidgeCV(alphas=ALPHAS))])


# Fitting ----------------------------------------------------------------------------------------------------


def _kfold(folds: int, seed: int, n: int) -> KFold:
    if n < folds:
        raise DistillError(f"{n} training posts cannot make {folds} folds")
    return KFold(folds, shuffle=True, random_state=seed)


def pooled_cv_predictions(template: Pipeline, x: np.ndarray, z: np.ndarray, folds: KFold) -> np.ndarray:
    """Every row predicted by a clone of `template` fitted on the other folds."""
    out = np.empty(len(z))
    for train, test in folds.split(x):
        out[test] = clone(template).fit(x[train], z[train]).predict(x[test])
    return out


def select_and_fit(x: np.ndarray, z: np.ndarray, params: DistillParams, seed: int) -> tuple[Pipeline, float]:
    """Choose the extra-feature weight by an inner CV over these rows only (best pooled Spearman; ties: the
    smaller weight), then refit on all of them. The ridge penalty is chosen inside each fit by RidgeCV."""
    weights = params.text_weights()
    best = weights[0]
    if len(weights) > 1:
        inner = _kfold(params.folds, seed, len(z))
        scores = [spearman(pooled_cv_predictions(make_pipeline(w), x, z, inner), z) or -1.0 for w in weights]
        best = weights[int(np.argmax(scores))]
    return make_pipeline(best).fit(x, z), best


def fold_pipeline(attribute: str, pipeline: Pipeline, anchors: np.ndarray, n_text: int) -> LinearHead:
    """The fitted pipeline as one linear function of (embedding, text features): the standardization and weight
    divide into the coefficients, the anchor similarities (E·a) add their coefficients onto the embedding's."""
    extras: WeightedExtras = pipeline.named_steps["extras"]
    ridge: RidgeCV = pipeline.named_steps["ridge"]
    coef = np.asarray(ridge.coef_, dtype=np.float64)
    on_extras = coef[EMBEDDING_DIM:] * extras.weight / extras.scale_
    intercept = float(ridge.intercept_) - float(on_extras @ extras.mean_)
    embedding_coef = coef[:EMBEDDING_DIM] + on_extras[n_text:] @ np.asarray(anchors, dtype=np.float64)
    return LinearHead(attribute, embedding_coef, on_extras[:n_text], intercept, extras.weight, float(ridge.alpha_))


def cross_validate_attribute(
    attribute: str, x: np.ndarray, y: np.ndarray, params: DistillParams, anchors: np.ndarray, n_text: int
) -> tuple[np.ndarray, np.ndarray, list[float], LinearHead]:
    """Nested CV: each outer fold selects and fits on the other folds only; then the same on every row."""
    z = target_logit(y)
    oof = np.empty(len(z))
    fold_of = np.empty(len(z), dtype=np.int32)
    weights = []
    for k, (train, test) in enumerate(_kfold(params.folds, params.seed, len(z)).split(x)):
        pipeline, weight = select_and_fit(x[train], z[train], params, params.seed + 1)
        oof[test] = sigmoid(pipeline.predict(x[test]))
        fold_of[test] = k
        weights.append(weight)
    pipeline, _ = select_and_fit(x, z, params, params.seed + 1)
    return oof, fold_of, weights, fold_pipeline(attribute, pipeline, anchors, n_text)


def model_version(
    training: TrainingSet,
    columns: Sequence[str],
    params: DistillParams,
    embedding_model: str,
    training_scorers: Sequence[str],
    anchors: np.ndarray,
) -> str:
    """Same data, features and parameters → same version; any change in them → a new one."""
    digest = hashlib.sha256()
    spec = {
        "algorithm": ALGORITHM,
        "params": asdict(params),
        "alphas": ALPHAS,
        "target_clip": TARGET_CLIP,
        "weights": params.text_weights(),
        "embedding_model": embedding_model,
        "training_scorers": list(training_scorers),
        "attributes": list(columns),
        "text_features": TEXT_FEATURES,
        "profanity_check": profanity_version(),
        "anchors": ANCHOR_TEXTS,
        "sklearn": sklearn.__version__,
    }
    digest.update(json.dumps(spec, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(anchors, dtype=np.float32).tobytes())
    digest.update("\n".join(training.uris).encode())
    digest.update(np.ascontiguousarray(training.embeddings, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(training.text, dtype=np.float64).tobytes())
    for column in columns:
        digest.update(column.encode())
        digest.update(np.ascontiguousarray(training.targets[column], dtype=np.float64).tobytes())
        digest.update("\n".join(s or "" for s in training.sources[column]).encode())
    return f"distilled-{digest.hexdigest()[:16]}"


def fit_distilled(
    training: TrainingSet,
    params: DistillParams,
    embedding_model: str,
    training_scorers: Sequence[str],
    anchors: np.ndarray,
    attributes: Sequence[str] | None = None,
) -> tuple[DistilledModel, list[AttributeFit]]:
    """Cross-validate and refit every trainable attribute on its own rows (posts that have its score).

    BLAS runs single-threaded here: the matrices are a few hundred rows, where threads cost more in hand-offs
    than they save (measured 5x slower with two threads on a loaded 2-core machine)."""
    params.text_weights()
    columns = trainable_attributes(training, attributes, params.min_posts)
    x_all = design_matrix(training.embeddings, training.text, anchors)
    n_text = training.text.shape[1]
    fits = []
    for column in columns:
        rows = np.flatnonzero(np.isfinite(training.targets[column]))
        y = training.targets[column][rows]
        with threadpool_limits(1):
            oof, fold_of, weights, head = cross_validate_attribute(column, x_all[rows], y, params, anchors, n_text)
        fits.append(
            AttributeFit(
                column,
                head,
                [training.uris[i] for i in rows],
                y,
                [str(training.sources[column][i]) for i in rows],
                oof,
                fold_of,
                weights,
            )
        )
    version = model_version(training, columns, params, embedding_model, training_scorers, anchors)
    stored = {**asdict(params), "algorithm": ALGORITHM, "training_scorers": list(training_scorers)}
    return DistilledModel(version, embedding_model, stored, {f.attribute: f.head for f in fits}), fits
