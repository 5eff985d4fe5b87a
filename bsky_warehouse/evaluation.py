"""Agreement between scorers, computed from the warehouse with the metrics in `metrics.py`.

The same figures are built in SQL by the dbt mart `scorer_agreement`; the tests hold the two to each other.
"""

from __future__ import annotations

from typing import Any

import duckdb

from bsky_warehouse.records import PROB_COLUMNS
from bsky_warehouse.resources.reference import REFERENCE_SCORER


def scorer_agreement(con: duckdb.DuckDBPyConnection, reference: str = REFERENCE_SCORER) -> list[dict[str, Any]]:
    """Every other scorer against `reference`, per attribute both scored (`ok` rows only)."""
    from bsky_warehouse.metrics import pearson, roc_auc, spearman

    scorers = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT scorer FROM toxicity_scores WHERE scorer <> $ref ORDER BY 1", {"ref": reference}
        ).fetchall()
    ]
    out = []
    for scorer in scorers:
        for column in PROB_COLUMNS:
            pairs = con.execute(
                f"""SELECT a.{column}, b.{column} FROM toxicity_scores a
                    JOIN toxicity_scores b USING (uri)
                    WHERE a.scorer = $scorer AND b.scorer = $ref AND a.status = 'ok' AND b.status = 'ok'
                      AND a.{column} IS NOT NULL AND b.{column} IS NOT NULL
                    ORDER BY uri""",
                {"scorer": scorer, "ref": reference},
            ).fetchall()
            if not pairs:
                continue
            xs = [p[0] for p in pairs]
            ys = [p[1] for p in pairs]
            out.append(
                {
                    "scorer": scorer,
                    "reference": reference,
                    "attribute": column.removeprefix("prob_"),
                    "n": len(pairs),
                    "pearson": pearson(xs, ys),
                    "spearman": spearman(xs, ys),
                    "auc": roc_auc(xs, [y >= 0.5 for y in ys]),
                }
            )
    return out
