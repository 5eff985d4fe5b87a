"""The Jetstream collector against a local websocket server: exactly-once days across dropped connections."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import zstandard

from bsky_warehouse.events import parse_event
from bsky_warehouse.resources.bluesky import read_outcomes
from bsky_warehouse.resources.jetstream import (
    JetstreamError,
    JetstreamRetentionError,
    collect,
    collect_day,
    day_bounds_us,
    line_time_us,
    subscribe_url,
)
from tests.factories import post_event
from tests.servers.jetstream_server import JetstreamServer

DAY = date(2024, 3, 10)
NOW = datetime(2024, 3, 11, 6, 0, tzinfo=UTC)
FAST = {"secure": False, "now": NOW, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "idle_timeout_s": 5}


def event_at(moment: datetime, n: int) -> bytes:
    created = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    event = post_event(f"3k{n:08d}", text=f"post number {n} " + "lorem ipsum " * (n % 7), created_at=created)
    event["time_us"] = int(moment.timestamp() * 1_000_000) + n % 1000
    return json.dumps(event).encode()


def stream(start: datetime, count: int, step: timedelta) -> list[bytes]:
    return [event_at(start + i * step, i) for i in range(count)]


def day_stream() -> tuple[list[bytes], list[bytes]]:
    """A recording that starts before the day and runs past it, with odd lines inside; and the day's part."""
    start = datetime(2024, 3, 9, 23, 0, tzinfo=UTC)
    lines = stream(start, 650, timedelta(minutes=2, seconds=30))
    lo, hi = day_bounds_us(DAY)
    inside = [i for i, line in enumerate(lines) if lo <= line_time_us(line) < hi]
    truncated_at = str(line_time_us(lines[inside[100]]) - 5).encode()
    lines.insert(inside[100], b'{"did": "did:plc:broken", "time_us": ' + truncated_at + b', "kind": "com')
    lines.insert(inside[200], b"not json at all, and no time")
    identity = {"did": "did:plc:x", "time_us": line_time_us(lines[inside[300]]) - 3, "kind": "identity"}
    lines.insert(inside[300], json.dumps({**identity, "identity": {"did": "did:plc:x", "seq": 1}}).encode())
    expected = []
    for line in lines:
        time_us = line_time_us(line)
        if (time_us is None and expected) or (time_us is not None and lo <= time_us < hi):
            expected.append(line)
    return lines, expected


def written(out: Path) -> list[bytes]:
    files = sorted(out.rglob("jetstream-*.jsonl"), key=lambda p: (p.parent.name, int(p.stem.split("-")[1])))
    return [line for path in files for line in path.read_bytes().splitlines()]


def test_subscribe_url() -> None:
    assert subscribe_url("jetstream2.us-east.bsky.network", 1710028800000000) == (
        "wss://jetstream2.us-east.bsky.network/subscribe?wantedCollections=app.bsky.feed.post&cursor=1710028800000000"
    )
    assert subscribe_url("127.0.0.1:9", 5, compress=True, secure=False) == (
        "ws://127.0.0.1:9/subscribe?wantedCollections=app.bsky.feed.post&cursor=5&compress=true"
    )


