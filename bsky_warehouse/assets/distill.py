"""The distilled Perspective scorer's fit as an asset: on demand, not per day, with its own job.

`distilled_models` reads the Perspective scores the warehouse holds (the configured training scorers, the first
listed winning where a post has several), the posts' stored embeddings and texts, cross-validates and refits
one head per attribute (distill_fit.py), and stores the heads with their cross-validated figures in
`distilled_models` and every training post's out-of-fold prediction in `distilled_oof_predictions`, under a
version that digests data, features and parameters. A refit over the same data keeps the version (and marks
it fitted now, so it is current again). The writer connection is held only to read and to write, never while
fitting. Scoring is the `toxicity_scores` asset with scorer `perspective-distilled`.
"""

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetSelection,
    AssetSpec,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    define_asset_job,
    multi_asset,
)
from pydantic import Field

from bsky_warehouse.assets.topics import as_matrix
from bsky_warehouse.calibration import CalibrationError, resolve_embedding_model
from bsky_warehouse.distill import (
    ANCHOR_TEXTS,
    DEFAULT_TRAINING_SCORERS,
    FAMILIES,
    SCORER_NAME,
    TEXT_FEATURES,
    AttributeFit,
    DistilledModel,
    DistillError,
    DistillParams,
    LinearHead,
    TrainingSet,
    text_features,
)
from bsky_warehouse.records import PROB_COLUMNS
from bsky_warehouse.resources.warehouse import WarehouseResource, insert_rows, registered, transaction


class DistillConfig(Config):
    training_scorers: list[str] = Field(
        default=list(DEFAULT_TRAINING_SCORERS),
        description="Scorers whose `ok` scores are the targets; where a post has several, the first listed wins.",
    )
    attributes: list[str] | None = Field(
        default=None, description="Attributes to distil (e.g. TOXICITY); default: every one with enough scores."
    )
    model_family: str = Field(
        default="ridge", description=f"{sorted(FAMILIES)}: `ridge` uses embeddings and text features."
    )
    folds: int = Field(default=5, description="Outer and inner cross-validation folds.")
    seed: int = Field(default=0, description="Fold shuffling seed.")
    embedding_model: str | None = Field(default=None, description="Which post_embeddings model; default: the only one.")


def load_training(
    con: duckdb.DuckDBPyConnection, training_scorers: Sequence[str], embedding_model: str
) -> tuple[TrainingSet, int]:
    """Eligible embedded posts with an `ok` score from a training scorer; (set, posts left out for lack of an
    embedding). Per attribute, a post's target comes from the first training scorer that gave one."""
    if not training_scorers:
        raise DistillError("training_scorers is empty")
    columns = ", ".join(f"s.{c}" for c in PROB_COLUMNS)
    rows = con.execute(
        f"""SELECT s.uri, s.scorer, c.text, e.embedding, {columns} FROM toxicity_scores s
            JOIN cleaned_posts c ON c.uri = s.uri AND c.passes_filters
            LEFT JOIN post_embeddings e ON e.uri = s.uri AND e.embedding_model = $model
            WHERE s.status = 'ok' AND list_contains($scorers, s.scorer)
            ORDER BY s.uri, list_position($scorers, s.scorer)""",
        {"model": embedding_model, "scorers": list(training_scorers)},
    ).fetchall()
    missing = {row[0] for row in rows if row[3] is None}
    rows = [row for row in rows if row[3] is not None]
    uris = list(dict.fromkeys(row[0] for row in rows))
    index = {uri: i for i, uri in enumerate(uris)}
    texts: list[str] = [""] * len(uris)
    vectors: list[Any] = [None] * len(uris)
    targets = {c: np.full(len(uris), np.nan) for c in PROB_COLUMNS}
    sources: dict[str, list[str | None]] = {c: [None] * len(uris) for c in PROB_COLUMNS}
    for uri, scorer, text, embedding, *probs in rows:  # first the preferred scorer's row, per uri
        i = index[uri]
        texts[i], vectors[i] = text or "", embedding
        for column, value in zip(PROB_COLUMNS, probs, strict=True):
            if value is not None and sources[column][i] is None:
                targets[column][i], sources[column][i] = float(value), scorer
    training = TrainingSet(uris, as_matrix(vectors), text_features(texts), targets, sources)
    return training, len(missing)


