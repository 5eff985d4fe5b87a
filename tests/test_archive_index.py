"""The archive index: the same outcomes as the per-day path (every file parsed for every day), on the shipped
sample and on the hostile archive; a new, changed or removed file re-indexes only itself and reports the days
its lines belong to; the Dagster asset, the sensor and the Jetstream spool through it."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pytest

from bsky_warehouse.archive_index import (
    UNDATED,
    ArchiveIndex,
    changed_files,
    content_digest,
    file_key,
    fingerprint,
    route,
)
from bsky_warehouse.events import Outcome
from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.project import SAMPLE_DIR
from bsky_warehouse.resources.bluesky import read_outcomes
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.factories import delete_event, post_event, uri, write_archive
from tests.test_hostile_archive import FIRST_DAY, build_hostile_archive

D10, D11, D12 = date(2024, 3, 10), date(2024, 3, 11), date(2024, 3, 12)
TABLES = {
    "raw_posts": "SELECT * EXCLUDE (ingested_at) FROM raw_posts ORDER BY ALL",
    "post_deletions": "SELECT * FROM post_deletions ORDER BY ALL",
    "rejected_records": "SELECT * EXCLUDE (ingested_at) FROM rejected_records ORDER BY ALL",
}


def tables(warehouse: WarehouseResource) -> dict[str, list[tuple]]:
    with warehouse.connect() as con:
        return {name: con.execute(sql).fetchall() for name, sql in TABLES.items()}


def indexed_days(warehouse: WarehouseResource) -> set[date]:
    with warehouse.connect() as con:
        return {d for (days,) in con.execute("SELECT days FROM archive_files").fetchall() for d in days}


@pytest.mark.parametrize("corpus", ["sample", "hostile"])
def test_the_index_loads_exactly_what_the_per_day_path_loads(tmp_path, corpus):
    if corpus == "sample":
        archive = SAMPLE_DIR
    else:
        archive = tmp_path / "archive"
        build_hostile_archive(archive)
    per_day = WarehouseResource(path=str(tmp_path / "per_day.duckdb"))
    indexed = WarehouseResource(path=str(tmp_path / "indexed.duckdb"))
    index = ArchiveIndex(indexed, archive, first_day=FIRST_DAY)
    report = index.update()
    days = sorted(indexed_days(indexed) | {FIRST_DAY, D10, D12})
    assert report.days_touched == indexed_days(indexed)
    for day in days:
        with per_day.connect() as con:
            expected = replace_day(con, day, "archive", stage_lines(con, read_outcomes(archive, day, FIRST_DAY)))
        with indexed.connect() as con:
            got = replace_day(con, day, "archive", index.stage_day(con, day))
        assert got.metadata() == expected.metadata(), day
    want = tables(per_day)
    assert want["raw_posts"] and (corpus == "sample" or want["rejected_records"])
    assert tables(indexed) == want


def test_a_new_changed_or_removed_file_reindexes_only_itself_and_reports_its_days(tmp_path, warehouse):
    archive = tmp_path / "archive"
    write_archive(archive / "a.jsonl", [post_event("a1"), post_event("a2")])
    write_archive(archive / "b.jsonl", [post_event("b1", created_at="2024-03-11T09:00:00Z")])
    index = ArchiveIndex(warehouse, archive, first_day=FIRST_DAY)
    first = index.update()
    assert (first.indexed, first.days_touched) == (["a.jsonl", "b.jsonl"], {D10, D11})
    with warehouse.connect() as con:
        indexed_at = dict(con.execute("SELECT file, indexed_at FROM archive_files").fetchall())

    again = index.update()
    assert (again.indexed, again.removed, again.days_touched, again.unchanged) == ([], [], set(), 2)

    # A later file holding a post created on the 10th (seen on the 12th) and a delete seen on the 12th.
    write_archive(archive / "late.jsonl", [
        post_event("backdated", created_at="2024-03-10T23:00:00Z", seen_at="2024-03-12T08:00:00Z"),
        delete_event("b1", seen_at="2024-03-12T09:00:00Z"),
    ])  # fmt: skip
    added = index.update()
    assert (added.indexed, added.days_touched) == (["late.jsonl"], {D10, D12})

    # Rewritten: same size and mtime, different bytes (the content hash sees it).
    b = archive / "b.jsonl"
    stat = b.stat()
    b.write_bytes(b.read_bytes().replace(b"2024-03-11T09", b"2024-03-11T08"))
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert b.stat().st_size == stat.st_size
    changed = index.update()
    assert (changed.indexed, changed.days_touched) == (["b.jsonl"], {D11})

    (archive / "a.jsonl").unlink()
    removed = index.update()
    assert (removed.indexed, removed.removed, removed.days_touched) == ([], ["a.jsonl"], {D10})
    with warehouse.connect() as con:
        rows = dict(con.execute("SELECT file, indexed_at FROM archive_files").fetchall())
        files = {r[0]: r[1:] for r in con.execute("SELECT file, lines, posts, deletes, days FROM archive_files")
                 .fetchall()}  # fmt: skip
        stats = replace_day(con, D10, "archive", index.stage_day(con, D10))
        posts = [r[0] for r in con.execute("SELECT uri FROM raw_posts ORDER BY uri").fetchall()]
    assert sorted(rows) == ["b.jsonl", "late.jsonl"] and rows["late.jsonl"] > indexed_at["b.jsonl"]
    assert files["late.jsonl"] == (2, 1, 1, [D10, D12])
    assert posts == [uri("backdated")] and stats.lines == 1  # a.jsonl's posts left with it


def test_indexing_is_idempotent_and_a_day_reloads_the_same_rows_in_any_order(tmp_path, warehouse):
    archive = tmp_path / "archive"
    write_archive(archive / "x.jsonl", [post_event("p1"), "{bad", post_event("p2", created_at="2024-03-11T01:00:00Z")])
    write_archive(
        archive / "y.jsonl", [post_event("p3", created_at="2024-03-10T05:00:00Z", seen_at="2024-03-11T05:00Z")]
    )
    index = ArchiveIndex(warehouse, archive, first_day=FIRST_DAY)
    snapshots = []
    for order in ([D11, D10], [D10, D11], [D10, D11]):
        index.update()
        for day in order:
            with warehouse.connect() as con:
                replace_day(con, day, "archive", index.stage_day(con, day))
        snapshots.append(tables(warehouse))
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert {(r[0], r[-1]) for r in snapshots[0]["raw_posts"]} == {(uri("p1"), D10), (uri("p3"), D10), (uri("p2"), D11)}
    assert len(snapshots[0]["rejected_records"]) == 1


def test_a_crashed_pass_leaves_no_half_spool(tmp_path, warehouse):
    """A spool folder without a row (what a crash mid-file leaves) is removed, and the file is indexed again."""
    archive = tmp_path / "archive"
    write_archive(archive / "x.jsonl", [post_event("p1")])
    index = ArchiveIndex(warehouse, archive, first_day=FIRST_DAY)
    index.update()
    with warehouse.connect() as con:
        con.execute("DELETE FROM archive_files")
    stray = index.root / "0123456789abcdef0123"
    (stray / "posts").mkdir(parents=True)
    report = index.update()
    assert report.indexed == ["x.jsonl"] and not stray.exists()
    with warehouse.connect() as con:
        assert replace_day(con, D10, "archive", index.stage_day(con, D10)).posts == 1


def test_route_fingerprint_and_change_detection_are_pure():
    assert route(Outcome("post", day=D10)) == "2024-03-10"
    assert route(Outcome("reject", reason="invalid_json")) == UNDATED
    assert fingerprint(1, 2, "abc", "v1", D10) != fingerprint(1, 2, "abc", "v2", D10)
    assert fingerprint(1, 2, "abc", "v1", D10) != fingerprint(1, 2, "abc", "v1", D11)
    assert changed_files({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "x", "d": "4"}) == (["b", "c"], ["d"])
    assert file_key(Path(os.fsdecode(b"odd-\xff.jsonl"))) != file_key(Path("odd-\\xff.jsonl"))
    assert len(file_key(Path("a/b.jsonl"))) == 20


def test_content_digest_reads_head_and_tail_and_never_opens_what_is_not_a_file(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"a" * 300_000)
    _, _, whole = content_digest(big)
    big.write_bytes(b"a" * 299_999 + b"b")  # the tail changed
    assert content_digest(big)[2] != whole
    big.write_bytes(b"a" * 150_000 + b"b" + b"a" * 149_999)  # the middle only: not seen by design
    assert content_digest(big)[2] == whole
    os.mkfifo(tmp_path / "fifo.jsonl")
    assert content_digest(tmp_path / "fifo.jsonl")[2].startswith("not_regular:")
    (tmp_path / "loop.jsonl").symlink_to("loop.jsonl")
    assert content_digest(tmp_path / "loop.jsonl")[2].startswith("unreadable:")


@pytest.mark.integration
def test_archive_files_asset_reports_changed_days_and_the_sensor_reruns_them(tmp_path):
    from dagster import AssetKey, DagsterInstance, DefaultSensorStatus, build_sensor_context

    from bsky_warehouse.assets.ingest import archive_followup_sensor
    from bsky_warehouse.definitions import build_definitions
    from bsky_warehouse.partitions import RANGE_END_TAG, RANGE_START_TAG, DayWindow, window_from_tags
    from bsky_warehouse.pipeline import run_window
    from bsky_warehouse.resources.bluesky import ArchiveSource

    assert archive_followup_sensor.default_status == DefaultSensorStatus.STOPPED
    archive = tmp_path / "archive"
    write_archive(archive / "a.jsonl", [post_event("a1"), post_event("b1", created_at="2024-03-11T10:00:00Z")])
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    ingest = ["archive_files", "raw_posts", "post_deletions", "rejected_records"]
    assert run_window(DayWindow(D10, D12), instance, db_path=db, archive_dir=str(archive), assets=ingest)["success"]

    def latest_metadata() -> dict:
        event = instance.get_latest_materialization_event(AssetKey("archive_files"))
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    assert latest_metadata()["days_touched"] == ["2024-03-10", "2024-03-11"]
    write_archive(archive / "late.jsonl", [
        post_event("late", created_at="2024-03-11T23:00:00Z", seen_at="2024-03-12T02:00:00Z"),
    ])  # fmt: skip
    assert run_window(DayWindow(D10, D11), instance, db_path=db, archive_dir=str(archive),
                      assets=["archive_files"])["success"]  # fmt: skip
    meta = latest_metadata()
    assert (meta["files_indexed"], meta["files_unchanged"], meta["days_touched"]) == (1, 1, ["2024-03-11"])

    defs = build_definitions(warehouse=WarehouseResource(path=db), archive=ArchiveSource(directory=str(archive)))
    sensor = defs.resolve_sensor_def("archive_followup_sensor")
    requests = list(sensor(build_sensor_context(instance=instance, definitions=defs)))
    assert sensor.job_name == "warehouse_daily"
    assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in requests] == [("2024-03-11", "2024-03-11")]
    for request in requests:
        run_window(window_from_tags(request.tags), instance, db_path=db, archive_dir=str(archive), assets=ingest)
    with WarehouseResource(path=db).connect() as con:
        posts = dict(con.execute("SELECT uri, partition_date FROM raw_posts").fetchall())
    assert posts == {uri("a1"): D10, uri("b1"): D11, uri("late"): D11}


@pytest.mark.integration
def test_jetstream_replays_go_through_the_index_and_the_spool_is_pruned(tmp_path):
    """A replayed day is indexed like archive files and its JSONL deleted; replaying it again replaces it."""
    from datetime import UTC, datetime

    from dagster import DagsterInstance

    from bsky_warehouse.partitions import DayWindow
    from bsky_warehouse.pipeline import run_window
    from bsky_warehouse.resources.jetstream import JetstreamSource
    from tests.servers.jetstream_server import JetstreamServer

    day = date(2024, 3, 16)
    lines = [line for path in sorted(SAMPLE_DIR.glob("*.jsonl")) for line in path.read_bytes().splitlines()]
    db = tmp_path / "wh.duckdb"
    warehouse = WarehouseResource(path=str(db))
    snapshots = []
    for _ in range(2):
        with JetstreamServer(lines) as server:
            jetstream = JetstreamSource(host=server.host, secure=False, retention_hours=24 * 365 * 10)
            config = {"ops": {"archive_ingest": {"config": {"source": "jetstream"}}}}
            result = run_window(DayWindow.for_day(day), DagsterInstance.ephemeral(), db_path=str(db),
                                assets=["raw_posts", "post_deletions", "rejected_records"],
                                resources={"jetstream": jetstream}, run_config=config)  # fmt: skip
        assert result["success"]
        assert not list((warehouse.staging_dir / "jetstream").rglob("*.jsonl"))  # pruned once indexed
        with warehouse.connect() as con:
            snapshots.append(
                (
                    tables(warehouse),
                    con.execute(
                        "SELECT count(*), bool_and(pruned), sum(lines) FROM archive_files WHERE source = 'jetstream'"
                    ).fetchall()[0],
                )
            )
    assert snapshots[0] == snapshots[1]
    (table_rows, (files, pruned, indexed_lines)) = snapshots[0]
    assert table_rows["raw_posts"] and files >= 1 and pruned and indexed_lines > 0
    assert datetime.now(UTC).date() > day


def test_two_processes_indexing_at_once_index_each_file_once(tmp_path, warehouse):
    """Two runs starting together: the warehouse lock serializes the passes; the second finds nothing to do."""
    import subprocess
    import sys

    archive = tmp_path / "archive"
    for n in range(4):
        write_archive(archive / f"f{n}.jsonl", [post_event(f"p{n}-{i}") for i in range(200)])
    script = (
        "import sys, json; from pathlib import Path; from datetime import date;"
        "from bsky_warehouse.archive_index import ArchiveIndex;"
        "from bsky_warehouse.resources.warehouse import WarehouseResource;"
        "r = ArchiveIndex(WarehouseResource(path=sys.argv[1]), Path(sys.argv[2]), first_day=date(2024, 3, 8)).update();"
        "print(json.dumps(r.indexed))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, warehouse.path, str(archive)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = sorted((json.loads(proc.communicate(timeout=600)[0]) for proc in procs), key=len)
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs == [[], ["f0.jsonl", "f1.jsonl", "f2.jsonl", "f3.jsonl"]]
    index = ArchiveIndex(warehouse, archive, first_day=FIRST_DAY)
    with warehouse.connect() as con:
        assert con.execute("SELECT count(*), count(DISTINCT file) FROM archive_files").fetchall() == [(4, 4)]
        assert replace_day(con, D10, "archive", index.stage_day(con, D10)).posts == 800
