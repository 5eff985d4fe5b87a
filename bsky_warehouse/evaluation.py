"""Agreement between scorers, and between labelers and the hand labels, from the warehouse with `metrics.py`.

The same figures are built in SQL by the dbt marts `scorer_agreement` and `labeler_agreement`; the tests hold
the two to each other.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import duckdb

from bsky_warehouse.project import DBT_PROJECT_DIR
from bsky_warehouse.records import PROB_COLUMNS
from bsky_warehouse.resources.reference import REFERENCE_SCORER

HAND_LABEL_SEED = DBT_PROJECT_DIR / "seeds" / "reference_hand_labels.csv"


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


def _hand_labels(path: Path) -> dict[str, tuple[bool | None, str | None]]:
    """uri → (is_sociopolitical, ideology) from the hand-label seed (built from the vendored pilot file)."""
    out: dict[str, tuple[bool | None, str | None]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            social = {"true": True, "false": False}.get(row["is_sociopolitical"])
            out[row["uri"]] = (social, row["political_ideology"] or None)
    return out


def task_pairs(
    labels: list[tuple[str, bool | None, str | None]], hand: dict[str, tuple[bool | None, str | None]]
) -> dict[str, tuple[list[str], list[str]]]:
    """(truth, predicted) per task, with the definitions of the issue: sociopolitical over posts where both
    labels are set; ideology over posts hand-labelled sociopolitical where both ideologies are set."""
    pairs: dict[str, tuple[list[str], list[str]]] = {"sociopolitical": ([], []), "ideology": ([], [])}
    name = {True: "sociopolitical", False: "not_sociopolitical"}
    for uri, social, ideology in labels:
        if uri not in hand:
            continue
        hand_social, hand_ideology = hand[uri]
        if hand_social is not None and social is not None:
            pairs["sociopolitical"][0].append(name[hand_social])
            pairs["sociopolitical"][1].append(name[social])
        if hand_social and hand_ideology is not None and ideology is not None:
            pairs["ideology"][0].append(hand_ideology)
            pairs["ideology"][1].append(ideology)
    return pairs


def labeler_agreement(con: duckdb.DuckDBPyConnection, hand_labels: Path = HAND_LABEL_SEED) -> list[dict[str, Any]]:
    """Every (labeler, model, prompt_version) in the warehouse against the reference hand labels."""
    from bsky_warehouse.metrics import accuracy, confusion, macro_f1

    hand = _hand_labels(hand_labels)
    out = []
    producers = con.execute(
        "SELECT DISTINCT labeler, model, prompt_version FROM llm_labels WHERE status = 'ok' ORDER BY ALL"
    ).fetchall()
    for labeler, model, prompt_version in producers:
        labels = con.execute(
            """SELECT uri, is_sociopolitical, political_ideology FROM llm_labels
               WHERE status = 'ok' AND labeler = $l AND model = $m AND prompt_version = $p ORDER BY uri""",
            {"l": labeler, "m": model, "p": prompt_version},
        ).fetchall()
        for task, (truth, predicted) in task_pairs(labels, hand).items():
            out.append(
                {
                    "labeler": labeler,
                    "model": model,
                    "prompt_version": prompt_version,
                    "task": task,
                    "n": len(truth),
                    "accuracy": accuracy(truth, predicted),
                    "macro_f1": macro_f1(truth, predicted),
                    "confusion": confusion(truth, predicted),
                }
            )
    return out
