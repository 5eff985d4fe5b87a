"""Fitting a personal calibration (calibration.py): the per-rater pipelines, their cross-validation against
the system and a constant baseline, the refit for the projection, and the model's version.

Kept apart from calibration.py because it imports scikit-learn (about 3 s): only a fit imports this module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import SplineTransformer, StandardScaler

from bsky_warehouse.calibration import (
    FEATURES_EMBEDDINGS,
    FEATURES_SYSTEM,
    FLAG_THRESHOLD,
    FOLDS,
    SEED,
    TASK_METRIC,
    CalibrationError,
    Judged,
)


def make_pipeline(task: str, with_embeddings: bool) -> Pipeline:
    """The per-rater model. Toxicity: a quadratic spline of the score, so a rater's non-linear reading of it
    (stricter at the low end, say) can be learned, plus standardized embeddings, into a ridge regression whose
    penalty is chosen by leave-one-out on the training folds only. Sociopolitical: a logistic regression on the
    label (plus embeddings), its penalty chosen by an inner stratified CV on the training folds."""
    embedding = [("embedding", StandardScaler(), slice(1, None))] if with_embeddings else []
    if task == "toxicity":
        spline = SplineTransformer(n_knots=4, degree=2, extrapolation="constant")
        columns = ColumnTransformer([("system", spline, [0]), *embedding])
        return Pipeline([("features", columns), ("model", RidgeCV(alphas=np.logspace(-3, 3, 13)))])
    columns = ColumnTransformer([("system", "passthrough", [0]), *embedding])
    model = LogisticRegressionCV(
        Cs=np.logspace(-3, 2, 11),
        l1_ratios=(0.0,),
        cv=StratifiedKFold(3, shuffle=True, random_state=SEED),
        scoring="neg_log_loss",
        max_iter=2000,
        use_legacy_attributes=False,
    )
    return Pipeline([("features", columns), ("model", model)])


def predict(task: str, pipeline: Pipeline, x: np.ndarray) -> np.ndarray:
    """The model's answer on the [0, 1] scale: expected judgement / 4, or the probability of 'yes'."""
    if task == "toxicity":
        return np.clip(pipeline.predict(x), 0.0, 1.0)
    return pipeline.predict_proba(x)[:, 1]


def errors(task: str, predicted: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(the task's metric, Brier / mean squared error), both on the [0, 1] scale."""
    brier = float(np.mean((predicted - target) ** 2))
    if task == "toxicity":
        return float(np.mean(np.abs(predicted - target))), brier
    return float(np.mean((predicted >= FLAG_THRESHOLD) != (target >= FLAG_THRESHOLD))), brier


def folds(task: str, target: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if task == "toxicity":
        return KFold(FOLDS, shuffle=True, random_state=SEED).split(target)
    return StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(target, target)


@dataclass
class CrossValidation:
    """Out-of-fold answers of the system, the calibrated model and the constant baseline, and their errors."""

    metric: str
    error_system: float
    error_calibrated: float
    error_baseline: float
    brier_system: float
    brier_calibrated: float
    brier_baseline: float
    per_fold: list[dict[str, float]] = field(default_factory=list)


def cross_validate(task: str, judged: Judged, with_embeddings: bool) -> CrossValidation:
    """K-fold CV (k=5, fixed seed; stratified for yes/no): a fresh pipeline per fold, fitted on the other four."""
    x = judged.features(with_embeddings)
    y = judged.target
    template = make_pipeline(task, with_embeddings)
    calibrated = np.empty_like(y)
    baseline = np.empty_like(y)
    per_fold = []
    for train, test in folds(task, y):
        model = clone(template).fit(x[train], y[train] if task == "toxicity" else (y[train] >= 0.5).astype(int))
        calibrated[test] = predict(task, model, x[test])
        baseline[test] = float(np.mean(y[train]))
        per_fold.append(
            {
                "n": int(test.size),
                "system": errors(task, judged.system_output[test], y[test])[0],
                "calibrated": errors(task, calibrated[test], y[test])[0],
            }
        )
    error_system, brier_system = errors(task, judged.system_output, y)
    error_calibrated, brier_calibrated = errors(task, calibrated, y)
    error_baseline, brier_baseline = errors(task, baseline, y)
    return CrossValidation(
        TASK_METRIC[task],
        error_system,
        error_calibrated,
        error_baseline,
        brier_system,
        brier_calibrated,
        brier_baseline,
        per_fold,
    )


def fit(task: str, judged: Judged, with_embeddings: bool) -> Pipeline:
    """The model refitted on every judgement, for the projection."""
    x = judged.features(with_embeddings)
    y = judged.target if task == "toxicity" else (judged.target >= 0.5).astype(int)
    return make_pipeline(task, with_embeddings).fit(x, y)


def model_version(task: str, features: str, embedding_model: str | None, judged: Judged) -> str:
    """Names the fitted model by what determines it (method, library version, training data), so refitting
    the same judgements gives the same version and any change in them gives a new one."""
    digest = hashlib.sha256()
    spec = {
        "task": task,
        "features": features,
        "embedding_model": embedding_model,
        "folds": FOLDS,
        "seed": SEED,
        "pipeline": repr(make_pipeline(task, features == FEATURES_EMBEDDINGS)),
        "sklearn": sklearn.__version__,
    }
    digest.update(json.dumps(spec, sort_keys=True).encode())
    digest.update("\n".join(judged.uris).encode())
    digest.update(np.ascontiguousarray(judged.system_output, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(judged.target, dtype=np.float64).tobytes())
    if features == FEATURES_EMBEDDINGS and judged.embeddings is not None:
        digest.update(np.ascontiguousarray(judged.embeddings, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


@dataclass
class FittedCalibration:
    """One feature set's cross-validated figures and its model refitted on every judgement."""

    features: str
    version: str
    cv: CrossValidation
    model: Pipeline


def calibrate(
    task: str, judged: Judged, use_embeddings: bool, embedding_model: str | None = None
) -> list[FittedCalibration]:
    """Cross-validate and refit: the system's output alone, and with embeddings as well when asked."""
    n = len(judged.uris)
    if task == "sociopolitical":
        yes = int(np.sum(judged.target >= 0.5))
        if min(yes, n - yes) < FOLDS:
            raise CalibrationError(
                f"{yes} 'yes' and {n - yes} 'no' judgements: stratified {FOLDS}-fold CV needs {FOLDS} of each"
            )
    feature_sets = [FEATURES_SYSTEM, FEATURES_EMBEDDINGS] if use_embeddings else [FEATURES_SYSTEM]
    out = []
    for features in feature_sets:
        with_embeddings = features == FEATURES_EMBEDDINGS
        out.append(
            FittedCalibration(
                features,
                model_version(task, features, embedding_model if with_embeddings else None, judged),
                cross_validate(task, judged, with_embeddings),
                fit(task, judged, with_embeddings),
            )
        )
    return out


def choose_projection(fitted: list[FittedCalibration]) -> FittedCalibration:
    """The feature set with the lower cross-validated error (the simpler one on a tie). Embeddings help a rater
    whose judgements follow the topic of a post and only add noise for one who reads the score alone; which is
    which shows in the cross-validation, and both rows stay in rater_calibrations."""
    return min(fitted, key=lambda f: f.cv.error_calibrated)
