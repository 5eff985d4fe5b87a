"""Scoring and labelling say how far they got: a progress line in the run's Dagster log, counting only the posts
this run worked on (not those already stored or resumed from a checkpoint), with the total learnt batch by batch."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import duckdb
import pytest
from dagster import DagsterInstance

from bsky_warehouse import checkpoint as checkpoints
from bsky_warehouse.checkpoint import Checkpoint, run_partitions
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.progress import Progress
from bsky_warehouse.project import SAMPLE_DIR
from bsky_warehouse.reference import REFERENCE_SCORER, ReferenceScorer
from bsky_warehouse.resources.llm import OpenAILabelerResource
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.factories import post_event, write_archive
from tests.servers.openai_server import OpenAIServer
from tests.test_checkpoint_batches import DAYS, PRODUCER, VERSION, Paid, cleaned  # noqa: F401 (a fixture)
from tests.test_labels_asset import INGEST, LABEL_DAY, LABEL_TEXTS

DAY = date(2024, 3, 16)
REFERENCE = {"ops": {"toxicity_scores": {"config": {"scorer": REFERENCE_SCORER}}}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_total_grows_as_batches_are_claimed_and_resumed_posts_are_not_work(cleaned, monkeypatch):  # noqa: F811
    monkeypatch.setattr(checkpoints, "BATCH_POSTS", 1)  # one day per batch: the total is learnt four times
    first = Checkpoint(cleaned.staging_dir, "toxicity_scores", [*PRODUCER.values(), *VERSION.values()], DAYS[0])
    with cleaned.connect() as con:
        (uri,) = con.execute("SELECT min(uri) FROM cleaned_posts WHERE partition_date = $d", {"d": DAYS[0]}).fetchone()
    with first:
        first.append({"uri": uri, "status": "ok", "reason": None, "scored_at": datetime.now(UTC), "prob_toxicity": 0.5,
                      **PRODUCER, **VERSION, "partition_date": DAYS[0]})  # fmt: skip
    totals: list[int | None] = []
    progress = Progress("scoring paid", 0, clock=Clock())
    paid = Paid()

    def work(day: date, posts: list[Any], emit: Any) -> Any:
        totals.append(progress.total)
        return paid(day, posts, emit)

    list(run_partitions(cleaned, "toxicity_scores", DAYS, PRODUCER, VERSION, work, progress=progress))
    assert totals == [2, 5, 8, 11]  # three posts a day, one of the first day's resumed from its checkpoint
    assert progress.done == len(paid.asked) == 11

    again = Progress("scoring paid", 0, clock=Clock())
    list(run_partitions(cleaned, "toxicity_scores", DAYS, PRODUCER, VERSION, paid, progress=again))
    assert (again.total, again.done) == (0, 0)  # all stored: nothing to do, nothing done


def progress_lines(instance: DagsterInstance, run_id: str, what: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id) if entry.user_message.startswith(what)]


@pytest.mark.integration
def test_scoring_through_dagster_logs_the_posts_it_scored(tmp_path):
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    window = DayWindow.for_day(DAY)

    def score() -> dict[str, Any]:
        result = run_window(window, instance, db_path=db, archive_dir=str(SAMPLE_DIR), run_config=REFERENCE,
                            assets=["toxicity_scores"], checks=False)  # fmt: skip
        assert result["success"], result["failures"]
        return result

    assert run_window(window, instance, db_path=db, archive_dir=str(SAMPLE_DIR), assets=INGEST, checks=False)["success"]
    what = f"scoring {REFERENCE_SCORER} {DAY}: "
    with duckdb.connect(db, read_only=True) as con:
        (eligible,) = con.execute(f"SELECT count(*) FROM ({checkpoints.ELIGIBLE_SQL})", {"day": DAY}).fetchone()
    assert eligible > 10
    (line,) = progress_lines(instance, score()["run_id"], what)
    assert line.startswith(f"{what}{eligible:,}/{eligible:,} posts (100%)") and " done in " in line

    # Four rows lost from the table, two of them still in a checkpoint: this run scores only the other two.
    with duckdb.connect(db) as con:
        first_four = "SELECT uri FROM toxicity_scores ORDER BY uri LIMIT 4"
        cursor = con.execute(f"DELETE FROM toxicity_scores WHERE uri IN ({first_four}) RETURNING *")
        names = [d[0] for d in cursor.description]
        lost = sorted((dict(zip(names, row, strict=True)) for row in cursor.fetchall()), key=lambda r: r["uri"])
    scorer = ReferenceScorer()
    staging = WarehouseResource(path=db).staging_dir
    with Checkpoint(staging, "toxicity_scores", [scorer.name, scorer.version], DAY) as resumed:
        for row in lost[:2]:
            resumed.append(row)
    (line,) = progress_lines(instance, score()["run_id"], what)
    assert line.startswith(f"{what}2/2 posts (100%)"), line

    assert progress_lines(instance, score()["run_id"], what) == []  # nothing left to score: no line


@pytest.mark.integration
def test_labelling_through_dagster_logs_the_posts_it_labelled(tmp_path):
    archive = tmp_path / "archive"
    write_archive(archive / "d.jsonl", [post_event(k, text=v) for k, v in LABEL_TEXTS.items()])
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    config = {"ops": {"llm_labels": {"config": {"labeler": "openai"}}}}
    with OpenAIServer() as server:
        labeler = OpenAILabelerResource(base_url=server.base_url, model="test-model")
        result = run_window(DayWindow.for_day(LABEL_DAY), instance, db_path=db, archive_dir=str(archive),
                            run_config=config, assets=[*INGEST, "llm_labels"], resources={"llm_openai": labeler},
                            checks=False)  # fmt: skip
    assert result["success"], result["failures"]
    what = f"labelling {labeler.name} {LABEL_DAY}: "
    (line,) = progress_lines(instance, result["run_id"], what)
    assert line.startswith(f"{what}{len(LABEL_TEXTS)}/{len(LABEL_TEXTS)} posts (100%)") and " done in " in line
