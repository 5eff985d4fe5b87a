"""Raw → cleaned for one synthetic day of N posts: throughput and peak memory, against DuckDB itself.

Generates the day in a child process first (not timed, not counted in memory), then ingests it as the ingest
asset does (the archive index parses the file into its spool, the day is loaded from the spool) and cleans it
into a fresh DuckDB file. Then DuckDB's own `read_ndjson` of the same file, with explicit columns, into a table
with the raw_posts record columns: its best case, no validation, no rejects, no dedupe. `duckdb_ratio` is the
project's ingest time (index build + day load, cleaning left out) over DuckDB's.
`python bench/ingest.py --posts 1000000 --json`
Targets on the 2-core machine: 1M posts ≤ 60 s, peak RSS ≤ 1.5 GiB, duckdb_ratio ≤ 1.5.
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

import duckdb

from bsky_warehouse.archive_index import ArchiveIndex
from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day
from bsky_warehouse.resources.warehouse import WarehouseResource
from bsky_warehouse.schema import POST_RECORD_COLUMNS

DAY = date(2024, 3, 10)


def generate(directory: Path, posts: int, day: date = DAY, seed: int = 0) -> Path:
    out = directory / f"{day.isoformat()}.jsonl"
    subprocess.run([sys.executable, str(Path(__file__).with_name("generate.py")), "--posts", str(posts),
                    "--day", day.isoformat(), "--seed", str(seed), "--out", str(out)], check=True)  # fmt: skip
    return out


def ingest_and_clean(warehouse: WarehouseResource, archive: Path, day: date) -> dict[str, float]:
    started = time.perf_counter()
    index = ArchiveIndex(warehouse, archive, first_day=day)
    index.update()
    indexed = time.perf_counter()
    with warehouse.connect() as con:
        stats = replace_day(con, day, "archive", index.stage_day(con, day))
        ingested = time.perf_counter()
        cleaned = clean_day(con, day, FilterRules())
    done = time.perf_counter()
    return {"seconds": done - started, "index_s": indexed - started, "ingest_s": ingested - started,
            "clean_s": done - ingested, "posts": stats.posts, "cleaned": cleaned.cleaned}  # fmt: skip


# Jetstream's event shape, as explicit columns: DuckDB's fastest way to read it (no schema inference).
NDJSON_COLUMNS = """{did: 'VARCHAR', time_us: 'BIGINT', kind: 'VARCHAR', commit: 'STRUCT(operation VARCHAR,
    collection VARCHAR, rkey VARCHAR, cid VARCHAR, record STRUCT(text VARCHAR, "createdAt" VARCHAR, langs VARCHAR[],
    reply STRUCT(parent STRUCT(uri VARCHAR), root STRUCT(uri VARCHAR)), embed STRUCT("$type" VARCHAR),
    facets JSON, labels JSON))'}"""


def duckdb_read_ndjson(db: Path, archive: Path, memory_limit: str) -> dict[str, float]:
    """DuckDB alone: the file's post events into a table of the raw_posts record columns."""
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"CREATE TABLE posts ({POST_RECORD_COLUMNS})")
        files = [p.as_posix() for p in sorted(archive.glob("*.jsonl"))]
        con.execute(
            f"""INSERT INTO posts BY NAME
                SELECT 'at://' || did || '/app.bsky.feed.post/' || commit.rkey AS uri, commit.cid AS cid,
                       did AS author_did, commit.record.text AS text,
                       commit.record.createdAt::TIMESTAMPTZ AS created_at, commit.record.langs AS langs,
                       commit.record.reply.parent.uri AS reply_parent_uri,
                       commit.record.reply.root.uri AS reply_root_uri, commit.record.embed."$type" AS embed_type,
                       commit.record.facets AS facets, commit.record.labels AS labels
                FROM read_ndjson($files, columns = {NDJSON_COLUMNS})
                WHERE kind = 'commit' AND commit.collection = 'app.bsky.feed.post'
                  AND commit.operation IN ('create', 'update')""",
            {"files": files},
        )
        rows = con.execute("SELECT count(*) FROM posts").fetchall()[0][0]
    finally:
        con.close()
    return {"seconds": time.perf_counter() - started, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive"
        generate(archive, args.posts)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        warehouse = WarehouseResource(path=str(Path(tmp) / "wh.duckdb"))
        result = ingest_and_clean(warehouse, archive, DAY)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        baseline = duckdb_read_ndjson(Path(tmp) / "duckdb.duckdb", archive, warehouse.memory_limit)
    figures = {
        "posts": result["posts"],
        "seconds": round(result["seconds"], 2),
        "posts_per_s": round(result["posts"] / result["seconds"]),
        "index_s": round(result["index_s"], 2),
        "ingest_s": round(result["ingest_s"], 2),
        "clean_s": round(result["clean_s"], 2),
        "peak_rss_mb": round(peak),
        "rss_before_mb": round(rss_before),
        "duckdb_read_ndjson_s": round(baseline["seconds"], 2),
        "duckdb_rows": baseline["rows"],
        "duckdb_ratio": round(result["ingest_s"] / baseline["seconds"], 2),
    }
    print(json.dumps(figures) if args.json else figures)


if __name__ == "__main__":
    main()
