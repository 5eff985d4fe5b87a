"""llm_labels through Dagster: recorded labels imported and evaluated, and a live OpenAI-compatible server."""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from datetime import date

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance

from bsky_warehouse.cli import dbt_fed_by
from bsky_warehouse.evaluation import HAND_LABEL_SEED, LABELER_TASKS, _hand_labels, labeler_agreement, task_pairs
from bsky_warehouse.instrument import PROMPT_VERSION
from bsky_warehouse.metrics import accuracy, macro_f1
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import REFERENCE_DIR, SAMPLE_DIR
from bsky_warehouse.reference_labels import RECORDED_MODELS
from bsky_warehouse.resources.llm import OpenAILabelerResource
from tests.factories import post_event, write_archive
from tests.servers.openai_server import OpenAIServer

pytestmark = pytest.mark.integration
INGEST = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"]
CIVIC = {"civic": "sociopolitical", "not civic": "not_sociopolitical"}
IDEOLOGY = {"left-leaning": "left", "right-leaning": "right", "moderate": "moderate", "unclear": "unclear"}


def direct_from_pilot_csv(model: str, uris: set[str]) -> dict[str, tuple[float, int]]:
    """The recorded labelers' accuracy computed straight from the pilot's file, on the posts in the warehouse.

    Ideology: every post hand-labelled civic with a hand ideology; an ideology the model gave a post it called
    non-sociopolitical is a placeholder, so that post is a miss (`none`). The conditional figure is its own task,
    and so is the reading over every post whose ideology both columns give (the placeholder counting as written).
    """
    handle_to_did = {}
    with (REFERENCE_DIR / "pilot_posts_perspective.csv").open(newline="", encoding="utf-8") as fh:
        uri_by_link = {row["link"]: row["uri"] for row in csv.DictReader(fh)}
    civic_col, ideology_col = RECORDED_MODELS[model]
    truth: dict[str, list[str]] = defaultdict(list)
    pred: dict[str, list[str]] = defaultdict(list)
    with (REFERENCE_DIR / "pilot_posts_llm_labels.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if uri_by_link[row["link"]] not in uris:
                continue
            hand, said = row["civic_hand_label"], row[civic_col]
            if hand and said:
                truth["sociopolitical"].append(CIVIC[hand])
                pred["sociopolitical"].append(CIVIC[said])
            ideology = row[ideology_col] if said == "civic" else ""
            if hand == "civic" and row["political_ideology_hand_label"]:
                truth["ideology"].append(IDEOLOGY[row["political_ideology_hand_label"]])
                pred["ideology"].append(IDEOLOGY[ideology] if ideology else "none")
            if hand == "civic" and row["political_ideology_hand_label"] and ideology:
                truth["ideology_given_sociopolitical"].append(IDEOLOGY[row["political_ideology_hand_label"]])
                pred["ideology_given_sociopolitical"].append(IDEOLOGY[ideology])
            if hand == "civic" and row["political_ideology_hand_label"] and row[ideology_col]:
                truth["ideology_both_labelled"].append(IDEOLOGY[row["political_ideology_hand_label"]])
                pred["ideology_both_labelled"].append(IDEOLOGY[row[ideology_col]])
    del handle_to_did
    return {task: (accuracy(truth[task], pred[task]), len(truth[task])) for task in truth}


def test_eval_reproduces_the_recorded_labelers_accuracies(recorded_labels_db):
    con = duckdb.connect(recorded_labels_db, read_only=True)
    rows = labeler_agreement(con)
    uris = {r[0] for r in con.execute("SELECT uri FROM cleaned_posts").fetchall()}
    con.close()
    assert {(r["model"], r["task"]) for r in rows} == {(m, t) for m in RECORDED_MODELS for t in LABELER_TASKS}
    for row in rows:
        expected_accuracy, expected_n = direct_from_pilot_csv(row["model"], uris)[row["task"]]
        assert row["n"] == expected_n
        assert row["accuracy"] == pytest.approx(expected_accuracy)
        assert sum(sum(v.values()) for v in row["confusion"].values()) == row["n"]
    gpt4 = {r["task"]: r for r in rows if r["model"] == "gpt-4"}
    assert gpt4["sociopolitical"]["accuracy"] > 0.8  # GPT-4 agreed with the researchers far above chance


def test_labeler_agreement_mart_matches_python_per_day(recorded_labels_db):
    con = duckdb.connect(recorded_labels_db, read_only=True)
    mart = con.execute(
        "SELECT day, model, task, n, accuracy, macro_f1 FROM marts.labeler_agreement ORDER BY ALL"
    ).fetchall()
    hand = _hand_labels(HAND_LABEL_SEED)
    assert mart
    for day, model, task, n, acc, f1 in mart:
        labels = con.execute(
            """SELECT uri, is_sociopolitical, political_ideology, dropped_ideology FROM llm_labels
               WHERE status = 'ok' AND model = $m AND partition_date = $d""",
            {"m": model, "d": day},
        ).fetchall()
        truth, predicted = task_pairs(labels, hand)[task]
        assert n == len(truth)
        assert acc == pytest.approx(accuracy(truth, predicted))
        assert f1 == pytest.approx(macro_f1(truth, predicted, labels=sorted((set(truth) | set(predicted)) - {"none"})))
    con.close()


def test_openai_labeler_through_the_asset_records_failures_and_never_reasks(tmp_path):
    texts = {
        "vote": "The senate election and the new immigration bill",
        "cat": "my cat knocked the coffee over again",
        "garbled": "@@malformed the election answer is always garbled",
        "flaky": "@@500x2 climate policy is on the ballot",
        "throttled": "@@429x1 biden and the economy",
    }
    archive = tmp_path / "archive"
    write_archive(archive / "d.jsonl", [post_event(k, text=v) for k, v in texts.items()])
    db = str(tmp_path / "wh.duckdb")
    window = DayWindow.for_day(date(2024, 3, 10))
    instance = DagsterInstance.ephemeral()
    config = {"ops": {"llm_labels": {"config": {"labeler": "openai"}}}}
    with OpenAIServer(retry_after=0.1) as server:
        labeler = OpenAILabelerResource(base_url=server.base_url, model="test-model", max_concurrency=8,
                                        backoff_base_s=0.05, backoff_max_s=0.2, max_retries=4)  # fmt: skip
        for _ in range(2):
            result = run_window(window, instance, db_path=db, archive_dir=str(archive), run_config=config,
                                assets=[*INGEST, "llm_labels"], resources={"llm_openai": labeler})  # fmt: skip
            assert result["success"]
            if _ == 0:
                first_counts = dict(server.counts)
        assert dict(server.counts) == first_counts  # the second run asked nothing
    con = duckdb.connect(db, read_only=True)
    rows = {
        uri.rsplit("/", 1)[1]: rest
        for uri, *rest in con.execute(
            "SELECT uri, status, reason, is_sociopolitical, political_ideology, model, prompt_version FROM llm_labels"
        ).fetchall()
    }
    con.close()
    assert set(rows) == set(texts)
    assert rows["vote"][:2] == ["ok", None] and rows["vote"][2] is True
    assert rows["cat"][:3] == ["ok", None, False] and rows["cat"][3] is None
    assert rows["garbled"][0] == "failed" and rows["garbled"][1] == "invalid_json"
    assert rows["flaky"][0] == "ok" and rows["throttled"][0] == "ok"
    assert {r[4] for r in rows.values()} == {"test-model"} and {r[5] for r in rows.values()} == {PROMPT_VERSION}


def test_without_an_llm_the_daily_labels_step_is_skipped_visibly_and_the_marts_still_build(tmp_path):
    """A backfill of the daily job on a warehouse with no LLM: labels say why they were skipped, nothing fails."""
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    result = run_window(
        DayWindow.for_day(date(2024, 3, 12)), instance, db_path=db, archive_dir=str(SAMPLE_DIR),
        assets=[*INGEST, "llm_labels", *dbt_fed_by("llm_labels")],
        resources={"llm_openai": OpenAILabelerResource(model="")},
    )  # fmt: skip
    assert result["success"], result["failures"]
    assert {"llm_labels", *dbt_fed_by("llm_labels")} <= set(result["assets_materialized"])
    event = instance.get_latest_materialization_event(AssetKey("llm_labels"))
    metadata = {key: value.value for key, value in event.asset_materialization.metadata.items()}
    assert metadata["labeled"] == 0 and "set LLM_MODEL" in metadata["skipped"]
    con = duckdb.connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM llm_labels").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM cleaned_posts").fetchall()[0][0] > 0
    con.close()


