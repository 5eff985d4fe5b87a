"""Agreement between scorers, and between labelers and the hand labels, from the warehouse with `metrics.py`.

A distilled scorer (perspective-distilled) was fitted on Perspective scores of some of these very posts; its
refitted model's score of a training post would agree with Perspective because it saw it. Agreement therefore
reads, for each training post of the model version that scored it, the out-of-fold prediction stored at fit
time (`distilled_oof_predictions`), and the scorer's own score only for posts that version never trained on.

The same figures are built in SQL by the dbt marts `scorer_agreement` and `labeler_agreement`; the tests hold
the two to each other.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

from bsky_warehouse.project import DBT_PROJECT_DIR
from bsky_warehouse.records import PROB_COLUMNS
from bsky_warehouse.reference import REFERENCE_SCORER

HAND_LABEL_SEED = DBT_PROJECT_DIR / "seeds" / "reference_hand_labels.csv"


# How a pair's scorer values were obtained (the `evaluated_on` column, here and in the mart): a scorer the
# warehouse did not fit is compared `as_scored`; a distilled scorer is compared on its out-of-fold predictions
# for the posts its model was trained on and on its own scores for posts it never saw (`held_out`).
AS_SCORED, OUT_OF_FOLD, HELD_OUT = "as_scored", "out_of_fold", "held_out"

# One scorer's `ok` values of one attribute with, for a distilled model's training posts, its out-of-fold
# prediction in place of the score: no post is ever judged by a model that was fitted on it.
EVALUATED_SQL = """
    SELECT s.uri, coalesce(o.prediction, s.{column}) AS prob, o.prediction IS NOT NULL AS out_of_fold,
           s.scorer_version IN (SELECT model_version FROM distilled_models) AS distilled
    FROM toxicity_scores s
    LEFT JOIN distilled_oof_predictions o
      ON o.model_version = s.scorer_version AND o.uri = s.uri AND o.attribute = '{column}'
    WHERE s.scorer = ${side} AND s.status = 'ok' AND s.{column} IS NOT NULL"""


def evaluated_on(n: int, n_out_of_fold: int, distilled: bool) -> str:
    """`as_scored`, `out_of_fold`, `held_out` or `out_of_fold+held_out` (see AS_SCORED)."""
    if not distilled:
        return AS_SCORED
    if n_out_of_fold == n:
        return OUT_OF_FOLD
    return HELD_OUT if n_out_of_fold == 0 else f"{OUT_OF_FOLD}+{HELD_OUT}"


def scorer_agreement(con: duckdb.DuckDBPyConnection, reference: str = REFERENCE_SCORER) -> list[dict[str, Any]]:
    """Every other scorer against `reference`, per attribute both scored (`ok` rows only); a distilled scorer's
    training posts count with their out-of-fold predictions (`n_out_of_fold`, `evaluated_on`)."""
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
                f"""SELECT a.prob, b.prob, a.out_of_fold OR b.out_of_fold, a.distilled OR b.distilled
                    FROM ({EVALUATED_SQL.format(column=column, side="scorer")}) a
                    JOIN ({EVALUATED_SQL.format(column=column, side="ref")}) b USING (uri)
                    ORDER BY uri""",
                {"scorer": scorer, "ref": reference},
            ).fetchall()
            if not pairs:
                continue
            xs = [p[0] for p in pairs]
            ys = [p[1] for p in pairs]
            n_out_of_fold = sum(bool(p[2]) for p in pairs)
            out.append(
                {
                    "scorer": scorer,
                    "reference": reference,
                    "attribute": column.removeprefix("prob_"),
                    "n": len(pairs),
                    "pearson": pearson(xs, ys),
                    "spearman": spearman(xs, ys),
                    "auc": roc_auc(xs, [y >= 0.5 for y in ys]),
                    "n_out_of_fold": n_out_of_fold,
                    "evaluated_on": evaluated_on(len(pairs), n_out_of_fold, any(p[3] for p in pairs)),
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


# The labeler tasks. `ideology` is the figure of record: over every post hand-labelled sociopolitical with a
# hand ideology, where a labeler that called the post not sociopolitical, gave no ideology or failed is wrong
# (its answer is NO_ANSWER). Leaving those posts out would drop exactly the posts the labeler got wrong on the
# first question and flatter it on the second; that conditional figure is `ideology_given_sociopolitical`,
# its own task, never the ideology accuracy. `ideology_both_labelled` is the first labels issue's reading (#4:
# "over posts hand-labelled civic where both ideology labels are non-empty"): the labeler's ideology as its file
# recorded it, even on a post it called not sociopolitical (the pilot's Llama-3 write `unclear` there), so a
# placeholder that happens to equal the hand label counts as right; reported beside `ideology`, never instead.
SOCIOPOLITICAL, IDEOLOGY, IDEOLOGY_GIVEN_SOCIOPOLITICAL = "sociopolitical", "ideology", "ideology_given_sociopolitical"
IDEOLOGY_BOTH_LABELLED = "ideology_both_labelled"
LABELER_TASKS = (SOCIOPOLITICAL, IDEOLOGY, IDEOLOGY_GIVEN_SOCIOPOLITICAL, IDEOLOGY_BOTH_LABELLED)
NO_ANSWER = "none"


class Answer(NamedTuple):
    """A labeler's answer for one post: (uri, is_sociopolitical, ideology) and, for a label file's row, the
    ideology it recorded for a post it called not sociopolitical (`dropped_ideology`). `social` None is a
    failed answer."""

    uri: str
    social: bool | None
    ideology: str | None
    dropped_ideology: str | None = None


def task_pairs(
    labels: Sequence[tuple], hand: dict[str, tuple[bool | None, str | None]]
) -> dict[str, tuple[list[str], list[str]]]:
    """(truth, predicted) per task over the posts a labeler was asked about (`ok` or `failed`; `social` None
    is a failed answer).

    sociopolitical: posts with a hand sociopolitical label; a failed answer is NO_ANSWER. ideology: posts
    hand-labelled sociopolitical with a hand ideology; a post the labeler called not sociopolitical, or gave
    no ideology, is NO_ANSWER. ideology_given_sociopolitical: those of the ideology posts the labeler called
    sociopolitical with an ideology. ideology_both_labelled: those of the ideology posts for which the labeler
    recorded an ideology (its answer's, or the one its file gave a post it called not sociopolitical).
    `labels` holds Answer tuples (three fields are enough where no file dropped an ideology).
    """
    pairs: dict[str, tuple[list[str], list[str]]] = {task: ([], []) for task in LABELER_TASKS}
    for task, by_uri in post_task_pairs(labels, hand).items():
        for truth, predicted in by_uri.values():
            pairs[task][0].append(truth)
            pairs[task][1].append(predicted)
    return pairs


def post_task_pairs(
    labels: Sequence[tuple], hand: dict[str, tuple[bool | None, str | None]]
) -> dict[str, dict[str, tuple[str, str]]]:
    """task → uri → (truth, predicted), by the definitions of `task_pairs`; keyed by post so two labelers can
    be compared on the posts both answered."""
    out: dict[str, dict[str, tuple[str, str]]] = {task: {} for task in LABELER_TASKS}
    name = {True: "sociopolitical", False: "not_sociopolitical"}
    for uri, social, ideology, dropped in (Answer(*label) for label in labels):
        if uri not in hand:
            continue
        hand_social, hand_ideology = hand[uri]
        if hand_social is not None:
            out[SOCIOPOLITICAL][uri] = (name[hand_social], NO_ANSWER if social is None else name[social])
        if hand_social and hand_ideology is not None:
            answered = bool(social) and ideology is not None
            out[IDEOLOGY][uri] = (hand_ideology, ideology if answered else NO_ANSWER)
            if answered:
                out[IDEOLOGY_GIVEN_SOCIOPOLITICAL][uri] = (hand_ideology, ideology)
            recorded = ideology if social is not None and ideology is not None else dropped
            if social is not None and recorded is not None:
                out[IDEOLOGY_BOTH_LABELLED][uri] = (hand_ideology, recorded)
    return out


def agreement_figures(truth: list[str], predicted: list[str]) -> dict[str, Any]:
    """n, accuracy with its Wilson 95% interval, macro F1 (classes of either sequence, NO_ANSWER excepted:
    an abstention is a miss of the true class, not a class of its own) with its bootstrap 95% interval, and
    the confusion counts (NO_ANSWER included)."""
    from bsky_warehouse.metrics import confusion, macro_f1, macro_f1_interval, wilson_interval

    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    classes = sorted((set(truth) | set(predicted)) - {NO_ANSWER})
    accuracy_ci = wilson_interval(correct, len(truth))
    f1_ci = macro_f1_interval(truth, predicted, exclude=[NO_ANSWER])
    return {
        "n": len(truth),
        "correct": correct,
        "accuracy": correct / len(truth) if truth else None,
        "accuracy_ci_low": accuracy_ci[0] if accuracy_ci else None,
        "accuracy_ci_high": accuracy_ci[1] if accuracy_ci else None,
        "macro_f1": macro_f1(truth, predicted, labels=classes) if truth else None,
        "macro_f1_ci_low": f1_ci[0] if f1_ci else None,
        "macro_f1_ci_high": f1_ci[1] if f1_ci else None,
        "confusion": confusion(truth, predicted),
    }


def labeler_answers(
    con: duckdb.DuckDBPyConnection, labeler: str, model: str, prompt_version: str | None = None
) -> list[Answer]:
    """The Answer of every post the labeler was asked about, `ok` or `failed` (a failed answer is (uri, None,
    None, None)); `skipped` posts (never asked, e.g. not in an import file) are not its answers."""
    return [
        Answer(*row)
        for row in con.execute(
            """SELECT uri, CASE WHEN status = 'ok' THEN is_sociopolitical END,
                      CASE WHEN status = 'ok' THEN political_ideology END,
                      CASE WHEN status = 'ok' THEN dropped_ideology END
               FROM llm_labels
               WHERE status IN ('ok', 'failed') AND labeler = $l AND model = $m
                 AND ($p IS NULL OR prompt_version = $p)
               ORDER BY uri""",
            {"l": labeler, "m": model, "p": prompt_version},
        ).fetchall()
    ]


def labeler_agreement(con: duckdb.DuckDBPyConnection, hand_labels: Path = HAND_LABEL_SEED) -> list[dict[str, Any]]:
    """Every (labeler, model, prompt_version) in the warehouse against the reference hand labels, per task of
    LABELER_TASKS, with the intervals of `agreement_figures`."""
    hand = _hand_labels(hand_labels)
    out = []
    producers = con.execute(
        "SELECT DISTINCT labeler, model, prompt_version FROM llm_labels WHERE status IN ('ok', 'failed') ORDER BY ALL"
    ).fetchall()
    for labeler, model, prompt_version in producers:
        labels = labeler_answers(con, labeler, model, prompt_version)
        for task, (truth, predicted) in task_pairs(labels, hand).items():
            out.append(
                {"labeler": labeler, "model": model, "prompt_version": prompt_version, "task": task,
                 **agreement_figures(truth, predicted)}
            )  # fmt: skip
    return out


def resolve_labeler(con: duckdb.DuckDBPyConnection, system: str) -> tuple[str, str, str]:
    """`labeler/model` or `labeler/model/prompt_version` → the one (labeler, model, prompt_version) it names;
    ValueError when it names none, or several prompt versions (then the caller must say which)."""
    parts = system.removeprefix("labeler:").split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"{system!r}: name a labeler as labeler/model or labeler/model/prompt_version")
    found = con.execute(
        """SELECT DISTINCT labeler, model, prompt_version FROM llm_labels
           WHERE labeler = $l AND model = $m AND ($p IS NULL OR prompt_version = $p) ORDER BY ALL""",
        {"l": parts[0], "m": parts[1], "p": parts[2] if len(parts) == 3 else None},
    ).fetchall()
    if not found:
        raise ValueError(f"{system!r}: no such labeler in llm_labels")
    if len(found) > 1:
        raise ValueError(f"{system!r}: several prompt versions {[f[2] for f in found]}; add /prompt_version")
    return found[0]


def compare_labelers(
    con: duckdb.DuckDBPyConnection, a: str, b: str, task: str, hand_labels: Path = HAND_LABEL_SEED
) -> dict[str, Any]:
    """Two labelers' accuracy on one task, paired on the posts both answered (McNemar's exact test)."""
    from bsky_warehouse.metrics import mcnemar_exact, wilson_interval

    if task not in LABELER_TASKS:
        raise ValueError(f"task must be one of {LABELER_TASKS}, got {task!r}")
    hand = _hand_labels(hand_labels)
    systems = [resolve_labeler(con, system) for system in (a, b)]
    by_uri = [post_task_pairs(labeler_answers(con, *system), hand)[task] for system in systems]
    uris = sorted(set(by_uri[0]) & set(by_uri[1]))
    correct = [[by_uri[i][uri][0] == by_uri[i][uri][1] for uri in uris] for i in (0, 1)]
    test = mcnemar_exact(correct[0], correct[1])
    out: dict[str, Any] = {"a": "/".join(systems[0]), "b": "/".join(systems[1]), "task": task, "test": "mcnemar_exact"}
    for side, hits in zip(("a", "b"), correct, strict=True):
        ci = wilson_interval(sum(hits), len(hits))
        out[f"accuracy_{side}"] = sum(hits) / len(hits) if hits else None
        out[f"accuracy_{side}_ci"] = list(ci) if ci else None
    out.update({"n": test["n"], "a_only_correct": test["a_only"], "b_only_correct": test["b_only"],
                "difference": test["difference"], "p_value": test["p_value"]})  # fmt: skip
    return out


def compare_scorers(
    con: duckdb.DuckDBPyConnection, a: str, b: str, attribute: str, reference: str = REFERENCE_SCORER
) -> dict[str, Any]:
    """Two scorers' Spearman with the reference on one attribute, paired on the posts all three scored (a
    distilled scorer's training posts with their out-of-fold predictions, as in `scorer_agreement`), with a
    paired bootstrap interval of the difference."""
    from bsky_warehouse.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, paired_spearman_difference

    column = f"prob_{attribute.removeprefix('prob_')}"
    if column not in PROB_COLUMNS:
        raise ValueError(f"unknown attribute {attribute!r}")
    names = {"a": a.removeprefix("scorer:"), "b": b.removeprefix("scorer:"), "ref": reference}
    rows = con.execute(
        f"""SELECT sa.prob, sb.prob, r.prob
            FROM ({EVALUATED_SQL.format(column=column, side="scorer_a")}) sa
            JOIN ({EVALUATED_SQL.format(column=column, side="scorer_b")}) sb USING (uri)
            JOIN ({EVALUATED_SQL.format(column=column, side="ref")}) r USING (uri)
            ORDER BY uri""",
        {"scorer_a": names["a"], "scorer_b": names["b"], "ref": reference},
    ).fetchall()
    result = paired_spearman_difference([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    ci = result["ci"]
    return {"a": names["a"], "b": names["b"], "reference": reference, "attribute": column.removeprefix("prob_"),
            "test": "paired_bootstrap_spearman", "n": result["n"], "spearman_a": result["spearman_a"],
            "spearman_b": result["spearman_b"], "difference": result["difference"],
            "difference_ci": list(ci) if ci else None, "p_value": result["p_value"],
            "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED}  # fmt: skip


def with_scorer_intervals(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`scorer_agreement` rows with bootstrap 95% intervals of Pearson, Spearman and AUC (`pearson_ci`, …:
    [low, high]) over the same posts, read with the same EVALUATED_SQL (out-of-fold values included), and
    `ci_posts`, the posts the bootstrap resampled (all of them up to BOOTSTRAP_MAX_POSTS, then a subsample;
    see correlation_intervals); kept apart from scorer_agreement so that function stays as it is. The dbt mart
    `scorer_agreement` calls this too. A row whose posts no longer match its n (the warehouse changed between
    the reads) raises rather than pair an interval with another sample."""
    from bsky_warehouse.metrics import BOOTSTRAP_MAX_POSTS, correlation_intervals

    out = []
    for row in rows:
        column = f"prob_{row['attribute']}"
        pairs = con.execute(
            f"""SELECT a.prob, b.prob
                FROM ({EVALUATED_SQL.format(column=column, side="scorer")}) a
                JOIN ({EVALUATED_SQL.format(column=column, side="ref")}) b USING (uri)
                ORDER BY uri""",
            {"scorer": row["scorer"], "ref": row["reference"]},
        ).fetchall()
        if len(pairs) != row["n"]:
            raise RuntimeError(f"{row['scorer']}/{row['attribute']}: {len(pairs)} pairs, the row says {row['n']}")
        intervals = correlation_intervals([p[0] for p in pairs], [p[1] for p in pairs])
        out.append(
            {
                **row,
                **{f"{name}_ci": list(ci) if ci else None for name, ci in intervals.items()},
                "ci_posts": min(len(pairs), BOOTSTRAP_MAX_POSTS),
            }
        )
    return out
