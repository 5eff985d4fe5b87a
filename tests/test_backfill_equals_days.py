"""A 30-day backfill as one Dagster run (the ingest and clean assets' single-run backfill policy, the multiprocess
executor) holds exactly what the same 30 days hold when each is loaded alone, in a random order.

The archive is built to cross days: posts that arrive in a later day's file, an edit that moves a post's
`createdAt` to a later day (the earlier day keeps it), deletes of earlier days' posts, a reject in every file.
"""

from __future__ import annotations

import os
import random
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from bsky_warehouse.archive_index import ArchiveIndex
from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.backfills import dagster_home, launch
from tests.factories import delete_event, post_event, write_archive
from tests.processes import wait_for_all

pytestmark = pytest.mark.integration
FIRST = date(2024, 3, 8)  # the default first partition
DAYS = [FIRST + timedelta(days=i) for i in range(30)]
ASSETS = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"]
TABLES = {
    "raw_posts": "SELECT * EXCLUDE (ingested_at) FROM raw_posts ORDER BY ALL",
    "post_deletions": "SELECT * FROM post_deletions ORDER BY ALL",
    "rejected_records": "SELECT * EXCLUDE (ingested_at) FROM rejected_records ORDER BY ALL",
    "cleaned_posts": "SELECT * EXCLUDE (ingested_at) FROM cleaned_posts ORDER BY ALL",
}


def at(day: date, hour: int) -> str:
    return f"{day.isoformat()}T{hour:02d}:00:00Z"


def build_archive(root: Path) -> None:
    """One file per day, each holding that day's posts and the cross-day events above."""
    for i, day in enumerate(DAYS):
        events: list[dict | str] = [
            post_event(f"d{i}a", text=f"day {i} post", created_at=at(day, 9)),
            post_event(f"d{i}b", text="", created_at=at(day, 10)),  # filtered, not dropped
            post_event(f"d{i}c", text=f"reply on day {i}", created_at=at(day, 11),
                       reply={"parent": {"uri": "at://did:plc:x/app.bsky.feed.post/p"}}),
            "not json at all",
        ]  # fmt: skip
        if i >= 1:  # yesterday's post, seen only today
            events.append(post_event(f"late{i}", created_at=at(DAYS[i - 1], 23), seen_at=at(day, 1)))
        if i >= 2:  # an edit that moves a post two days old to today: the earlier day keeps the uri
            events.append(post_event(f"d{i - 2}a", text="edited", created_at=at(day, 12), operation="update"))
        if i >= 3:
            events.append(delete_event(f"d{i - 3}c", seen_at=at(day, 13)))
        write_archive(root / f"{day.isoformat()}.jsonl", events)


def tables(db: str) -> dict[str, list[tuple]]:
    con = duckdb.connect(db, read_only=True)
    try:
        return {name: con.execute(sql).fetchall() for name, sql in TABLES.items()}
    finally:
        con.close()


def days_holding(db: str, table: str, rkeys: str = "d0a|late1|d0c") -> dict[str, list[date]]:
    """rkey -> the partitions of `table` holding it, for the rkeys matching `rkeys` (a regex; `%`: all)."""
    con = duckdb.connect(db, read_only=True)
    try:
        rows = con.execute(
            f"""SELECT split_part(uri, '/', -1) AS rkey, list(partition_date ORDER BY partition_date) FROM {table}
                WHERE $rkeys = '%' OR regexp_full_match(split_part(uri, '/', -1), $rkeys) GROUP BY 1""",
            {"rkeys": rkeys},
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


def each_day_alone(db: str, archive: Path, seed: int) -> None:
    """The days one by one in a random order, as a single-day ingest and clean would load them."""
    warehouse = WarehouseResource(path=db)
    index = ArchiveIndex(warehouse, archive, first_day=FIRST)
    index.update()
    for day in random.Random(seed).sample(DAYS, len(DAYS)):
        with warehouse.connect() as con:
            replace_day(con, day, "archive", index.stage_day(con, day))
            clean_day(con, day, FilterRules())


def test_a_30_day_single_run_backfill_equals_the_days_loaded_alone(tmp_path):
    archive = tmp_path / "archive"
    build_archive(archive)
    home = dagster_home(tmp_path, writer_limit=1)  # the file's only safe setting, as the repo's dagster.yaml
    db = str(tmp_path / "backfill.duckdb")
    env = {**os.environ, "DAGSTER_HOME": str(home), "BSKY_WAREHOUSE_DB": db}
    proc = launch(DAYS[0].isoformat(), DAYS[-1].isoformat(), archive, env, assets=ASSETS)
    (output,) = wait_for_all([proc])
    assert proc.returncode == 0, output[-4000:]
    assert "multiprocess" in output.lower()
    runs = DagsterInstance.from_config(str(home)).get_runs(RunsFilter())
    assert len(runs) == 1 and runs[0].status == DagsterRunStatus.SUCCESS  # one run for the 30 partitions

    alone = str(tmp_path / "alone.duckdb")
    each_day_alone(alone, archive, seed=len(DAYS))
    assert tables(db) == tables(alone)
    # The archive did cross days, so the equality above covers the cross-day rules, not only 30 separate days.
    assert days_holding(db, "raw_posts") == {"d0a": [DAYS[0], DAYS[2]], "late1": [DAYS[0]], "d0c": [DAYS[0]]}
    assert days_holding(db, "cleaned_posts") == {"d0a": [DAYS[0]], "late1": [DAYS[0]]}  # the edit stays; d0c went
    assert len({day for days in days_holding(db, "cleaned_posts", "%").values() for day in days}) == len(DAYS)
