"""Issue #20: labeler evaluation that cannot flatter a model.

The ideology figure of record is over every post hand-labelled civic with a hand ideology; a model that called
the post not civic, or gave no ideology, is wrong on it. The expected figures here are recomputed from the
vendored CSVs with the plain csv module (no project reader, no import option), and the warehouse's `eval
labels`, `marts.labeler_agreement` (per day, summed) and `marts.labeler_agreement_total` must match them, on
the whole file (179 posts) and on the demo's warehouse, where 3 deleted sample posts leave 176.

`ideology_both_labelled` is the first labels issue's reading, the one the table in #20 was computed with: posts
hand-labelled civic where both ideology columns are non-empty, the model's column as written (Llama-3's
`unclear` on a post it called not civic included). The issue's table figures are pinned for it.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import duckdb
import pytest

from bsky_warehouse.cli import (
    main,
    recorded_labels_config,
)  # fmt: skip
from bsky_warehouse.evaluation import (
    HAND_LABEL_SEED,
    _hand_labels,
    agreement_figures,
    compare_labelers,
    labeler_agreement,
    task_pairs,
)
from bsky_warehouse.label_files import read_label_file
from bsky_warehouse.project import REFERENCE_DIR
from bsky_warehouse.reference_labels import (
    RECORDED_LABELS,
    RECORDED_MODELS,
    RECORDED_PROMPT_VERSION,
    reference_handle_to_did,
)

pytestmark = pytest.mark.integration
TOLERANCE = 0.001
# (n, accuracy) by the definition over the whole pilot file, and the conditional figure (given the model
# said civic); computed by hand from pilot_posts_llm_labels.csv, pinned so that a change to the file shows.
WHOLE_FILE = {
    "gpt-4": {"ideology": (179, 0.659), "ideology_given_sociopolitical": (147, 0.803),
              "ideology_both_labelled": (147, 0.803)},
    "llama-3-70b": {"ideology": (179, 0.447), "ideology_given_sociopolitical": (111, 0.721),
                    "ideology_both_labelled": (179, 0.469)},
    "llama-3-8b": {"ideology": (179, 0.380), "ideology_given_sociopolitical": (113, 0.602),
                   "ideology_both_labelled": (179, 0.397)},
}  # fmt: skip


def uri_by_link() -> dict[str, str]:
    with (REFERENCE_DIR / "pilot_posts_perspective.csv").open(newline="", encoding="utf-8") as fh:
        return {row["link"]: row["uri"] for row in csv.DictReader(fh)}


def from_csv(model: str, uris: set[str] | None = None) -> dict[str, tuple[int, float]]:
    """(n, accuracy) per task straight from the pilot file: the model's own civic and ideology columns
    against the hand columns, restricted to `uris` when given."""
    civic_col, ideology_col = RECORDED_MODELS[model]
    links = uri_by_link()
    hits: dict[str, list[bool]] = defaultdict(list)
    with (REFERENCE_DIR / "pilot_posts_llm_labels.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if uris is not None and links[row["link"]] not in uris:
                continue
            hand_civic, hand_ideology = row["civic_hand_label"], row["political_ideology_hand_label"]
            said_civic, said_ideology = row[civic_col], row[ideology_col]
            if hand_civic:
                hits["sociopolitical"].append(said_civic == hand_civic)
            if hand_civic == "civic" and hand_ideology:
                # called not civic, or no ideology: wrong, whatever its ideology column says
                hits["ideology"].append(said_civic == "civic" and said_ideology == hand_ideology)
                if said_civic == "civic" and said_ideology:
                    hits["ideology_given_sociopolitical"].append(said_ideology == hand_ideology)
                # both ideology columns non-empty: the model's as written, whatever it said about civic
                if said_ideology:
                    hits["ideology_both_labelled"].append(said_ideology == hand_ideology)
    return {task: (len(v), sum(v) / len(v)) for task, v in hits.items()}


def test_the_pinned_whole_file_figures_are_the_csvs():
    for model, tasks in WHOLE_FILE.items():
        computed = from_csv(model)
        for task, (n, acc) in tasks.items():
            assert computed[task][0] == n, (model, task)
            assert computed[task][1] == pytest.approx(acc, abs=TOLERANCE), (model, task)


@pytest.mark.parametrize("model", sorted(RECORDED_MODELS))
def test_whole_file_through_the_import_reader_matches_the_csvs(model: str):
    """All 179 posts: the import (with the demo's drop of Llama's placeholder ideology) then the evaluation."""
    config = recorded_labels_config(model)["ops"]["llm_labels"]["config"]
    results = read_label_file(
        str(RECORDED_LABELS), "import", model, RECORDED_PROMPT_VERSION,
        label_column=config["import_label_column"], ideology_column=config["import_ideology_column"],
        handle_to_did=reference_handle_to_did(),
        drop_ideology_on_non_sociopolitical=config["import_drop_ideology_on_non_sociopolitical"],
    )  # fmt: skip
    labels = [(r.uri, r.is_sociopolitical if r.status == "ok" else None,
               r.political_ideology if r.status == "ok" else None,
               r.dropped_ideology if r.status == "ok" else None) for r in results]  # fmt: skip
    expected = from_csv(model)
    for task, (truth, predicted) in task_pairs(labels, _hand_labels(HAND_LABEL_SEED)).items():
        figures = agreement_figures(truth, predicted)
        assert figures["n"] == expected[task][0], task
        assert figures["accuracy"] == pytest.approx(expected[task][1], abs=TOLERANCE), task


def test_warehouse_eval_and_marts_match_the_csvs_on_the_demo_posts(recorded_labels_db):
    con = duckdb.connect(recorded_labels_db, read_only=True)
    uris = {r[0] for r in con.execute("SELECT uri FROM cleaned_posts").fetchall()}
    rows = labeler_agreement(con)
    total = {(m, t): (n, c, a) for m, t, n, c, a in con.execute(
        "SELECT model, task, n, correct, accuracy FROM marts.labeler_agreement_total").fetchall()}  # fmt: skip
    daily = {(m, t): (n, c) for m, t, n, c in con.execute(
        "SELECT model, task, sum(n), sum(correct) FROM marts.labeler_agreement GROUP BY ALL").fetchall()}  # fmt: skip
    con.close()
    assert {(r["model"], r["task"]) for r in rows} == set(total) == set(daily)
    for row in rows:
        n, acc = from_csv(row["model"], uris)[row["task"]]
        key = (row["model"], row["task"])
        assert row["n"] == n == total[key][0] == daily[key][0], key
        assert row["accuracy"] == pytest.approx(acc, abs=TOLERANCE), key
        assert total[key][2] == pytest.approx(acc, abs=TOLERANCE), key
        assert daily[key][1] == total[key][1] == row["correct"], key
        assert row["accuracy_ci_low"] <= row["accuracy"] <= row["accuracy_ci_high"]
        assert row["macro_f1_ci_low"] <= row["macro_f1"] <= row["macro_f1_ci_high"]
        assert sum(sum(v.values()) for v in row["confusion"].values()) == row["n"]
    ideology = {r["model"]: r for r in rows if r["task"] == "ideology"}
    assert {r["n"] for r in ideology.values()} == {176}  # the 3 deleted sample posts are all in the 179
    # Llama-3-8B called 59 hand-left posts not civic: they are its misses, recorded as `none`.
    assert ideology["llama-3-8b"]["confusion"]["left"]["none"] == 59


def test_mart_interval_is_the_python_wilson_interval(recorded_labels_db):
    con = duckdb.connect(recorded_labels_db, read_only=True)
    mart = {(m, t): (lo, hi, f1) for m, t, lo, hi, f1 in con.execute(
        "SELECT model, task, accuracy_ci_low, accuracy_ci_high, macro_f1 FROM marts.labeler_agreement_total"
    ).fetchall()}  # fmt: skip
    rows = labeler_agreement(con)
    con.close()
    for row in rows:
        low, high, f1 = mart[(row["model"], row["task"])]
        assert low == pytest.approx(row["accuracy_ci_low"], abs=1e-9)
        assert high == pytest.approx(row["accuracy_ci_high"], abs=1e-9)
        assert f1 == pytest.approx(row["macro_f1"], abs=1e-9)


def test_eval_labels_json_rounds_and_keeps_the_conditional_figure_apart(recorded_labels_db, monkeypatch, capsys):
    monkeypatch.setenv("BSKY_WAREHOUSE_DB", recorded_labels_db)
    assert main(["eval", "labels", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(r["model"], r["task"]): r for r in out["labelers"]}
    gpt4 = rows[("gpt-4", "ideology")]
    assert gpt4["n"] == 176 and gpt4["accuracy"] == 0.659
    assert rows[("gpt-4", "ideology_given_sociopolitical")]["accuracy"] == 0.806
    for row in out["labelers"]:
        for key in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "macro_f1", "macro_f1_ci_low"):
            assert row[key] == round(row[key], 3)
    assert out["intervals"]["bootstrap_resamples"] == 2000


def test_compare_two_recorded_labelers_with_mcnemar(recorded_labels_db, monkeypatch, capsys):
    con = duckdb.connect(recorded_labels_db, read_only=True)
    result = compare_labelers(con, "import/gpt-4", "import/llama-3-70b", "ideology")
    same = compare_labelers(con, "import/llama-3-8b", "labeler:import/llama-3-8b", "sociopolitical")
    with pytest.raises(ValueError):
        compare_labelers(con, "import/gpt-5", "import/gpt-4", "ideology")
    con.close()
    assert result["n"] == 176
    assert result["accuracy_a"] - result["accuracy_b"] == pytest.approx(result["difference"])
    assert result["a_only_correct"] - result["b_only_correct"] == round(result["difference"] * 176)
    assert result["p_value"] < 0.001  # 0.659 vs 0.443 on the same 176 posts
    assert same["a_only_correct"] == same["b_only_correct"] == 0 and same["p_value"] == 1.0
    monkeypatch.setenv("BSKY_WAREHOUSE_DB", recorded_labels_db)
    assert main(["eval", "compare", "import/gpt-4", "import/llama-3-8b", "--task", "sociopolitical", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["test"] == "mcnemar_exact" and cli["n"] == 330 and 0 <= cli["p_value"] <= 1


def test_task_pairs_count_not_civic_no_ideology_and_failures_as_misses():
    hand = {
        "civic-left": (True, "left"),
        "civic-left-2": (True, "left"),
        "civic-unclear": (True, "unclear"),
        "civic-no-ideology": (True, None),
        "not-civic": (False, None),
    }
    labels = [
        ("civic-left", True, "left"),  # right on both
        ("civic-left-2", False, None),  # called not civic: a miss on ideology
        ("civic-unclear", None, None),  # failed: a miss on both
        ("civic-no-ideology", True, "right"),  # no hand ideology: sociopolitical only
        ("not-civic", False, None),
        ("not-hand-labelled", True, "left"),  # no hand label: in no task
    ]
    pairs = task_pairs(labels, hand)
    assert pairs["sociopolitical"] == (
        ["sociopolitical"] * 4 + ["not_sociopolitical"],
        ["sociopolitical", "not_sociopolitical", "none", "sociopolitical", "not_sociopolitical"],
    )
    assert pairs["ideology"] == (["left", "left", "unclear"], ["left", "none", "none"])
    assert pairs["ideology_given_sociopolitical"] == (["left"], ["left"])
    figures = agreement_figures(*pairs["ideology"])
    assert (figures["n"], figures["correct"]) == (3, 1)
    # `none` is no class of its own: macro F1 over left and unclear = (2/3 + 0) / 2
    assert figures["macro_f1"] == pytest.approx(1 / 3)
    assert figures["confusion"] == {"left": {"left": 1, "none": 1}, "unclear": {"none": 1}}