LABEL_TEXTS = {
    "senate": "The senate passed the new immigration bill today",
    "pasta": "Made a lovely pasta with fresh basil tonight",
    "ballot": "Climate policy is on the ballot this November",
    "garden": "The tomatoes in my garden are finally ripe",
    "union": "Proud to stand with the striking union workers",
}
LABEL_DAY = date(2024, 3, 10)


def label_file(path, rows: dict[str, tuple[str, str]]) -> str:
    """A CSV of labels keyed by AT URI, one row per (rkey: (label, ideology)); returns its sha256."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["uri", "label", "ideology"])
        for rkey, (label, ideology) in rows.items():
            writer.writerow([f"at://did:plc:author1/app.bsky.feed.post/{rkey}", label, ideology])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_labels(instance, db: str, archive, path, ingest: bool = False) -> dict:
    """Materialize llm_labels from `path` (after ingesting `archive` first); the run's metadata."""
    config = {"ops": {"llm_labels": {"config": {"labeler": "import", "import_path": str(path), "import_model": "m"}}}}
    assets = [*INGEST, "llm_labels"] if ingest else ["llm_labels"]
    result = run_window(DayWindow.for_day(LABEL_DAY), instance, db_path=db, archive_dir=str(archive),
                        assets=assets, run_config=config)  # fmt: skip
    assert result["success"], result["failures"]
    event = instance.get_latest_materialization_event(AssetKey("llm_labels"))
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def stored_labels(db: str) -> dict[str, dict]:
    """Every llm_labels row by rkey, with all its columns as stored."""
    con = duckdb.connect(db, read_only=True)
    try:
        cursor = con.execute("SELECT * FROM llm_labels ORDER BY uri")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()
    return {row["uri"].rsplit("/", 1)[1]: row for row in rows}


