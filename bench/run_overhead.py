"""What does a run cost before any data work? The fixed cost of `bsky-warehouse materialize` as a user types it.

Three figures, each a real CLI process against a fresh warehouse and Dagster instance (wall and CPU of the process
and its children, dbt included), with where the time went per step from the run's own step stats:
  * one sample day (`--start 2024-03-13`, the vendored sample archive);
  * a long window of tiny days in one run (default 365 days of ~2 posts each, synthetic);
  * the marginal cost per day: the long window against a short one (default 30 days), divided by the days between.
`python bench/run_overhead.py --json`
Targets (2-core machine): sample day <= 12 s wall; 365 tiny days in one run <= 180 s; marginal <= 0.3 s/day.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.generate import write_day  # noqa: E402

CLI = Path(sys.executable).with_name("bsky-warehouse")
SAMPLE_DAY = date(2024, 3, 13)
FIRST = date(2023, 1, 1)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def step_seconds(dagster_home: Path) -> dict[str, float]:
    """Seconds per step of the instance's latest run, from Dagster's own step stats."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(limit=1)
        if not runs:
            return {}
        stats = instance.get_run_step_stats(runs[0].run_id)
    return {s.step_key: round(s.end_time - s.start_time, 2) for s in stats if s.start_time is not None and s.end_time}


def timed_materialize(workdir: Path, start: date, end: date, archive: Path | None, first: date) -> dict[str, Any]:
    """One `materialize` of [start, end) in its own warehouse and instance, as a shell user runs it."""
    workdir.mkdir(parents=True)
    home = workdir / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "BSKY_WAREHOUSE_DB": str(workdir / "warehouse.duckdb"),
        "DAGSTER_HOME": str(home),
        "BSKY_WAREHOUSE_START_DATE": first.isoformat(),
    }
    command = [str(CLI), "materialize", "--start", start.isoformat(), "--end", end.isoformat()]
    if archive is not None:
        command += ["--archive", str(archive)]
    cpu_before = children_cpu_s()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"materialize failed ({done.returncode}):\n{done.stderr[-4000:]}")
    steps = step_seconds(home)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(children_cpu_s() - cpu_before, 2),
        "days": (end - start).days,
        "steps_s": dict(sorted(steps.items(), key=lambda kv: -kv[1])[:8]),
    }


def tiny_archive(folder: Path, days: int, posts_per_day: int) -> Path:
    for i in range(days):
        day = FIRST + timedelta(days=i)
        write_day(folder / f"{day.isoformat()}.jsonl", day, posts_per_day, seed=i)
    return folder


def import_seconds() -> float:
    """Importing the definitions alone (Dagster, dagster-dbt, the manifest), which every run pays first."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import bsky_warehouse.definitions"], check=True, cwd=REPO)
    return round(time.perf_counter() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--short-days", type=int, default=30)
    parser.add_argument("--posts-per-day", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 0 < args.short_days < args.days:
        parser.error("--short-days must be between 0 and --days")
    with tempfile.TemporaryDirectory(prefix="run-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        archive = tiny_archive(tmp / "archive", args.days, args.posts_per_day)
        imports = import_seconds()
        sample = timed_materialize(tmp / "sample", SAMPLE_DAY, SAMPLE_DAY + timedelta(days=1), None, date(2024, 3, 8))
        short = timed_materialize(tmp / "short", FIRST, FIRST + timedelta(days=args.short_days), archive, FIRST)
        long = timed_materialize(tmp / "long", FIRST, FIRST + timedelta(days=args.days), archive, FIRST)
    marginal = (long["wall_s"] - short["wall_s"]) / (args.days - args.short_days)
    figures = {
        "import_definitions_s": imports,
        "sample_day": sample,
        f"tiny_days_{args.short_days}": short,
        f"tiny_days_{args.days}": long,
        "marginal_per_day_s": round(marginal, 3),
        "targets": {"sample_day_wall_s": 12, f"tiny_days_{args.days}_wall_s": 180, "marginal_per_day_s": 0.3},
    }
    print(json.dumps(figures) if args.json else json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
