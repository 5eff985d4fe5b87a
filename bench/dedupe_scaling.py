"""Does cleaning a day cost more as history grows? Cleans D synthetic days in order and compares the last
day's cleaning time with the first's. `python bench/dedupe_scaling.py --days 30 --posts-per-day 50000 --json`
Target: ratio ≤ 1.3.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import generate
from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.resources.bluesky import read_outcomes
from bsky_warehouse.resources.warehouse import WarehouseResource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--posts-per-day", type=int, default=50_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    first = date(2024, 3, 1)
    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = WarehouseResource(path=str(Path(tmp) / "wh.duckdb"))
        for i in range(args.days):
            day = first + timedelta(days=i)
            archive = Path(tmp) / f"archive-{i}"
            generate(archive, args.posts_per_day, day=day, seed=i)
            with warehouse.connect() as con:
                replace_day(con, day, "archive", stage_lines(con, read_outcomes(archive, day)))
                started = time.perf_counter()
                clean_day(con, day, FilterRules())
                timings.append(time.perf_counter() - started)
    # The first day is noisy (cold caches): compare the median of the first three with the last three.
    head = sorted(timings[:3])[len(timings[:3]) // 2]
    tail = sorted(timings[-3:])[len(timings[-3:]) // 2]
    figures = {"days": args.days, "posts_per_day": args.posts_per_day, "first_day_s": round(head, 3),
               "last_day_s": round(tail, 3), "ratio": round(tail / head, 3)}  # fmt: skip
    print(json.dumps(figures) if args.json else figures)


if __name__ == "__main__":
    main()