def answer_of(row: dict) -> tuple:
    return row["status"], row["is_sociopolitical"], row["political_ideology"], row["source_digest"]


@pytest.fixture
def labeled_from_file(tmp_path):
    """A day of five posts imported from a first label file: one invalid row, one post missing from it."""
    archive = tmp_path / "archive"
    write_archive(archive / "d.jsonl", [post_event(k, text=v) for k, v in LABEL_TEXTS.items()])
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    first = tmp_path / "labels_v1.csv"
    digest = label_file(first, {"senate": ("civic", "left"), "pasta": ("not civic", ""), "ballot": ("maybe", ""),
                                "union": ("civic", "left")})  # fmt: skip
    metadata = import_labels(instance, db, archive, first, ingest=True)
    assert metadata["replaced"] == len(LABEL_TEXTS) and metadata["source_digests"] == [digest]
    return instance, db, archive, tmp_path, digest


def test_reimporting_the_same_label_file_changes_nothing(labeled_from_file):
    instance, db, archive, tmp_path, digest = labeled_from_file
    before = stored_labels(db)
    assert {k: answer_of(r)[:3] for k, r in before.items()} == {
        "senate": ("ok", True, "left"),
        "pasta": ("ok", False, None),
        "ballot": ("failed", None, None),
        "garden": ("skipped", None, None),
        "union": ("ok", True, "left"),
    }
    assert {answer_of(r)[3] for r in before.values()} == {digest}
    metadata = import_labels(instance, db, archive, tmp_path / "labels_v1.csv")
    assert metadata["replaced"] == 0 and metadata["dagster/row_count"] == len(LABEL_TEXTS)
    assert stored_labels(db) == before  # byte for byte, labeled_at included


def test_reimporting_a_corrected_label_file_replaces_only_what_it_changes(labeled_from_file):
    instance, db, archive, tmp_path, first_digest = labeled_from_file
    before = stored_labels(db)
    assert before["ballot"]["reason"].startswith("invalid_row: unknown_label")
    assert before["garden"]["reason"] == "not_in_label_file"
    corrected = tmp_path / "labels_v2.csv"
    digest = label_file(corrected, {
        "senate": ("civic", "right"),  # a corrected answer
        "pasta": ("not civic", ""),  # unchanged
        "ballot": ("civic", "moderate"),  # the invalid row fixed
        "union": ("civic", "left"),  # unchanged
        "garden": ("not civic", ""),  # a post the first file lacked
    })  # fmt: skip
    metadata = import_labels(instance, db, archive, corrected)
    assert metadata["replaced"] == 3
    after = stored_labels(db)
    assert answer_of(after["senate"]) == ("ok", True, "right", digest)
    assert answer_of(after["ballot"]) == ("ok", True, "moderate", digest)
    assert answer_of(after["garden"]) == ("ok", False, None, digest)
    assert after["senate"]["reason"] is None and after["ballot"]["reason"] is None and after["garden"]["reason"] is None
    # Rows the new file gives the same answer stay as the first file wrote them.
    assert after["pasta"] == before["pasta"] and after["union"] == before["union"]
    assert answer_of(after["union"])[3] == first_digest
    assert import_labels(instance, db, archive, corrected)["replaced"] == 0
    assert stored_labels(db) == after
