"""The bridge across the change of instrument as an asset: on demand, over all history, with its own job.

`scorer_mappings` reads every post scored `ok` by both the local scorer and a reference (Perspective) scorer,
fits one quantile map per attribute (bridge.py) and stores its knots under a version that digests the data and
the parameters. A distilled model's score of a post it was trained on is replaced by that post's out-of-fold
prediction, as in `scorer_agreement`: after the switch every post is one the model never saw, and the map must
be fitted on scores that look like those. A re-run over the same data finds its version current and writes
nothing; a version fitted before another one is marked fitted now, so it is current again. The mart
`marts.scorer_bridge` (a whole-history dbt model, tag `global`) applies the current map per local scorer.
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetSelection,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)
from pydantic import Field

from bsky_warehouse.bridge import (
    DEFAULT_KNOTS,
    DEFAULT_LOCAL_SCORER,
    DEFAULT_REFERENCE_SCORERS,
    METHOD,
    MIN_OVERLAP,
    BridgeError,
    Knots,
    Overlap,
    fit_quantile_map,
    mapping_version,
    overlap_figures,
)
from bsky_warehouse.distill import DistillError, attribute_column
from bsky_warehouse.records import PROB_COLUMNS
from bsky_warehouse.resources.warehouse import WarehouseResource, insert_rows, transaction


class BridgeConfig(Config):
    local_scorer: str = Field(default=DEFAULT_LOCAL_SCORER, description="The scorer to put on the reference scale.")
    reference_scorers: list[str] = Field(
        default=list(DEFAULT_REFERENCE_SCORERS),
        description="Scorers whose `ok` scores define the scale; where a post has several, the first listed wins.",
    )
    attributes: list[str] | None = Field(
        default=None, description="Attributes to map (e.g. TOXICITY); default: every one with enough overlap."
    )
    n_knots: int = Field(default=DEFAULT_KNOTS, description="Quantile knots per attribute (fewer with fewer posts).")
    min_overlap: int = Field(default=MIN_OVERLAP, description="Posts scored by both an attribute needs to be mapped.")


OVERLAP_SQL = """
    WITH long AS (
        UNPIVOT (
            SELECT uri, scorer, scorer_version, 1.0 / coalesce(inclusion_probability, 1.0) AS weight,
                   COLUMNS('^prob_') FROM toxicity_scores
            WHERE status = 'ok' AND (scorer = $local OR list_contains($references, scorer))
        ) ON COLUMNS('^prob_') INTO NAME attribute VALUE prob
    ),
    reference AS (
        SELECT uri, attribute, prob, weight FROM long WHERE list_contains($references, scorer)
        QUALIFY row_number() OVER (PARTITION BY uri, attribute ORDER BY list_position($references, scorer)) = 1
    ),
    local AS (
        SELECT l.uri, l.attribute, l.scorer_version, coalesce(o.prediction, l.prob) AS prob,
               o.prediction IS NOT NULL AS out_of_fold
        FROM long AS l
        LEFT JOIN distilled_oof_predictions AS o
            ON o.model_version = l.scorer_version AND o.uri = l.uri AND o.attribute = l.attribute
        WHERE l.scorer = $local
    )
    SELECT l.attribute, l.uri, l.scorer_version, l.prob AS local, r.prob AS reference, l.out_of_fold, r.weight
    FROM local AS l JOIN reference AS r USING (uri, attribute)
    ORDER BY l.attribute, l.uri"""


def load_overlaps(
    con: duckdb.DuckDBPyConnection, local_scorer: str, reference_scorers: Sequence[str]
) -> tuple[dict[str, Overlap], list[str]]:
    """Per attribute (a toxicity_scores column), the posts both instruments scored; and the local scorer's
    versions among them."""
    if not reference_scorers:
        raise BridgeError("reference_scorers is empty")
    if local_scorer in reference_scorers:
        raise BridgeError(f"{local_scorer!r} cannot be mapped onto itself: leave it out of reference_scorers")
    frame = con.execute(OVERLAP_SQL, {"local": local_scorer, "references": list(reference_scorers)}).df()
    overlaps = {
        column: Overlap(
            column,
            rows["uri"].tolist(),
            rows["local"].to_numpy(dtype=np.float64),
            rows["reference"].to_numpy(dtype=np.float64),
            rows["out_of_fold"].to_numpy(dtype=bool),
            rows["weight"].to_numpy(dtype=np.float64),
        )
        for column, rows in frame.groupby("attribute", sort=True)
    }
    ordered = {c: overlaps[c] for c in PROB_COLUMNS if c in overlaps}
    return ordered, sorted(frame["scorer_version"].unique().tolist())


def chosen_attributes(overlaps: dict[str, Overlap], attributes: Sequence[str] | None, min_overlap: int) -> list[str]:
    """The asked-for attributes (each must have `min_overlap` posts), else every one that has them."""
    if attributes is None:
        chosen = [c for c, o in overlaps.items() if len(o.uris) >= min_overlap]
        if not chosen:
            counts = {c.removeprefix("prob_"): len(o.uris) for c, o in overlaps.items()}
            raise BridgeError(
                f"no attribute has {min_overlap} posts scored by both scorers (overlap: {counts or 'none'})"
            )
        return chosen
    try:
        chosen = list(dict.fromkeys(attribute_column(a) for a in attributes))
    except DistillError as err:
        raise BridgeError(str(err)) from err
    short = {c: len(overlaps[c].uris) if c in overlaps else 0 for c in chosen}
    short = {c: n for c, n in short.items() if n < min_overlap}
    if short:
        raise BridgeError(f"too few posts scored by both scorers (need {min_overlap}): {short}")
    return chosen


def current_mapping_version(con: duckdb.DuckDBPyConnection, local_scorer: str) -> str | None:
    """The most recently fitted mapping of this local scorer (ties: the greater version), as the mart reads it."""
    row = con.execute(
        """SELECT mapping_version FROM scorer_mappings WHERE local_scorer = $s
           ORDER BY fitted_at DESC, mapping_version DESC LIMIT 1""",
        {"s": local_scorer},
    ).fetchone()
    return row[0] if row else None


def store_mapping(
    con: duckdb.DuckDBPyConnection,
    version: str,
    config: BridgeConfig,
    local_versions: Sequence[str],
    fits: dict[str, tuple[Overlap, Knots]],
    fitted_at: datetime,
) -> str:
    """Insert the knots ('fitted'), or mark a stored earlier version current again ('made_current'), or leave
    the warehouse untouched when this version is already the current one ('unchanged')."""
    with transaction(con):
        if current_mapping_version(con, config.local_scorer) == version:
            return "unchanged"
        exists = con.execute(
            "SELECT count(*) FROM scorer_mappings WHERE mapping_version = $v", {"v": version}
        ).fetchall()[0][0]
        if exists:
            con.execute(
                "UPDATE scorer_mappings SET fitted_at = $at WHERE mapping_version = $v", {"at": fitted_at, "v": version}
            )
            return "made_current"
        params = {"n_knots": config.n_knots, "min_overlap": config.min_overlap, "attributes": config.attributes}
        rows = pd.DataFrame.from_records(
            [
                {
                    "attribute": column,
                    "knots_local": knots.local.tolist(),
                    "knots_reference": knots.reference.tolist(),
                    "n_overlap": len(overlap.uris),
                    "n_out_of_fold": int(np.sum(overlap.out_of_fold)),
                }
                for column, (overlap, knots) in fits.items()
            ]
        )
        rows["mapping_version"] = version
        rows["local_scorer"] = config.local_scorer
        rows["local_scorer_versions"] = [list(local_versions)] * len(rows)
        rows["reference_scorers"] = [list(config.reference_scorers)] * len(rows)
        rows["method"] = METHOD
        rows["params"] = json.dumps(params, sort_keys=True)
        rows["fitted_at"] = fitted_at
        insert_rows(con, "scorer_mappings", rows)
    return "fitted"


def figures_markdown(figures: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| attribute | n | out of fold | weighted | knots | reference mean | local mean | mapped mean | "
        "reference ≥ 0.5 | local ≥ 0.5 | mapped ≥ 0.5 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for attribute, f in figures.items():
        numbers = " | ".join(
            f"{f[k]:.3f}"
            for k in ("reference_mean", "local_mean", "mapped_mean", "reference_share_ge_0_5", "local_share_ge_0_5",
                      "mapped_share_ge_0_5")
        )  # fmt: skip
        counts = " | ".join(str(f[k]) for k in ("n", "n_out_of_fold", "n_weighted", "knots"))
        lines.append(f"| {attribute} | {counts} | {numbers} |")
    return "\n".join(lines)


def run_bridge(warehouse: WarehouseResource, config: BridgeConfig) -> tuple[str, str, dict[str, dict[str, Any]]]:
    """Read the overlap (short), fit (no connection held), store (one transaction): (version, outcome, figures)."""
    try:
        with warehouse.connect() as con:
            overlaps, local_versions = load_overlaps(con, config.local_scorer, config.reference_scorers)
        columns = chosen_attributes(overlaps, config.attributes, config.min_overlap)
        fits = {}
        for column in columns:
            overlap = overlaps[column]
            knots = fit_quantile_map(overlap.local, overlap.reference, config.n_knots, overlap.weights())
            fits[column] = (overlap, knots)
    except BridgeError as err:
        raise Failure(f"cannot map {config.local_scorer!r} onto {config.reference_scorers}: {err}") from err
    spec = {"local_scorer": config.local_scorer, "reference_scorers": list(config.reference_scorers),
            "n_knots": config.n_knots, "min_overlap": config.min_overlap, "attributes": columns}  # fmt: skip
    version = mapping_version(spec, [overlap for overlap, _ in fits.values()], local_versions)
    with warehouse.connect() as con:
        outcome = store_mapping(con, version, config, local_versions, fits, datetime.now(UTC))
    figures = {c.removeprefix("prob_"): overlap_figures(o, k) for c, (o, k) in fits.items()}
    return version, outcome, figures


@asset(
    deps=["toxicity_scores", "distilled_oof_predictions"],
    group_name="scores",
    description="The bridge across the change of instrument: per (mapping version, attribute) the knots of a "
    "quantile map putting a local scorer (default perspective-distilled) on Perspective's scale, fitted on every "
    "post both scored. marts.scorer_bridge applies the current one to the daily series.",
)
def scorer_mappings(
    context: AssetExecutionContext, config: BridgeConfig, warehouse: WarehouseResource
) -> MaterializeResult:
    version, outcome, figures = run_bridge(warehouse, config)
    context.log.info(f"{version}: {outcome}; {figures}")
    return MaterializeResult(
        metadata={
            "mapping_version": version,
            "mapping": outcome,
            "local_scorer": config.local_scorer,
            "reference_scorers": ", ".join(config.reference_scorers),
            "attributes": len(figures),
            "overlap_posts": max((f["n"] for f in figures.values()), default=0),
            "overlap_figures": MetadataValue.md(figures_markdown(figures)),
            "overlap": MetadataValue.json(figures),
        }
    )


bridge_selection = AssetSelection.assets(scorer_mappings)
bridge_job = define_asset_job(
    "bridge_scorers",
    selection=bridge_selection,
    description="Fit the mapping of a local scorer onto Perspective's scale on the posts both scored.",
)