def current_distilled_version(con: duckdb.DuckDBPyConnection) -> str | None:
    """The most recently fitted model (ties: the greater version, so the answer never wavers)."""
    row = con.execute(
        "SELECT model_version FROM distilled_models ORDER BY fitted_at DESC, model_version DESC LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def store_distilled(
    con: duckdb.DuckDBPyConnection, model: DistilledModel, fits: Sequence[AttributeFit], fitted_at: datetime
) -> bool:
    """Insert the heads and out-of-fold predictions, or (same version fitted again) mark it fitted now; True if
    inserted."""
    with transaction(con):
        exists = con.execute(
            "SELECT count(*) FROM distilled_models WHERE model_version = $v", {"v": model.version}
        ).fetchall()[0][0]
        if exists:
            con.execute(
                "UPDATE distilled_models SET fitted_at = $at WHERE model_version = $v",
                {"at": fitted_at, "v": model.version},
            )
            return False
        heads = pd.DataFrame.from_records(
            [
                {
                    "attribute": f.attribute,
                    "embedding_coef": f.head.embedding_coef.tolist(),
                    "text_coef": f.head.text_coef.tolist(),
                    "intercept": f.head.intercept,
                    "text_weight": f.head.text_weight,
                    "alpha": f.head.alpha,
                    "n_train": figures["n"],
                    "n_positive": figures["n_positive"],
                    "cv_spearman": figures["spearman"],
                    "cv_pearson": figures["pearson"],
                    "cv_auc": figures["auc"],
                }
                for f in fits
                for figures in [f.figures()]
            ]
        )
        heads["model_version"] = model.version
        heads["embedding_model"] = model.embedding_model
        heads["training_scorers"] = [list(model.params["training_scorers"])] * len(heads)
        heads["params"] = json.dumps(model.params, sort_keys=True)
        heads["text_features"] = [list(TEXT_FEATURES)] * len(heads)
        heads["cv_folds"] = int(model.params["folds"])
        heads["fitted_at"] = fitted_at
        oof = pd.DataFrame(
            {
                "uri": [u for f in fits for u in f.uris],
                "attribute": [f.attribute for f in fits for _ in f.uris],
                "training_scorer": [s for f in fits for s in f.sources],
                "target": np.concatenate([f.target for f in fits]),
                "prediction": np.concatenate([f.oof for f in fits]),
                "fold": np.concatenate([f.fold for f in fits]).astype(np.int32),
            }
        )
        oof["model_version"] = model.version
        insert_rows(con, "distilled_models", heads)
        insert_rows(con, "distilled_oof_predictions", oof)
    return True


def load_distilled(con: duckdb.DuckDBPyConnection, version: str) -> DistilledModel:
    rows = con.execute(
        """SELECT attribute, embedding_coef, text_coef, intercept, text_weight, alpha, embedding_model, params,
                  text_features
           FROM distilled_models WHERE model_version = $v ORDER BY attribute""",
        {"v": version},
    ).fetchall()
    if not rows:
        known = [r[0] for r in con.execute("SELECT DISTINCT model_version FROM distilled_models ORDER BY 1").fetchall()]
        raise Failure(f"no distilled model {version!r} in distilled_models (stored: {known or 'none'})")
    if list(rows[0][8]) != list(TEXT_FEATURES):
        raise Failure(f"distilled model {version} was fitted on text features {rows[0][8]}, this code computes "
                      f"{list(TEXT_FEATURES)}: fit a new one")  # fmt: skip
    heads = {
        attribute: LinearHead(attribute, np.asarray(e, dtype=np.float64), np.asarray(t, dtype=np.float64), b, w, a)
        for attribute, e, t, b, w, a, *_ in rows
    }
    ordered = {c: heads[c] for c in PROB_COLUMNS if c in heads}
    return DistilledModel(version, rows[0][6], json.loads(rows[0][7]), ordered)


def resolve_distilled(con: duckdb.DuckDBPyConnection, version: str | None) -> DistilledModel:
    """The configured stored version, else the current one; a clear error when none is stored."""
    chosen = version or current_distilled_version(con)
    if chosen is None:
        raise Failure(
            f"scorer {SCORER_NAME!r} needs a fitted model: run the job distill_perspective "
            "(asset distilled_models) first"
        )
    return load_distilled(con, chosen)


