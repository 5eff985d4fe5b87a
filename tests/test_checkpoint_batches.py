"""A window's paid work in batches of days (checkpoint.run_partitions): the warehouse opened twice per batch, not
twice per day, and still per day the same claim, checkpoint and merge, exactly once."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bsky_warehouse.checkpoint import Checkpoint, claim, run_partitions
from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.resources.bluesky import read_outcomes
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.factories import post_event, write_archive

FIRST = date(2024, 3, 10)
DAYS = [FIRST + timedelta(days=i) for i in range(4)]
PRODUCER = {"scorer": "paid"}
VERSION = {"scorer_version": "1"}


@pytest.fixture
def cleaned(tmp_path: Path, warehouse: WarehouseResource) -> WarehouseResource:
    """Three posts on each of four days, cleaned."""
    archive = tmp_path / "a"
    for day in DAYS:
        events = [
            post_event(f"{day:%d}p{i}", text=f"post {i} of {day}", created_at=f"{day}T12:00:00.000Z") for i in range(3)
        ]
        write_archive(archive / f"{day}.jsonl", events)
    with warehouse.connect() as con:
        for day in DAYS:
            replace_day(con, day, "archive", stage_lines(con, read_outcomes(archive, day)))
            clean_day(con, day, FilterRules())
    return warehouse


class Paid:
    """A scorer that logs every request, and fails once on the post named `fail_on`."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.asked: list[tuple[date, str]] = []
        self.fail_on = fail_on

    def __call__(self, day: date, posts: list[Any], emit: Any) -> dict[str, int]:
        for post in posts:
            if post.uri.endswith(self.fail_on or "\0"):
                self.fail_on = None
                raise RuntimeError("quota gone")
            self.asked.append((day, post.uri))
            emit(post.uri, {"status": "ok", "reason": None, "scored_at": datetime.now(UTC), "prob_toxicity": 0.5})
        return {"sent": len(posts)}


def stored(warehouse: WarehouseResource) -> dict[date, int]:
    with warehouse.connect() as con:
        rows = con.execute(
            "SELECT partition_date, count(*) FROM toxicity_scores WHERE scorer = 'paid' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return dict(rows)


def test_a_window_opens_the_warehouse_twice_and_reports_every_day(cleaned, monkeypatch):
    opened = []
    connect = WarehouseResource.connect
    monkeypatch.setattr(WarehouseResource, "connect", lambda self: opened.append(1) or connect(self))
    paid = Paid()
    results = list(run_partitions(cleaned, "toxicity_scores", DAYS, PRODUCER, VERSION, paid))
    assert len(opened) == 2
    assert [day for day, _ in results] == DAYS
    for _, stats in results:
        assert stats["requested"] == stats["rows"] == 3 and stats["by_status"] == {"ok": 3}
        assert stats["backend_stats"] == {"sent": 3}
    assert stored(cleaned) == dict.fromkeys(DAYS, 3)
    again = list(run_partitions(cleaned, "toxicity_scores", DAYS, PRODUCER, VERSION, paid))
    assert len(paid.asked) == 12 and all(stats["requested"] == 0 for _, stats in again)


def test_a_failing_day_keeps_the_days_before_it_merged_and_its_own_results_checkpointed(cleaned):
    failing = Paid(fail_on=f"{DAYS[2]:%d}p1")
    with pytest.raises(RuntimeError, match="quota gone"):
        list(run_partitions(cleaned, "toxicity_scores", DAYS, PRODUCER, VERSION, failing))
    assert stored(cleaned) == {DAYS[0]: 3, DAYS[1]: 3}
    assert len(Checkpoint(cleaned.staging_dir, "toxicity_scores", ["paid", "1"], DAYS[2]).rows()) == 1
    paid = Paid()
    results = dict(run_partitions(cleaned, "toxicity_scores", DAYS, PRODUCER, VERSION, paid))
    assert [uri for _, uri in paid.asked] == sorted({uri for _, uri in paid.asked})
    assert [day for day, _ in paid.asked] == [DAYS[2], DAYS[2], *[DAYS[3]] * 3]  # nothing paid twice
    assert results[DAYS[2]]["resumed_from_checkpoint"] == 1
    assert stored(cleaned) == dict.fromkeys(DAYS, 3)


def test_a_batch_stops_before_a_day_another_run_holds_and_takes_it_up_once_free(cleaned):
    held = Checkpoint(cleaned.staging_dir, "toxicity_scores", ["paid", "1"], DAYS[2])
    impatient = WarehouseResource(path=cleaned.path, lock_timeout_s=5)
    results = run_partitions(impatient, "toxicity_scores", DAYS, PRODUCER, VERSION, Paid())
    with claim(held.lock_path, "another run", timeout_s=1):
        # Waiting for the held day inside the batch would block here: the days before it are done first.
        first = [next(results), next(results)]
    rest = list(results)
    assert [day for day, _ in first + rest] == DAYS
    assert stored(cleaned) == dict.fromkeys(DAYS, 3)