def test_day_with_dropped_connections_is_written_exactly_once(tmp_path: Path) -> None:
    lines, expected = day_stream()
    assert len(expected) > 500
    with JetstreamServer(lines, drop_after=150, drops=3) as server:
        stats = collect_day(server.host, DAY, tmp_path, chunk_events=100, **FAST)
    got = written(tmp_path)
    assert got == expected
    assert len(set(got)) == len(got)
    assert stats.events_written == len(expected)
    assert stats.reconnects == 3 and server.connections == 4
    lo, hi = day_bounds_us(DAY)
    assert server.cursors[0] == lo
    assert all(lo < c < hi for c in server.cursors[1:])
    assert stats.skipped_replayed >= 3
    assert stats.first_time_us == line_time_us(expected[0]) and stats.last_time_us < hi
    assert [p.parent.name for p in stats.files] == [DAY.isoformat()] * len(stats.files)
    assert len(stats.files) == -(-len(expected) // 100)
    for path in stats.files:
        dated = [t for t in map(line_time_us, path.read_bytes().splitlines()) if t is not None]
        assert lo <= int(path.stem.removeprefix("jetstream-")) <= dated[0]
        assert len(path.read_bytes().splitlines()) <= 100
    assert not list(tmp_path.rglob("*.part"))
    outcomes = [o for _, _, _, o in read_outcomes(tmp_path, DAY)]
    assert sum(o.kind == "post" for o in outcomes) == len(expected) - 3
    assert sorted(o.reason for o in outcomes if o.kind != "post") == ["identity_event", "invalid_json", "invalid_json"]


def test_drop_right_after_an_undated_line_neither_loses_nor_repeats_it(tmp_path: Path) -> None:
    base = datetime(2024, 3, 10, 1, 0, tzinfo=UTC)
    a, b, c, d = (event_at(base + timedelta(minutes=i), i) for i in range(4))
    end = event_at(datetime(2024, 3, 11, 0, 0, 1, tzinfo=UTC), 9)
    lines = [a, b, b"garbage one", c, b"garbage two", d, end]
    with JetstreamServer(lines, drop_after=3, drops=2) as server:
        stats = collect_day(server.host, DAY, tmp_path, **FAST)
    assert written(tmp_path) == lines[:-1]
    assert server.cursors[1:] == [line_time_us(b), line_time_us(c)]
    assert stats.reconnects == 2


def test_stops_at_day_end_while_the_stream_stays_open(tmp_path: Path) -> None:
    lines = stream(datetime(2024, 3, 10, 22, 0, tzinfo=UTC), 40, timedelta(minutes=5))
    with JetstreamServer(lines) as server:
        started = datetime.now(UTC)
        stats = collect_day(server.host, DAY, tmp_path, chunk_events=7, **FAST)
    assert (datetime.now(UTC) - started).total_seconds() < 4
    _, hi = day_bounds_us(DAY)
    assert written(tmp_path) == [line for line in lines if line_time_us(line) < hi]
    assert stats.events_written == 24 and len(stats.files) == 4 and stats.reconnects == 0


def test_refuses_a_day_outside_retention_and_points_to_the_archive(tmp_path: Path) -> None:
    with pytest.raises(JetstreamRetentionError, match=r"materialize --archive DIR"):
        collect_day("127.0.0.1:9", DAY - timedelta(days=2), tmp_path, **FAST)
    with pytest.raises(JetstreamRetentionError, match="retention"):
        collect("127.0.0.1:9", 48, tmp_path, **FAST)
    assert not any(tmp_path.iterdir())


def test_an_already_collected_day_is_replaced_only_on_request(tmp_path: Path) -> None:
    lines = stream(datetime(2024, 3, 10, 23, 0, tzinfo=UTC), 30, timedelta(minutes=3))
    with JetstreamServer(lines) as server:
        collect_day(server.host, DAY, tmp_path, chunk_events=5, **FAST)
        first = written(tmp_path)
        with pytest.raises(FileExistsError):
            collect_day(server.host, DAY, tmp_path, **FAST)
        collect_day(server.host, DAY, tmp_path, overwrite=True, **FAST)
    assert written(tmp_path) == first
    assert len(list((tmp_path / DAY.isoformat()).iterdir())) == 1


def test_compressed_frames_with_a_dictionary_round_trip(tmp_path: Path) -> None:
    lines, expected = day_stream()
    samples = stream(datetime(2024, 1, 1, tzinfo=UTC), 800, timedelta(seconds=7))
    dictionary = zstandard.train_dictionary(16384, samples)
    dict_path = tmp_path / "zstd_dictionary"
    dict_path.write_bytes(dictionary.as_bytes())
    out = tmp_path / "out"
    with JetstreamServer(lines, drop_after=200, zstd_dict=dictionary) as server:
        stats = collect_day(server.host, DAY, out, compress=True, zstd_dictionary=dict_path, **FAST)
        assert all(q.get("compress") == ["true"] for q in server.queries)
        with pytest.raises(JetstreamError, match="dictionary"):
            collect_day(server.host, DAY, tmp_path / "nodict", compress=True, overwrite=True, **FAST)
    assert written(out) == expected and stats.reconnects == 1


def test_gives_up_after_bounded_reconnects_without_progress(tmp_path: Path) -> None:
    lines = stream(datetime(2024, 3, 10, 1, 0, tzinfo=UTC), 5, timedelta(minutes=1))
    with (
        JetstreamServer(lines, drop_after=0, drops=100) as server,
        pytest.raises(JetstreamError, match="3 times in a row") as raised,
    ):
        collect_day(server.host, DAY, tmp_path, max_reconnects=2, **FAST)
    assert server.connections == 3 and raised.value.stats is not None
    assert not list(tmp_path.rglob("*.jsonl"))


def test_a_stalled_stream_counts_as_a_failure(tmp_path: Path) -> None:
    lines = stream(datetime(2024, 3, 10, 1, 0, tzinfo=UTC), 3, timedelta(minutes=1))
    with JetstreamServer(lines) as server:
        options = {**FAST, "idle_timeout_s": 0.3}
        with pytest.raises(JetstreamError) as raised:
            collect_day(server.host, DAY, tmp_path, max_reconnects=1, **options)
    assert raised.value.stats.events_written == 3 and server.connections == 3
    assert len(list(tmp_path.rglob("*.jsonl.part"))) == 1 and not list(tmp_path.rglob("*.jsonl"))


def test_live_window_across_midnight_catches_up_to_the_run_start(tmp_path: Path) -> None:
    now = datetime(2024, 3, 11, 0, 30, tzinfo=UTC)
    lines = stream(datetime(2024, 3, 10, 23, 0, tzinfo=UTC), 120, timedelta(minutes=1))
    with JetstreamServer(lines, drop_after=40) as server:
        stats = collect(server.host, 1, tmp_path, **{**FAST, "now": now})
    lo, hi = int((now - timedelta(hours=1)).timestamp() * 1e6), int(now.timestamp() * 1e6)
    assert written(tmp_path) == [line for line in lines if lo <= line_time_us(line) < hi]
    assert sorted(p.parent.name for p in stats.files) == ["2024-03-10", "2024-03-11"]
    assert server.cursors[0] == lo
    assert all(parse_event(line).kind == "post" for line in written(tmp_path))
