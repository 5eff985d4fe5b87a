"""Property: whatever order, repeats, gaps and ranges partitions are run in, once every day has run at least once
the marts equal a `dbt build --full-refresh` of the same warehouse, row for row.

The corpus is small but dense in cross-day changes: deletes seen days after the post (purging an earlier day's
rows), the same uri under two `createdAt` days (the earlier day takes it over from the later one whenever it runs
second), updates seen on a later day (one changes its post's filter outcome, one moves `createdAt` to another
day). Every run goes through Dagster (`run_window`: ingest, cleaning, scores, labels, dbt) into one DuckDB file.
Set BSKY_PROPERTY_SEED to replay a failing sequence; set BSKY_PROPERTY_SEQUENCES to try more of them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import DagsterInstance

from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import DBT_ENV, DBT_MANIFEST, DBT_PROJECT_DIR, dbt_executable
from tests.factories import delete_event, post_event, uri, write_archive

pytestmark = pytest.mark.integration

DAYS = [date(2024, 3, 10) + timedelta(days=i) for i in range(4)]
PYTHON_ASSETS = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts", "toxicity_scores", "llm_labels"]
SEED_ENV = "BSKY_PROPERTY_SEED"
SEQUENCES_ENV = "BSKY_PROPERTY_SEQUENCES"


def at(day: date, hour: int = 12, minute: int = 0) -> str:
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00.000Z"


def build_corpus(root: Path) -> tuple[Path, Path]:
    """One archive file per day the events were seen (as Jetstream dumps are), and an import label file."""
    d0, d1, d2, d3 = DAYS
    seen: dict[date, list[dict[str, Any]]] = {day: [] for day in DAYS}
    texts = ("a calm post about gardens", "this damn shit is stupid", "vote for the senate bill today",
             "you are an idiot and a liar")  # fmt: skip
    for i, day in enumerate(DAYS):
        for j, text in enumerate(texts):
            seen[day].append(post_event(f"n{i}{j}", text=f"{text} {i}", created_at=at(day, 8 + j)))
        seen[day].append(post_event(f"de{i}", text="ein ganz normaler Beitrag", created_at=at(day, 14), langs=["de"]))
        seen[day].append(post_event(f"sh{i}", text="ok", created_at=at(day, 15)))
    # Deletes seen on a later day purge an earlier day's post (and everything derived from it).
    for rkey, created, deleted in (("x1", d0, d2), ("x2", d1, d3), ("x3", d2, d3), ("x4", d0, d1)):
        seen[created].append(post_event(rkey, text=f"soon deleted {rkey}, damn", created_at=at(created, 9, 30)))
        seen[deleted].append(delete_event(rkey, seen_at=at(deleted, 18)))
    # One uri under two createdAt days: the earlier day owns it, taking it over if the later one ran first.
    for rkey, early, late in (("t1", d1, d3), ("t2", d0, d2), ("t3", d0, d3), ("t4", d1, d2)):
        seen[late].append(post_event(rkey, text=f"posted twice {rkey} shit", created_at=at(late, 10)))
        backdated = post_event(
            rkey, text=f"backdated {rkey}", created_at=at(early, 11), operation="update", seen_at=at(late, 20)
        )
        seen[late].append(backdated)
    seen[d3].append(delete_event("t2", seen_at=at(d3, 21)))  # taken over, then deleted
    # Updates seen later: one makes its post fail the filters, one moves createdAt to a later day.
    seen[d1].append(post_event("u1", text="a perfectly fine post", created_at=at(d1, 16)))
    seen[d3].append(post_event("u1", text="no", created_at=at(d1, 16), operation="update", seen_at=at(d3, 9)))
    seen[d1].append(post_event("u2", text="about the election", created_at=at(d1, 17)))
    moved = post_event("u2", text="the election, edited", created_at=at(d2, 1), operation="update", seen_at=at(d2, 2))
    seen[d2].append(moved)
    archive = root / "archive"
    for day, events in seen.items():
        write_archive(archive / f"{day.isoformat()}.jsonl", events)
    labels = root / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["uri", "is_sociopolitical", "political_ideology"])
        for i in range(len(DAYS)):
            writer.writerow([uri(f"n{i}2"), "true", "left" if i % 2 else "right"])
            writer.writerow([uri(f"n{i}0"), "false", ""])
        for rkey in ("t1", "t2", "t3", "t4", "u2", "x1", "x3"):
            writer.writerow([uri(rkey), "true", "moderate"])
    return archive, labels


def random_sequence(rng: random.Random) -> list[DayWindow]:
    """Single days and ranges in random order, with repeats and gaps, until every day has run; then one more.

    Most runs start on a day not run yet (a run costs a dbt build), some on any day (repeats, re-runs of a
    range), so a sequence covers the days in a handful of runs.
    """
    steps: list[DayWindow] = []
    covered: set[date] = set()
    while True:
        every_day_ran = len(covered) == len(DAYS)
        todo = [i for i, day in enumerate(DAYS) if day not in covered]
        start = rng.choice(todo) if todo and rng.random() < 0.75 else rng.randrange(len(DAYS))
        length = 1 if rng.random() < 0.6 else rng.randint(2, 3)
        steps.append(DayWindow(DAYS[start], DAYS[min(start + length, len(DAYS)) - 1] + timedelta(days=1)))
        if every_day_ran:
            return steps
        covered.update(steps[-1].days())


def dbt_full_refresh(db: str, marts: list[str]) -> None:
    """`dbt build --full-refresh` of the marts and everything they are built from; the data tests change no
    table, so they are left out."""
    env = {**os.environ, **DBT_ENV, "BSKY_WAREHOUSE_DB": db}
    args = ["build", "--full-refresh", "--select", *(f"+{name}" for name in marts), "--exclude", "resource_type:test"]
    proc = subprocess.run(
        [dbt_executable(), *args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
        env=env, cwd=DBT_PROJECT_DIR, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]


def marts(db: str, names: list[str]) -> dict[str, list[tuple]]:
    con = duckdb.connect(db, read_only=True)
    try:
        return {name: sorted(con.execute(f"SELECT * FROM marts.{name}").fetchall(), key=sort_key) for name in names}
    finally:
        con.close()


def sort_key(row: tuple) -> tuple:
    """Rows ordered by their values, floats rounded so that last-bit differences cannot reorder them."""
    return tuple((0, "") if v is None else (1, repr(round(v, 6) if isinstance(v, float) else v)) for v in row)


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    return a == b


def differences(incremental: dict[str, list[tuple]], full: dict[str, list[tuple]]) -> list[str]:
    out = []
    for name in sorted(set(incremental) | set(full)):
        got, want = incremental.get(name), full.get(name)
        if got is None or want is None:
            out.append(f"{name}: only in the {'full refresh' if got is None else 'incremental build'}")
            continue
        if len(got) != len(want) or not all(
            len(g) == len(w) and all(same_value(x, y) for x, y in zip(g, w, strict=True))
            for g, w in zip(got, want, strict=True)
        ):
            extra = [r for r in got if r not in want][:3]
            missing = [r for r in want if r not in got][:3]
            out.append(f"{name}: {len(got)} rows vs {len(want)}; only incremental {extra}; only full {missing}")
    return out


def seeds() -> list[int]:
    if os.environ.get(SEED_ENV):
        return [int(os.environ[SEED_ENV])]
    # New sequences every session; under pytest-xdist every worker must collect the same ones, so they come from
    # the run's shared id there.
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    rng = random.Random(run_id) if run_id else random.SystemRandom()
    return [rng.randrange(10**9) for _ in range(int(os.environ.get(SEQUENCES_ENV, "1")))]


def mart_models() -> tuple[list[str], list[str]]:
    """The incremental marts, and the dbt nodes a build of them needs (the marts, their staging views, the
    seed): rebuilding only those keeps each run short; the other marts are rebuilt whole on every build."""
    nodes = json.loads(DBT_MANIFEST.read_text())["nodes"]
    by_id = {node_id: node for node_id, node in nodes.items() if node["resource_type"] in ("model", "seed")}
    marts = sorted(node["name"] for node in by_id.values() if node["config"].get("materialized") == "incremental")
    wanted = {node_id for node_id, node in by_id.items() if node["name"] in marts}
    todo = list(wanted)
    while todo:
        for parent in by_id[todo.pop()].get("depends_on", {}).get("nodes", []):
            if parent in by_id and parent not in wanted:
                wanted.add(parent)
                todo.append(parent)
    return marts, sorted(by_id[node_id]["name"] for node_id in wanted)


@pytest.mark.parametrize("seed", seeds())
def test_marts_equal_a_full_refresh_after_any_sequence_of_partition_runs(tmp_path, seed):
    archive, labels = build_corpus(tmp_path)
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    run_config = {"ops": {"llm_labels": {"config": {"labeler": "import", "import_path": str(labels)}}}}
    incremental, dbt_nodes = mart_models()
    assets = PYTHON_ASSETS + dbt_nodes
    sequence = random_sequence(random.Random(seed))
    shown = " ".join(f"{w.start}..{w.days()[-1]}" if len(w.days()) > 1 else str(w.start) for w in sequence)
    replay = f"seed {seed} ({SEED_ENV}={seed} replays it); runs: {shown}"
    covered: set[date] = set()
    for step, window in enumerate(sequence):
        result = run_window(window, instance, db_path=db, archive_dir=str(archive), run_config=run_config,
                            assets=assets, raise_on_error=False, log_level="WARNING", checks=False)  # fmt: skip
        assert result["success"], f"{replay}: run {step} failed: {result['failures']}"
        covered.update(window.days())
        if len(covered) < len(DAYS):
            continue
        copy = str(tmp_path / f"full-{step}.duckdb")
        shutil.copyfile(db, copy)
        if os.path.exists(db + ".wal"):
            shutil.copyfile(db + ".wal", copy + ".wal")
        dbt_full_refresh(copy, incremental)
        diff = differences(marts(db, incremental), marts(copy, incremental))
        assert not diff, f"{replay}: after run {step} ({window.start}..{window.days()[-1]}):\n" + "\n".join(diff)
