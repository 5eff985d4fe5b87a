"""Agreement between every ordered pair of scorers (the figures of `scorer_agreement_figures`), each figure with
its percentile-bootstrap 95% interval.

A Python model because the interval is a resampling, which SQL would do by multiplying every post by the number
of resamples; it calls the same function as `bsky-warehouse eval scorers` (evaluation.with_scorer_intervals), on
the same posts in the same order with the same seed, so the mart and the command print the same intervals.
"""

import pandas as pd

FIGURES = ("pearson", "spearman", "auc")


def model(dbt, session):
    dbt.config(materialized="table", tags=["global"])
    from bsky_warehouse.evaluation import with_scorer_intervals
    from bsky_warehouse.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

    figures = dbt.ref("scorer_agreement_figures").df()
    # The function names the warehouse's tables unqualified, as the CLI's connection sees them; on a DuckLake the
    # warehouse is an attached catalog, not the connection's default, until this.
    session.execute(f'USE "{dbt.this.database}"')
    rows = with_scorer_intervals(session, figures.to_dict("records"))
    out = pd.DataFrame(
        [
            {
                **{column: row[column] for column in figures.columns},
                **{
                    f"{name}_ci_{end}": (row[f"{name}_ci"] or (None, None))[i]
                    for name in FIGURES
                    for i, end in enumerate(("low", "high"))
                },
                "ci_posts": row["ci_posts"],
            }
            for row in rows
        ],
        columns=[
            *figures.columns,
            *(f"{name}_ci_{end}" for name in FIGURES for end in ("low", "high")),
            "ci_posts",
        ],
    )
    for column in out.columns:
        if column.endswith(("_ci_low", "_ci_high")):
            out[column] = out[column].astype("float64")
    out["ci_posts"] = out["ci_posts"].astype("Int64")
    out["ci_method"] = f"percentile bootstrap, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}"
    return out
