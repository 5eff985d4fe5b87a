"""Raw → cleaned for one synthetic day of N posts: throughput and peak memory.

Generates the day in a child process first (not timed, not counted in memory), then ingests and cleans it
into a fresh DuckDB file. `python bench/ingest.py --posts 1000000 --json`
Targets on the 2-core machine: 1M posts ≤ 60 s, peak RSS ≤ 1.5 GiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.resources.bluesky import read_outcomes
from bsky_warehouse.resources.warehouse import WarehouseResource

DAY = date(2024, 3, 10)


def generate(directory: Path, posts: int, day: date = DAY, seed: int = 0) -> Path:
    out = directory / f"{day.isoformat()}.jsonl"
    subprocess.run([sys.executable, str(Path(__file__).with_name("generate.py")), "--posts", str(posts),
                    "--day", day.isoformat(), "--seed", str(seed), "--out", str(out)], check=True)  # fmt: skip
    return out


def ingest_and_clean(warehouse: WarehouseResource, archive: Path, day: date) -> dict[str, float]:
    started = time.perf_counter()
    with warehouse.connect() as con:
        stats = replace_day(con, day, "archive", stage_lines(con, read_outcomes(archive, day)))
        cleaned = clean_day(con, day, FilterRules())
    return {"seconds": time.perf_counter() - started, "posts": stats.posts, "cleaned": cleaned.cleaned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive"
        generate(archive, args.posts)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result = ingest_and_clean(WarehouseResource(path=str(Path(tmp) / "wh.duckdb")), archive, DAY)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "posts": result["posts"],
        "seconds": round(result["seconds"], 2),
        "posts_per_s": round(result["posts"] / result["seconds"]),
        "peak_rss_mb": round(peak),
        "rss_before_mb": round(rss_before),
    }
    print(json.dumps(figures) if args.json else figures)


if __name__ == "__main__":
    main()
