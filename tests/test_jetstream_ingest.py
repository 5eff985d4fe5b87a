"""A day replayed from a (local) Jetstream server loads exactly what the same events load from an archive file."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.project import SAMPLE_DIR
from bsky_warehouse.resources.bluesky import read_outcomes
from bsky_warehouse.resources.jetstream import collect_day
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.servers.jetstream_server import JetstreamServer

DAY = date(2024, 3, 16)


def load(db: Path, archive: Path) -> dict[str, list[tuple]]:
    warehouse = WarehouseResource(path=str(db))
    with warehouse.connect() as con:
        replace_day(con, DAY, "archive", stage_lines(con, read_outcomes(archive, DAY)))
        clean_day(con, DAY, FilterRules())
        return {
            "raw_posts": con.execute("SELECT * EXCLUDE (ingested_at) FROM raw_posts ORDER BY uri").fetchall(),
            "post_deletions": con.execute("SELECT * FROM post_deletions ORDER BY uri").fetchall(),
            "cleaned_posts": con.execute("SELECT * EXCLUDE (ingested_at) FROM cleaned_posts ORDER BY uri").fetchall(),
            "rejected": con.execute("SELECT reason, raw FROM rejected_records ORDER BY raw").fetchall(),
        }


def test_replayed_day_with_a_dropped_connection_loads_the_same_rows_as_the_archive(tmp_path):
    lines = []
    for path in sorted(SAMPLE_DIR.glob("*.jsonl")):
        lines += path.read_bytes().splitlines()
    day_file = SAMPLE_DIR / f"{DAY.isoformat()}.jsonl"
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / day_file.name).write_bytes(day_file.read_bytes())

    with JetstreamServer(lines, drop_after=60, drops=2) as server:
        stats = collect_day(server.host, DAY, tmp_path / "spool", secure=False,
                            now=datetime(2024, 3, 17, 6, tzinfo=UTC))  # fmt: skip
    assert stats.reconnects >= 2
    from_jetstream = load(tmp_path / "a.duckdb", tmp_path / "spool")
    from_archive = load(tmp_path / "b.duckdb", archive)
    assert from_jetstream["raw_posts"]
    assert from_jetstream == from_archive
