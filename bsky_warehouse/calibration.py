"""Personal calibration: what one rater would flag, learned from that rater's own judgements of a system.

A toxicity scorer or a sociopolitical labeler is tuned for an imagined average reader. indie-label's answer is
to let a person rate a few dozen posts (at least 40) and fit a model of *their* judgements on top of the
system's output, then show what that model would flag everywhere. Here the inputs are the system's output in
the warehouse (a scorer's `prob_toxicity`, a labeler's `is_sociopolitical` as 0/1), optionally the post
embeddings, and the rater's rows in `human_judgements`.

The figure that matters is the cross-validated one. Every fold's scaler, spline and model are fitted on the
other folds only (one scikit-learn Pipeline per fold, hyper-parameters chosen inside it), and the system's own
error is measured on the same held-out posts, so the two numbers compare like with like. A constant baseline
(the training folds' mean or majority) is reported too: a calibration that cannot beat it has learned nothing
about the rater, however much better than the system it looks.

Everything on a common [0, 1] scale: toxicity judgements (indie-label's 0–4, −1 = unsure and left out) are
divided by 4; sociopolitical judgements are 1.0 yes / 0.0 no.

This module reads and writes the warehouse and imports no scikit-learn (the rater app, the CLI and every
Dagster step process import it); the pipelines and their cross-validation are in calibration_fit.py, which
`run_calibration` imports when it fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd

from bsky_warehouse.resources.warehouse import insert_rows, registered, transaction

if TYPE_CHECKING:
    from bsky_warehouse.calibration_fit import FittedCalibration

MIN_JUDGEMENTS = 40
FOLDS = 5
SEED = 0
FLAG_THRESHOLD = 0.5
TOXICITY_SCALE_MAX = 4.0
UNSURE = -1.0
FEATURES_SYSTEM = "system"
FEATURES_EMBEDDINGS = "system+embeddings"
# Which system output each task calibrates, and the error reported for it.
TASK_SYSTEM_KIND = {"toxicity": "scorer", "sociopolitical": "labeler"}
TASK_METRIC = {"toxicity": "mae", "sociopolitical": "error_rate"}


class CalibrationError(ValueError):
    """The inputs cannot support a calibration (unknown system, too few judgements, missing embeddings)."""


class NotEnoughJudgements(CalibrationError):
    def __init__(self, rater: str, task: str, system: str, usable: int, total: int, detail: str = "") -> None:
        self.rater, self.usable, self.total = rater, usable, total
        super().__init__(
            f"rater {rater!r} has {usable} usable {task} judgements of posts covered by {system} "
            f"({total} judgements in all{detail}); calibration needs at least {MIN_JUDGEMENTS}"
        )


@dataclass(frozen=True)
class System:
    """A scorer (`scorer:<scorer>`, its prob_toxicity) or a labeler (`labeler:<labeler>/<model>`, its
    is_sociopolitical; where a labeler/model has several prompt versions, a post's latest label wins)."""

    kind: str
    producer: str
    model: str | None = None

    @classmethod
    def parse(cls, text: str) -> System:
        kind, sep, rest = text.partition(":")
        if sep and kind == "scorer" and rest:
            return cls("scorer", rest)
        if sep and kind == "labeler":
            labeler, slash, model = rest.partition("/")
            if labeler and slash and model:
                return cls("labeler", labeler, model)
        raise CalibrationError(f"system {text!r}: expected 'scorer:<scorer>' or 'labeler:<labeler>/<model>'")

    def __str__(self) -> str:
        return f"scorer:{self.producer}" if self.kind == "scorer" else f"labeler:{self.producer}/{self.model}"

    def output_sql(self) -> str:
        """uri, output (DOUBLE on [0, 1]) and partition_date for every post the system has an answer for."""
        if self.kind == "scorer":
            return """SELECT uri, prob_toxicity AS output, partition_date FROM toxicity_scores
                      WHERE scorer = $producer AND status = 'ok' AND prob_toxicity IS NOT NULL"""
        return """SELECT uri, is_sociopolitical::DOUBLE AS output, partition_date FROM llm_labels
                  WHERE labeler = $producer AND model = $model AND status = 'ok' AND is_sociopolitical IS NOT NULL
                  QUALIFY row_number() OVER (PARTITION BY uri ORDER BY labeled_at DESC, prompt_version DESC) = 1"""

    def params(self) -> dict[str, str]:
        """The parameters `output_sql` names (DuckDB refuses unused ones)."""
        return (
            {"producer": self.producer}
            if self.kind == "scorer"
            else {"producer": self.producer, "model": self.model or ""}
        )


def check_task(task: str, system: System) -> None:
    expected = TASK_SYSTEM_KIND.get(task)
    if expected is None:
        raise CalibrationError(f"task {task!r}: calibration supports {sorted(TASK_SYSTEM_KIND)}")
    if system.kind != expected:
        example = "scorer:<scorer>" if expected == "scorer" else "labeler:<labeler>/<model>"
        raise CalibrationError(
            f"task {task!r} calibrates a {expected}'s output: system must be {example}, got {system}"
        )


@dataclass
class Judged:
    """The training set: judged posts the system covers, in uri order."""

    uris: list[str]
    system_output: np.ndarray
    target: np.ndarray
    embeddings: np.ndarray | None = None

    def features(self, with_embeddings: bool) -> np.ndarray:
        if not with_embeddings:
            return design_matrix(self.system_output, None)
        if self.embeddings is None:
            raise CalibrationError("a fit with embeddings needs the judged posts' embeddings")
        return design_matrix(self.system_output, self.embeddings)


def design_matrix(system_output: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
    """Column 0 is the system's output; the embedding dimensions, when used, follow."""
    column = np.asarray(system_output, dtype=float).reshape(-1, 1)
    if embeddings is None:
        return column
    return np.hstack([column, np.asarray(embeddings, dtype=float)])


# Reading and writing the warehouse -------------------------------------------------------------------------


def judgement_sql(task: str) -> str:
    """The rater's usable judgements on the [0, 1] scale (toxicity: 0–4 only, so −1 'unsure' is left out)."""
    if task == "toxicity":
        return f"""SELECT uri, value / {TOXICITY_SCALE_MAX} AS target FROM human_judgements
                   WHERE rater = $rater AND task = $task AND value BETWEEN 0 AND {TOXICITY_SCALE_MAX}"""
    return """SELECT uri, value AS target FROM human_judgements
              WHERE rater = $rater AND task = $task AND value IN (0, 1)"""


def resolve_embedding_model(con: duckdb.DuckDBPyConnection, requested: str | None) -> str:
    models = [r[0] for r in con.execute("SELECT DISTINCT embedding_model FROM post_embeddings ORDER BY 1").fetchall()]
    if requested:
        if requested not in models:
            raise CalibrationError(f"no post_embeddings from {requested!r} (present: {models or 'none'})")
        return requested
    if len(models) != 1:
        raise CalibrationError(
            f"post_embeddings holds {len(models)} embedding models ({models}): name one"
            if models
            else "use_embeddings: post_embeddings is empty; materialize post_embeddings first"
        )
    return models[0]


def load_judged(
    con: duckdb.DuckDBPyConnection,
    rater: str,
    task: str,
    system: System,
    use_embeddings: bool,
    embedding_model: str | None = None,
) -> tuple[Judged, str | None]:
    """The rater's usable judgements joined to the system's output (and embeddings); raises when too few."""
    check_task(task, system)
    params = {"rater": rater, "task": task, **system.params()}
    total, unsure = con.execute(
        """SELECT count(*), count(*) FILTER (WHERE value = $unsure) FROM human_judgements
           WHERE rater = $rater AND task = $task""",
        {"rater": rater, "task": task, "unsure": UNSURE},
    ).fetchall()[0]
    rows = con.execute(
        f"""WITH j AS ({judgement_sql(task)}), s AS ({system.output_sql()})
            SELECT j.uri, s.output, j.target FROM j JOIN s USING (uri) ORDER BY j.uri""",
        params,
    ).fetchnumpy()
    n = len(rows["uri"])
    if n < MIN_JUDGEMENTS:
        detail = f", {unsure} unsure" if task == "toxicity" and unsure else ""
        raise NotEnoughJudgements(rater, task, str(system), n, total, detail)
    judged = Judged(list(rows["uri"]), rows["output"].astype(float), rows["target"].astype(float))
    if not use_embeddings:
        return judged, None
    model = resolve_embedding_model(con, embedding_model)
    with registered(con, "judged_uris", pd.DataFrame({"uri": judged.uris})):
        found = con.execute(
            """SELECT j.uri, e.embedding FROM judged_uris j
               JOIN post_embeddings e ON e.uri = j.uri AND e.embedding_model = $model ORDER BY j.uri""",
            {"model": model},
        ).fetchnumpy()
    if len(found["uri"]) != n:
        raise CalibrationError(
            f"use_embeddings: {n - len(found['uri'])} of the {n} judged posts have no {model!r} embedding; "
            "materialize post_embeddings for their days first"
        )
    judged.embeddings = np.stack(found["embedding"]).astype(np.float32)
    return judged, model


def population_days(con: duckdb.DuckDBPyConnection, system: System) -> list[date]:
    rows = con.execute(
        f"SELECT DISTINCT partition_date FROM ({system.output_sql()}) ORDER BY 1", system.params()
    ).fetchall()
    return [r[0] for r in rows]


def load_population_day(
    con: duckdb.DuckDBPyConnection, system: System, day: date, embedding_model: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One day of posts the system covers (and, with embeddings, that have one): uris, outputs, embeddings."""
    params = {**system.params(), "day": day}
    if embedding_model is None:
        rows = con.execute(
            f"SELECT uri, output FROM ({system.output_sql()}) WHERE partition_date = $day ORDER BY uri", params
        ).fetchnumpy()
        return rows["uri"], rows["output"].astype(float), None
    rows = con.execute(
        f"""SELECT s.uri, s.output, e.embedding FROM ({system.output_sql()}) s
            JOIN post_embeddings e ON e.uri = s.uri AND e.embedding_model = $embedding_model
            WHERE s.partition_date = $day ORDER BY s.uri""",
        {**params, "embedding_model": embedding_model},
    ).fetchnumpy()
    embeddings = np.stack(rows["embedding"]).astype(np.float32) if len(rows["uri"]) else np.empty((0, 0))
    return rows["uri"], rows["output"].astype(float), embeddings


def calibration_rows(
    rater: str,
    task: str,
    system: System,
    fitted: list[FittedCalibration],
    n: int,
    embedding_model: str | None,
    fitted_at: datetime,
    projected: FittedCalibration,
) -> list[dict[str, Any]]:
    return [
        {
            "rater": rater,
            "task": task,
            "system": str(system),
            "features": f.features,
            "embedding_model": embedding_model if f.features == FEATURES_EMBEDDINGS else None,
            "n_judgements": n,
            "folds": FOLDS,
            "metric": f.cv.metric,
            "cv_error_system": f.cv.error_system,
            "cv_error_calibrated": f.cv.error_calibrated,
            "cv_error_baseline": f.cv.error_baseline,
            "cv_brier_system": f.cv.brier_system,
            "cv_brier_calibrated": f.cv.brier_calibrated,
            "flag_threshold": FLAG_THRESHOLD,
            "projected": f is projected,
            "model_version": f.version,
            "fitted_at": fitted_at,
        }
        for f in fitted
    ]


def write_calibration(
    con: duckdb.DuckDBPyConnection,
    rater: str,
    task: str,
    system: System,
    rows: list[dict[str, Any]],
    predictions: pd.DataFrame,
) -> None:
    """Replace everything this (rater, task, system) had, in one transaction: re-fitting is idempotent."""
    key = {"rater": rater, "task": task, "system": str(system)}
    projected = next(r for r in rows if r["projected"])
    with registered(con, "prediction_frame", predictions), transaction(con):
        for table in ("rater_calibrations", "calibrated_predictions"):
            con.execute(f"DELETE FROM {table} WHERE rater = $rater AND task = $task AND system = $system", key)
        insert_rows(con, "rater_calibrations", rows)
        con.execute(
            """INSERT INTO calibrated_predictions BY NAME
               SELECT uri, $rater AS rater, $task AS task, $system AS system, $version AS model_version,
                      prediction, prediction >= $threshold AS flagged, partition_date::DATE AS partition_date
               FROM prediction_frame""",
            {**key, "version": projected["model_version"], "threshold": FLAG_THRESHOLD},
        )


def run_calibration(
    warehouse: Any,
    rater: str,
    task: str,
    system: str,
    use_embeddings: bool = False,
    embedding_model: str | None = None,
) -> dict[str, Any]:
    """Read (short), fit and cross-validate (no lock held), project day by day (short reads), write (one
    transaction). `warehouse` is a WarehouseResource; returns the summary the CLI prints and the asset records."""
    # scikit-learn only when fitting: every Dagster step process imports this module.
    from bsky_warehouse.calibration_fit import calibrate, choose_projection, predict

    parsed = System.parse(system)
    check_task(task, parsed)
    with warehouse.connect() as con:
        judged, used_model = load_judged(con, rater, task, parsed, use_embeddings, embedding_model)
        days = population_days(con, parsed)
    fitted = calibrate(task, judged, use_embeddings, used_model)
    projected = choose_projection(fitted)
    projection_model = used_model if projected.features == FEATURES_EMBEDDINGS else None
    frames = []
    for day in days:
        with warehouse.connect() as con:
            uris, outputs, embeddings = load_population_day(con, parsed, day, projection_model)
        if len(uris):
            prediction = predict(task, projected.model, design_matrix(outputs, embeddings))
            frames.append(pd.DataFrame({"uri": uris, "prediction": prediction, "partition_date": day.isoformat()}))
    predictions = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(
            {
                "uri": pd.Series([], dtype=str),
                "prediction": pd.Series([], dtype=float),
                "partition_date": pd.Series([], dtype=str),
            }
        )
    )
    now = datetime.now(UTC)
    rows = calibration_rows(rater, task, parsed, fitted, len(judged.uris), used_model, now, projected)
    with warehouse.connect() as con:
        write_calibration(con, rater, task, parsed, rows, predictions)
    flagged = int((predictions["prediction"] >= FLAG_THRESHOLD).sum())
    return {
        "rater": rater,
        "task": task,
        "system": str(parsed),
        "n_judgements": len(judged.uris),
        "folds": FOLDS,
        "metric": TASK_METRIC[task],
        "model_version": projected.version,
        "projected_features": projected.features,
        "fits": [
            {
                "features": f.features,
                "model_version": f.version,
                "cv_error_system": f.cv.error_system,
                "cv_error_calibrated": f.cv.error_calibrated,
                "cv_error_baseline": f.cv.error_baseline,
                "cv_brier_system": f.cv.brier_system,
                "cv_brier_calibrated": f.cv.brier_calibrated,
                "per_fold": f.cv.per_fold,
                "projected": f is projected,
            }
            for f in fitted
        ],
        "projected_posts": len(predictions),
        "flagged_posts": flagged,
        "flag_threshold": FLAG_THRESHOLD,
    }