def fetch_embeddings(
    con: duckdb.DuckDBPyConnection, embedding_model: str, uris: Sequence[str]
) -> dict[str, np.ndarray]:
    """uri → stored embedding, for those of `uris` that have one from this model."""
    if not uris:
        return {}
    with registered(con, "wanted_uris", pd.DataFrame({"uri": list(uris)})):
        found = con.execute(
            """SELECT e.uri, e.embedding FROM wanted_uris w
               JOIN post_embeddings e ON e.uri = w.uri AND e.embedding_model = $model""",
            {"model": embedding_model},
        ).fetchnumpy()
    return dict(zip(found["uri"].tolist(), found["embedding"], strict=True))


def figures_markdown(fits: Sequence[AttributeFit]) -> str:
    lines = [
        "| attribute | n | positive (≥ 0.5) | Spearman | Pearson | ROC AUC | text weight | ridge alpha |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in fits:
        fig = f.figures()
        cells = [f"{fig[k]:.3f}" if fig[k] is not None else "—" for k in ("spearman", "pearson", "auc")]
        lines.append(
            f"| {f.attribute.removeprefix('prob_')} | {fig['n']} | {fig['n_positive']} | {' | '.join(cells)} | "
            f"{f.head.text_weight:g} | {f.head.alpha:g} |"
        )
    return "\n".join(lines)


def run_distill(warehouse: WarehouseResource, config: DistillConfig) -> tuple[DistilledModel, list[AttributeFit], dict]:
    """Read (short), embed the anchors and fit (no lock held), store (one transaction)."""
    from bsky_warehouse.distill_fit import fit_distilled  # scikit-learn: only when fitting
    from bsky_warehouse.embeddings import embed_texts  # torch: only when fitting

    params = DistillParams(family=config.model_family, folds=config.folds, seed=config.seed)
    try:
        params.text_weights()
        with warehouse.connect() as con:
            embedding_model = resolve_embedding_model(con, config.embedding_model)
            training, without_embedding = load_training(con, config.training_scorers, embedding_model)
        anchors = embed_texts(list(ANCHOR_TEXTS))
        model, fits = fit_distilled(
            training, params, embedding_model, config.training_scorers, anchors, config.attributes
        )
    except (DistillError, CalibrationError) as err:
        raise Failure(str(err)) from err
    with warehouse.connect() as con:
        inserted = store_distilled(con, model, fits, datetime.now(UTC))
    info = {"posts": len(training.uris), "without_embedding": without_embedding, "inserted": inserted}
    return model, fits, info


@multi_asset(
    specs=[
        AssetSpec(
            "distilled_models",
            deps=["toxicity_scores", "post_embeddings"],
            group_name="scores",
            description="The distilled Perspective scorer: one linear head per attribute on post embeddings and "
            "text features, fitted on stored Perspective scores, with its nested cross-validated figures; one row "
            "per (model_version, attribute). Score with toxicity_scores, scorer perspective-distilled.",
        ),
        AssetSpec(
            "distilled_oof_predictions",
            deps=["toxicity_scores", "post_embeddings"],
            group_name="scores",
            description="The out-of-fold prediction of every training post of each distilled model version, per "
            "attribute: what scorer agreement reads for those posts.",
        ),
    ],
)
def distilled_models(
    context: AssetExecutionContext, config: DistillConfig, warehouse: WarehouseResource
) -> Iterator[MaterializeResult]:
    model, fits, info = run_distill(warehouse, config)
    figures = {f.attribute.removeprefix("prob_"): f.figures() for f in fits}
    context.log.info(f"{model.version}: {'fitted' if info['inserted'] else 'refitted (same)'}; {figures}")
    metadata: dict[str, Any] = {
        "model_version": model.version,
        "model": "fitted" if info["inserted"] else "refitted_unchanged",
        "training_scorers": ", ".join(config.training_scorers),
        "model_family": config.model_family,
        "embedding_model": model.embedding_model,
        "training_posts": info["posts"],
        "without_embedding": info["without_embedding"],
        "attributes": len(fits),
        "cv_figures": MetadataValue.md(figures_markdown(fits)),
        "cv": MetadataValue.json(figures),
    }
    metadata.update({f"cv_spearman_{a}": fig["spearman"] for a, fig in figures.items() if fig["spearman"] is not None})
    yield MaterializeResult(asset_key="distilled_models", metadata=metadata)
    yield MaterializeResult(
        asset_key="distilled_oof_predictions",
        metadata={"model_version": model.version, "dagster/row_count": sum(len(f.uris) for f in fits)},
    )


distill_selection = AssetSelection.assets(distilled_models)
distill_job = define_asset_job(
    "distill_perspective",
    selection=distill_selection,
    description="Fit the distilled Perspective scorer on the stored Perspective scores (a new stored version).",
)
