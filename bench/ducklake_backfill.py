"""The same backfill on the DuckDB file and on a DuckLake, launched as a user launches it.

Generates D synthetic days (not timed), then times `dagster asset materialize` of the daily pipeline (archive to
marts, the local scorer) over the D days:
  * file: one single-run backfill, the writer pool at 1 (the file's only safe setting);
  * ducklake_one_run: the same single run on a DuckLake (catalog in a PostgreSQL started here, data in a folder);
  * ducklake_split_runs: the days split into `--runs` concurrent runs, the writer pool raised to match.
Run on DuckDB 1.5.5 with the extensions (`make ducklake`; `make bench` sets PYTHONPATH):
`PYTHONPATH=$PWD/.venv/ducklake python bench/ducklake_backfill.py --days 7 --posts-per-day 20000 --json`
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import generate
from bsky_warehouse import ducklake
from tests.backfills import dagster_home, launch
from tests.postgres import running_postgres
from tests.processes import wait_for_all

FIRST = date(2024, 3, 8)


def split(days: list[date], parts: int) -> list[tuple[str, str]]:
    """`days` as `parts` contiguous ranges (first, last), as even as they divide."""
    size, extra = divmod(len(days), parts)
    ranges, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        if end > start:
            ranges.append((days[start].isoformat(), days[end - 1].isoformat()))
        start = end
    return ranges


def backfill(root: Path, archive: Path, ranges: list[tuple[str, str]], env: dict[str, str]) -> float:
    """Wall seconds of the runs for `ranges`, launched at once, each checked to have succeeded."""
    root.mkdir(parents=True)
    home = dagster_home(root, writer_limit=len(ranges))
    env = {**env, "DAGSTER_HOME": str(home), "BSKY_WAREHOUSE_DB": str(root / "wh.duckdb")}
    started = time.perf_counter()
    procs = [launch(first, last, archive, env) for first, last in ranges]
    outputs = wait_for_all(procs)
    seconds = time.perf_counter() - started
    for proc, out in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise SystemExit(f"a backfill run failed:\n{out[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--posts-per-day", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        ducklake.extension_path("ducklake")
    except ducklake.DuckLakeUnavailable as err:
        raise SystemExit(str(err)) from None
    days = [FIRST + timedelta(days=i) for i in range(args.days)]
    base = {k: v for k, v in os.environ.items() if k not in ("BSKY_WAREHOUSE_CATALOG", "BSKY_WAREHOUSE_DATA_PATH")}
    with tempfile.TemporaryDirectory() as tmp_name, running_postgres() as server:
        tmp = Path(tmp_name)
        archive = tmp / "archive"
        for i, day in enumerate(days):
            generate(archive, args.posts_per_day, day=day, seed=i)
        whole = [(days[0].isoformat(), days[-1].isoformat())]
        file_s = backfill(tmp / "file", archive, whole, base)

        def lake_env(name: str) -> dict[str, str]:
            catalog = "postgres:" + server.dsn(server.create_database())
            return {**base, "BSKY_WAREHOUSE_CATALOG": catalog, "BSKY_WAREHOUSE_DATA_PATH": str(tmp / name / "data")}

        one_s = backfill(tmp / "lake-one", archive, whole, lake_env("lake-one"))
        split_s = backfill(tmp / "lake-split", archive, split(days, args.runs), lake_env("lake-split"))
    figures = {
        "days": args.days,
        "posts_per_day": args.posts_per_day,
        "file_s": round(file_s, 1),
        "ducklake_one_run_s": round(one_s, 1),
        f"ducklake_{args.runs}_runs_s": round(split_s, 1),
        "ducklake_one_run_vs_file": round(one_s / file_s, 2),
        "ducklake_split_vs_file": round(split_s / file_s, 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures) if args.json else figures)


if __name__ == "__main__":
    main()
