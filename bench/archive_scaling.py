"""Does a day's ingest cost more as the archive grows? With the archive index, it should not.

Generates D synthetic days (one file each, in child processes; not timed), then:
  * day 1 with a 1-day archive and with a D-day archive: the index built first (timed separately), then day 1's
    ingest + clean timed, the index's freshness check included (every ingest run makes it);
  * a full D-day backfill as one run into a fresh warehouse (index build, then every day's ingest + clean) against
    D times a single day (its index build, ingest and clean) from a 1-day archive.
`python bench/archive_scaling.py --days 30 --posts-per-day 50000 --json`
Targets: day_1_ratio <= 1.2, backfill_ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import generate
from bsky_warehouse.archive_index import ArchiveIndex
from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day
from bsky_warehouse.resources.warehouse import WarehouseResource

FIRST = date(2024, 3, 8)


def ingest_and_clean(index: ArchiveIndex, day: date, check: bool = True) -> dict[str, float]:
    """One day as the ingest asset runs it (the index brought up to date once per run, then the day from its
    spool), then cleaning. A backfill is one run: its days skip the check the run already made."""
    started = time.perf_counter()
    if check:
        index.update()
    with index.warehouse.connect() as con:
        replace_day(con, day, "archive", index.stage_day(con, day))
        ingested = time.perf_counter()
        clean_day(con, day, FilterRules())
    done = time.perf_counter()
    return {"seconds": done - started, "ingest_s": ingested - started, "clean_s": done - ingested}


def fresh(tmp: Path, name: str, archive: Path) -> ArchiveIndex:
    return ArchiveIndex(WarehouseResource(path=str(tmp / name / "wh.duckdb")), archive, first_day=FIRST)


def day_one(tmp: Path, name: str, archive: Path, repeats: int) -> dict[str, float]:
    """The index built once, then day 1 ingested and cleaned `repeats` times (the median kept)."""
    index = fresh(tmp, name, archive)
    started = time.perf_counter()
    index.update()
    build = time.perf_counter() - started
    runs = sorted((ingest_and_clean(index, FIRST) for _ in range(repeats)), key=lambda r: r["seconds"])
    return {"index_build_s": build, **runs[len(runs) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--posts-per-day", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    days = [FIRST + timedelta(days=i) for i in range(args.days)]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        full = tmp / "archive-full"
        for i, day in enumerate(days):
            generate(full, args.posts_per_day, day=day, seed=i)
        single = tmp / "archive-one"
        single.mkdir()
        shutil.copy(full / f"{FIRST.isoformat()}.jsonl", single)

        one = day_one(tmp, "one", single, args.repeats)
        many = day_one(tmp, "many", full, args.repeats)

        started = time.perf_counter()
        single_day = fresh(tmp, "single", single)
        single_day.update()
        ingest_and_clean(single_day, FIRST)
        single_total = time.perf_counter() - started

        started = time.perf_counter()
        backfill = fresh(tmp, "backfill", full)
        report = backfill.update()
        build = time.perf_counter() - started
        per_day = [ingest_and_clean(backfill, day, check=False) for day in days]
        backfill_total = time.perf_counter() - started
    figures = {
        "days": args.days,
        "posts_per_day": args.posts_per_day,
        "day_1_with_1_day_archive_s": round(one["seconds"], 3),
        "day_1_with_full_archive_s": round(many["seconds"], 3),
        "day_1_ratio": round(many["seconds"] / one["seconds"], 3),
        "day_1_ingest_s": [round(one["ingest_s"], 3), round(many["ingest_s"], 3)],
        "day_1_clean_s": [round(one["clean_s"], 3), round(many["clean_s"], 3)],
        "index_build_1_day_s": round(one["index_build_s"], 2),
        "index_build_full_s": round(build, 2),
        "lines_indexed": report.lines_indexed,
        "single_day_total_s": round(single_total, 2),
        "backfill_s": round(backfill_total, 2),
        "backfill_ratio": round(backfill_total / (args.days * single_total), 3),
        "backfill_ingest_s": round(sum(d["ingest_s"] for d in per_day), 2),
        "backfill_clean_s": round(sum(d["clean_s"] for d in per_day), 2),
    }
    print(json.dumps(figures) if args.json else figures)


if __name__ == "__main__":
    main()
