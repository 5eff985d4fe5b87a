"""A hostile archive, line by line and file by file: every line and every file ends up with exactly one outcome,
nothing crashes, the good lines load, and `bsky-warehouse materialize` exits 0 on it."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import duckdb
import pytest
import zstandard

from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.resources.bluesky import (
    MAX_LINE_BYTES,
    file_outcomes,
    line_outcome,
    read_outcomes,
    split_lines,
    split_runs,
)
from tests.factories import delete_event, post_event, time_us, uri

FIRST_DAY = date(2024, 3, 8)  # the default first partition
DAYS = [FIRST_DAY, date(2024, 3, 9), date(2024, 3, 10), date(2024, 3, 11)]
SEEN = "2024-03-10T12:00:00Z"
SEEN_US = time_us(SEEN)
LATER = "2024-03-10T13:00:00Z"

Expected = tuple[str, str | None]  # (kind, reason)


def encoded(event: dict) -> bytes:
    return json.dumps(event).encode()


def with_record(rkey: str, **fields) -> dict:
    event = post_event(rkey)
    event["commit"]["record"].update(fields)
    return event


def with_event(rkey: str, **fields) -> dict:
    event = post_event(rkey)
    event.update(fields)
    return event


def with_commit(rkey: str, **fields) -> dict:
    event = post_event(rkey)
    event["commit"].update(fields)
    return event


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def splice(event: dict, placeholder: str, raw: bytes) -> bytes:
    """The event with the JSON string `"placeholder"` replaced by raw bytes (escapes json.dumps would not write)."""
    return encoded(event).replace(json.dumps(placeholder).encode(), raw)


def hostile_corpus() -> list[tuple[str, bytes, Expected]]:
    """(what it is, the line without its newline, its expected outcome). Good lines first, for a BOM at the top."""
    post: Expected = ("post", None)
    good = [
        ("good post, after a UTF-8 BOM", b"\xef\xbb\xbf" + encoded(post_event("bom")), post),
        ("good post", encoded(post_event("g1", text="plain good post")), post),
        ("good post on the 11th", encoded(post_event("g2", created_at="2024-03-11T08:00:00Z")), post),
        ("good post, emoji as a surrogate pair escape",
         splice(post_event("g3", text="PH"), "PH", b'"smile \\ud83d\\ude00"'), post),
        ("duplicate keys: the last wins", encoded(post_event("dup"))[:-1] + b', "did": "did:plc:author2"}', post),
        ("huge int where nothing reads it", encoded(with_record("g4", extra=10**40)), post),
        ("an update of g1", encoded(post_event("g1", text="edited", operation="update", seen_at=LATER)), post),
        ("the same event twice", encoded(post_event("g1", text="edited", operation="update", seen_at=LATER)), post),
        ("escaped NUL inside facets is kept as JSON", encoded(with_record("g5", facets=[{"x": "\x00"}])), post),
        ("delete of g2", encoded(delete_event("g2", seen_at="2024-03-11T20:00:00Z")), ("delete", None)),
        ("delete seen before the first partition", encoded(delete_event("old", seen_at="2024-03-01T00:00:00Z")),
         ("delete", None)),
        ("identity event", encoded({"did": "did:plc:x", "time_us": SEEN_US, "kind": "identity", "identity": {}}),
         ("ignore", "identity_event")),
        ("account event with an absurd time",
         encoded({"did": "did:plc:x", "time_us": 10**18, "kind": "account", "account": {}}),
         ("ignore", "account_event")),
        ("like", encoded(with_commit("l1", collection="app.bsky.feed.like")), ("ignore", "other_collection")),
        ("empty line", b"", ("ignore", "blank_line")),
        ("whitespace line", b" \t ", ("ignore", "blank_line")),
    ]  # fmt: skip
    reject = [
        ("createdAt past year 1 by its offset", encoded(post_event("y1", created_at="0001-01-01T00:00:00+01:00",
                                                                   seen_at=SEEN)), "created_at_out_of_range"),
        ("createdAt past 9999 by its offset", encoded(post_event("y9", created_at="9999-12-31T23:59:59-01:00",
                                                                 seen_at=SEEN)), "created_at_out_of_range"),
        ("createdAt far in the future", encoded(with_record("fut", createdAt="2999-01-01T00:00:00Z")),
         "created_at_out_of_range"),
        ("createdAt not a time", encoded(with_record("badt", createdAt="2024-02-30T25:61:00Z")), "invalid_created_at"),
        ("createdAt a number", encoded(with_record("numt", createdAt=1710072000)), "wrong_type:record.createdAt"),
        ("createdAt before the first partition", encoded(post_event("early", created_at="2024-03-01T00:00:00Z",
                                                                    seen_at=SEEN)), "before_first_partition"),
        ("time_us 10^18 on a create", encoded(with_event("t18", time_us=10**18)), "time_us_out_of_range"),
        ("time_us 10^18 on a delete", encoded({**delete_event("t18d", SEEN), "time_us": 10**18}),
         "time_us_out_of_range"),
        ("time_us 0", encoded(with_event("t0", time_us=0)), "time_us_not_positive"),
        ("time_us negative", encoded(with_event("tneg", time_us=-5)), "time_us_not_positive"),
        ("time_us in milliseconds", encoded(with_event("tms", time_us=SEEN_US // 1000)), "time_us_out_of_range"),
        ("time_us over 64 bits", encoded(with_event("t64", time_us=10**30)), "wrong_type:time_us"),
        ("time_us a float", encoded(with_event("tf", time_us=1.7e15)), "wrong_type:time_us"),
        ("time_us a bool", encoded(with_event("tb", time_us=True)), "wrong_type:time_us"),
        ("time_us a string", encoded(with_event("ts", time_us=str(SEEN_US))), "wrong_type:time_us"),
        ("JSON nested 10,000 levels", nested(10_000).encode(), "json_too_deep"),
        ("a field nested 10,000 levels", splice(with_record("deep", extra="PH"), "PH", nested(10_000).encode()),
         "json_too_deep"),
        ("facets nested 1,000 levels", splice(with_record("f1k", facets="PH"), "PH", nested(1_000).encode()),
         "too_deep:record.facets"),
        ("labels nested 100 levels", splice(with_record("l100", labels="PH"), "PH",
                                            b'{"a":' * 100 + b"1" + b"}" * 100), "too_deep:record.labels"),
        ("lone surrogate in text", splice(post_event("s1", text="PH"), "PH", b'"\\udc80"'),
         "invalid_unicode:record.text"),
        ("lone surrogate in the did", splice(with_event("s2", did="PH"), "PH", b'"did:plc:\\ud800"'),
         "invalid_unicode:did"),
        ("lone surrogate in the rkey", splice(post_event("PH"), "PH", b'"r\\udfff"'), "invalid_unicode:commit.rkey"),
        ("lone surrogate in the cid", splice(with_commit("s4", cid="PH"), "PH", b'"\\udc80"'),
         "invalid_unicode:commit.cid"),
        ("lone surrogate in facets", splice(with_record("s5", facets=["PH"]), "PH", b'"\\udc80"'),
         "invalid_unicode:record.facets"),
        ("lone surrogate in langs", splice(with_record("s6", langs=["PH"]), "PH", b'"\\udc80"'),
         "invalid_unicode:record.langs"),
        ("lone surrogate in embed $type", splice(with_record("s7", embed={"$type": "PH"}), "PH", b'"\\udc80"'),
         "invalid_unicode:record.embed.$type"),
        ("invalid UTF-8 in text", encoded(post_event("u1", text="PH")).replace(b"PH", b"\xc3\x28"), "invalid_utf8"),
        ("overlong UTF-8", encoded(post_event("u2", text="PH")).replace(b"PH", b"\xc0\xaf"), "invalid_utf8"),
        ("UTF-8 encoded surrogate", encoded(post_event("u3", text="PH")).replace(b"PH", b"\xed\xa0\x80"),
         "invalid_utf8"),
        ("raw NUL byte inside a string", encoded(post_event("n1", text="PH")).replace(b"PH", b"a\x00b"),
         "invalid_json"),
        ("NUL bytes only", b"\x00\x00\x00", "invalid_json"),
        ("escaped NUL in text", encoded(post_event("n2", text="a\x00b")), "nul_character:record.text"),
        ("escaped NUL in the did", encoded(with_event("n3", did="did:plc:a\x00b")), "nul_character:did"),
        ("NaN", splice(with_record("nan", extra="PH"), "PH", b"NaN"), "invalid_json"),
        ("Infinity", splice(with_record("inf", extra="PH"), "PH", b"-Infinity"), "invalid_json"),
        ("a number that overflows a double", splice(with_record("big", extra="PH"), "PH", b"1e400"), "invalid_json"),
        ("the event an array", b"[1, 2, 3]", "not_an_object"),
        ("the event a string", b'"commit"', "not_an_object"),
        ("the event a number", b"1710072000000000", "not_an_object"),
        ("the event null", b"null", "not_an_object"),
        ("commit an array", encoded(with_event("c1", commit=[1])), "wrong_type:commit"),
        ("record an array", encoded(with_commit("c2", record=[])), "wrong_type:commit.record"),
        ("reply an array", encoded(with_record("c3", reply=[])), "wrong_type:record.reply"),
        ("reply parent a string", encoded(with_record("c4", reply={"parent": "at://x"})),
         "wrong_type:record.reply.parent"),
        ("embed an array", encoded(with_record("c5", embed=[])), "wrong_type:record.embed"),
        ("embed $type an object", encoded(with_record("c6", embed={"$type": {"a": 1}})),
         "wrong_type:record.embed.$type"),
        ("facets an object", encoded(with_record("c7", facets={})), "wrong_type:record.facets"),
        ("labels an array", encoded(with_record("c8", labels=[])), "wrong_type:record.labels"),
        ("text an object", encoded(with_record("c9", text={"t": "x"})), "wrong_type:record.text"),
        ("langs numbers", encoded(with_record("c10", langs=[1])), "wrong_type:record.langs"),
        ("did a number", encoded(with_event("c11", did=5)), "wrong_type:did"),
        ("text too long", encoded(post_event("long", text="x" * 3001)), "text_too_long"),
        ("did with a space", encoded(with_event("d1", did="did:plc:has space")), "invalid_did"),
        ("did with an upper-case method", encoded(with_event("d2", did="did:PLC:abc")), "invalid_did"),
        ("did ending in a colon", encoded(with_event("d3", did="did:plc:abc:")), "invalid_did"),
        ("did of 2,049 characters", encoded(with_event("d4", did="did:plc:" + "a" * 2041)), "invalid_did"),
        ("not a did", encoded(with_event("d5", did="plc:abc")), "invalid_did"),
        ("rkey with quotes", encoded(post_event('has"quote')), "invalid_rkey"),
        ("rkey with a slash", encoded(post_event("a/b")), "invalid_rkey"),
        ("rkey .", encoded(post_event(".")), "invalid_rkey"),
        ("rkey ..", encoded(post_event("..")), "invalid_rkey"),
        ("rkey of 513 characters", encoded(post_event("k" * 513)), "invalid_rkey"),
        ("rkey empty", encoded(post_event("")), "invalid_rkey"),
        ("rkey invalid on a delete", encoded(delete_event("x y", SEEN)), "invalid_rkey"),
        ("unknown operation", encoded(with_commit("op", operation="frobnicate")), "unknown_operation"),
        ("unknown kind", encoded(with_event("k1", kind="mystery")), "unknown_event_kind"),
        ("truncated JSON", b'{"did": "did:plc:x", "kind": "commit", "commit": {', "invalid_json"),
        ("not JSON", b"not json at all", "invalid_json"),
        ("an extremely long line", b'{"x": "' + b"y" * (MAX_LINE_BYTES + 10) + b'"}', "line_too_long"),
    ]  # fmt: skip
    return (
        good
        + [(what, raw, ("reject", reason)) for what, raw, reason in reject]
        + [("good post, the last line, with no newline", encoded(post_event("last")), post)]
    )


def write_corpus(path: Path, corpus: list[tuple[str, bytes, Expected]]) -> None:
    """One line per entry; every third line ends in CRLF, the last has no newline at all."""
    endings = [b"\r\n" if i % 3 == 2 else b"\n" for i in range(len(corpus) - 1)] + [b""]
    path.write_bytes(b"".join(raw + end for (_, raw, _), end in zip(corpus, endings, strict=True)))


def outcomes_by_line(archive: Path) -> dict[tuple[str, int], list[tuple[date | None, str, str | None]]]:
    """Every (file, line) any day's read yields, with the (day, kind, reason) of each time it was yielded."""
    seen: dict[tuple[str, int], list[tuple[date | None, str, str | None]]] = {}
    for day in DAYS:
        for file, line_no, _, outcome in read_outcomes(archive, day, FIRST_DAY):
            seen.setdefault((file, line_no), []).append((outcome.day, outcome.kind, outcome.reason))
    return seen


def test_every_hostile_line_has_its_expected_outcome_once(tmp_path):
    corpus = hostile_corpus()
    archive = tmp_path / "archive"
    archive.mkdir()
    write_corpus(archive / "hostile.jsonl", corpus)

    seen = outcomes_by_line(archive)
    assert sorted(seen) == [("hostile.jsonl", n) for n in range(1, len(corpus) + 1)]
    for (_, line_no), yielded in seen.items():
        what, _, expected = corpus[line_no - 1]
        days = {day for day, _, _ in yielded}
        # A dated line is read by exactly one day's run; an undated one by every day's run, the same each time.
        assert len(yielded) == (len(DAYS) if days == {None} else 1), what
        assert {(kind, reason) for _, kind, reason in yielded} == {expected}, what
        assert days <= {None, *DAYS}, what


def test_hostile_archive_loads_and_every_line_is_counted(tmp_path, warehouse):
    corpus = hostile_corpus()
    archive = tmp_path / "archive"
    archive.mkdir()
    write_corpus(archive / "hostile.jsonl", corpus)
    expected = Counter(kind for _, _, (kind, _) in corpus)

    dated, undated_seen, duplicates, ignored_dated = 0, set(), 0, 0
    with warehouse.connect() as con:
        for day in DAYS:
            stats = replace_day(con, day, "archive", stage_lines(con, read_outcomes(archive, day, FIRST_DAY)))
            dated += stats.lines
            undated_seen.add(stats.undated)
            duplicates += stats.duplicate_events
            ignored_dated += stats.by_kind["ignore"]
        assert len(undated_seen) == 1  # every day's run sees the same undated lines
        assert dated + undated_seen.pop() == len(corpus)

        posts = con.execute("SELECT count(*), count(DISTINCT uri) FROM raw_posts").fetchall()[0]
        deletes = con.execute("SELECT count(*) FROM post_deletions").fetchall()[0][0]
        rejects = con.execute("SELECT reason, count(*) FROM rejected_records GROUP BY 1").fetchall()
        early = con.execute(
            "SELECT partition_date, file, line_no FROM rejected_records WHERE reason = 'before_first_partition'"
        ).fetchall()
        texts = dict(con.execute("SELECT uri, text FROM raw_posts").fetchall())
    # Ignored lines are stored nowhere: the undated ones are counted once, from the outcomes of any day's read.
    undated_ignores = sum(1 for v in outcomes_by_line(archive).values() if v[0][:2] == (None, "ignore"))
    assert posts[0] == posts[1]
    # raw posts + collapsed duplicates + deletes + rejected rows + ignored lines = every line of the file.
    accounted = posts[0] + duplicates + deletes + sum(n for _, n in rejects) + ignored_dated + undated_ignores
    assert accounted == len(corpus)
    assert posts[0] + duplicates == expected["post"]
    assert deletes == expected["delete"]
    assert Counter(dict(rejects)) == Counter(reason for _, _, (kind, reason) in corpus if kind == "reject")
    assert texts[uri("g1")] == "edited" and texts[uri("g3")] == "smile \U0001f600"
    assert uri("dup", did="did:plc:author2") in texts and uri("dup") not in texts
    line_of_early = next(i for i, (what, _, _) in enumerate(corpus, 1) if what.startswith("createdAt before"))
    assert early == [(date(2024, 3, 10), "hostile.jsonl", line_of_early)]  # owned by the day it was seen


def good_lines(n: int, prefix: str) -> bytes:
    return b"".join(encoded(post_event(f"{prefix}{i}", created_at="2024-03-11T10:00:00Z")) + b"\n" for i in range(n))


def zstd_frames(data: bytes) -> bytes:
    """Two checksummed frames, as the zstd CLI writes them."""
    compressor = zstandard.ZstdCompressor(write_checksum=True)
    half = data.index(b"\n", len(data) // 2) + 1
    return compressor.compress(data[:half]) + compressor.compress(data[half:])


def flip_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


DATA = good_lines(3000, "c")  # about 1 MiB: several read chunks and zstd blocks


@pytest.mark.parametrize(
    ("name", "content", "reason", "whole"),
    [
        ("whole.jsonl.gz", gzip.compress(DATA), None, True),
        ("whole.jsonl.zst", zstd_frames(DATA), None, True),
        ("truncated.jsonl.gz", gzip.compress(DATA)[: len(gzip.compress(DATA)) // 2], "truncated_file", False),
        ("truncated.jsonl.zst", zstd_frames(DATA)[: len(zstd_frames(DATA)) // 2], "truncated_file", False),
        ("tail-cut.jsonl.zst", zstd_frames(DATA)[:-3], "truncated_file", None),
        ("bad-crc.jsonl.gz", flip_byte(gzip.compress(DATA), -6), "corrupt_file", True),
        ("bad-checksum.jsonl.zst", flip_byte(zstd_frames(DATA), len(zstd_frames(DATA)) - 2), "corrupt_file", None),
        ("garbage-after.jsonl.gz", gzip.compress(DATA) + b"garbage!", "corrupt_file", True),
        ("garbage-after.jsonl.zst", zstd_frames(DATA) + b"garbage!", "corrupt_file", True),
        ("not-gzip.jsonl.gz", DATA, "corrupt_file", False),
        ("not-zstd.jsonl.zst", DATA, "corrupt_file", False),
        ("empty.jsonl.gz", b"", None, None),
    ],
)
def test_compressed_file_keeps_lines_before_its_fault_and_records_where_it_broke(
    tmp_path, name, content, reason, whole
):
    """`whole`: every line comes out before the fault (True), only some (False), either (None)."""
    path = tmp_path / name
    path.write_bytes(content)
    read = list(file_outcomes(path))
    lines = DATA.split(b"\n")[:-1]
    good = [(n, raw) for n, raw, o in read if o.kind == "post"]
    faults = [(n, raw, o) for n, raw, o in read if o.kind == "reject"]
    # Every line read before the fault is a good line, in order; nothing else comes out of a damaged file.
    assert [raw for _, raw in good] == lines[: len(good)]
    assert [n for n, _ in good] == list(range(1, len(good) + 1))
    if whole is not None:
        assert (len(good) == len(lines)) is whole
    if reason is None:
        assert not faults
        return
    assert len(faults) == 1
    line_no, detail, outcome = faults[0]
    assert (line_no, outcome.reason, outcome.day) == (len(good) + 1, reason, None)
    assert detail  # what went wrong, in words


def test_unreadable_paths_are_file_level_rejects(tmp_path):
    archive = tmp_path / "archive"
    (archive / "dir.jsonl").mkdir(parents=True)
    (archive / "dir.jsonl" / "inside.jsonl").write_bytes(encoded(post_event("in")) + b"\n")
    (archive / "loop.jsonl").symlink_to("loop.jsonl")
    (archive / "dangling.jsonl").symlink_to("missing.jsonl")
    os.mkfifo(archive / "fifo.jsonl")  # opening it would block: it must never be opened
    expected = {
        "dir.jsonl": "not_a_regular_file",
        "fifo.jsonl": "not_a_regular_file",
        "loop.jsonl": "unreadable_file",
        "dangling.jsonl": "unreadable_file",
    }
    if Path("/proc/self/mem").exists():  # a regular file whose read fails (EIO at offset 0), even for root
        (archive / "io-error.jsonl").symlink_to("/proc/self/mem")
        expected["io-error.jsonl"] = "unreadable_file"
    rows = [(f, n, o.kind, o.reason) for f, n, _, o in read_outcomes(archive, date(2024, 3, 10), FIRST_DAY)]
    assert sorted(rows) == sorted(
        [(name, 1, "reject", reason) for name, reason in expected.items()]
        + [("dir.jsonl/inside.jsonl", 1, "post", None)]
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file; the EIO case covers a failing read")
def test_file_without_read_permission_is_a_file_level_reject(tmp_path):
    path = tmp_path / "secret.jsonl"
    path.write_bytes(encoded(post_event("p")) + b"\n")
    path.chmod(0)
    [(line_no, _, outcome)] = list(file_outcomes(path))
    assert (line_no, outcome.kind, outcome.reason) == (1, "reject", "unreadable_file")


def build_hostile_archive(root: Path) -> list[tuple[str, bytes, Expected]]:
    corpus = hostile_corpus()
    root.mkdir()
    write_corpus(root / "hostile.jsonl", corpus)
    (root / "truncated.jsonl.gz").write_bytes(gzip.compress(DATA)[: len(gzip.compress(DATA)) // 2])
    (root / "truncated.jsonl.zst").write_bytes(zstd_frames(good_lines(50, "z"))[:-3])
    (root / "dir.jsonl").mkdir()
    (root / "loop.jsonl").symlink_to("loop.jsonl")
    os.mkfifo(root / "fifo.jsonl")
    with open(os.fsencode(root) + b"/name-\xff.jsonl", "wb") as fh:
        fh.write(encoded(post_event("oddname")) + b"\n")
    os.symlink(b"loop-\xff.jsonl", os.fsencode(root) + b"/loop-\xff.jsonl")  # its error message quotes the name
    return corpus


@pytest.mark.integration
def test_materialize_exits_0_on_a_hostile_archive_and_coverage_counts_rows(tmp_path):
    corpus = build_hostile_archive(tmp_path / "archive")
    db = tmp_path / "wh.duckdb"
    env = {k: v for k, v in os.environ.items() if k != "BSKY_WAREHOUSE_START_DATE"}
    env.update(BSKY_WAREHOUSE_DB=str(db), DAGSTER_HOME=str(tmp_path / "dagster_home"))
    proc = subprocess.run(
        [sys.executable, "-m", "bsky_warehouse.cli", "materialize", "--start", "2024-03-08", "--end", "2024-03-12",
         "--archive", str(tmp_path / "archive")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    con = duckdb.connect(str(db), read_only=True)
    try:
        by_file = dict(
            con.execute(
                "SELECT file || ':' || line_no, reason FROM rejected_records WHERE file <> 'hostile.jsonl'"
            ).fetchall()
        )
        hostile = Counter(
            r[0] for r in con.execute("SELECT reason FROM rejected_records WHERE file = 'hostile.jsonl'").fetchall()
        )
        coverage = con.execute(
            "SELECT day, rejected_records, before_first_partition, unaccounted_posts FROM marts.pipeline_coverage"
        ).fetchall()
        per_day = con.execute(
            "SELECT partition_date, count(*), count(DISTINCT reason) FROM rejected_records "
            "WHERE partition_date IS NOT NULL GROUP BY 1"
        ).fetchall()
        posts = {r[0] for r in con.execute("SELECT uri FROM raw_posts").fetchall()}
    finally:
        con.close()
    assert hostile == Counter(reason for _, _, (kind, reason) in corpus if kind == "reject")
    assert by_file["dir.jsonl:1"] == "not_a_regular_file" and by_file["fifo.jsonl:1"] == "not_a_regular_file"
    assert by_file["loop.jsonl:1"] == by_file["loop-\\xff.jsonl:1"] == "unreadable_file"
    assert [r for k, r in by_file.items() if k.startswith("truncated.")] == ["truncated_file", "truncated_file"]
    assert uri("oddname") in posts and uri("c0") in posts and uri("z0") in posts  # lines before each fault load
    # rejected_records counts rows (the 10th holds many rows sharing a reason), and the early post shows.
    assert {day: n for day, n, _, _ in coverage if n} == {day: rows for day, rows, _ in per_day}
    assert any(rows > reasons for _, rows, reasons in per_day)  # so counting reasons would differ
    assert {day: n for day, _, n, _ in coverage if n} == {date(2024, 3, 10): 1}
    assert all(unaccounted == 0 for *_, unaccounted in coverage)


@pytest.mark.parametrize(
    "chunks",
    [[b"a\nbb\n\nccc"], [b"a", b"\nb", b"b\n", b"\nc", b"cc"], [b"a\nbb\n", b"\n", b"ccc", b""], list(b"a\nbb\n\nccc")],
)
def test_split_lines_splits_on_newline_only_whatever_the_chunking(chunks):
    chunks = [bytes([c]) if isinstance(c, int) else c for c in chunks]
    assert list(split_lines(chunks, max_bytes=100)) == [(b"a", 1), (b"bb", 2), (b"", 0), (b"ccc", 3)]


def test_split_lines_keeps_cr_and_other_bytes_and_drops_only_the_final_newline():
    assert list(split_lines([b"a\r\nb\rc\x00\n"], max_bytes=100)) == [(b"a\r", 2), (b"b\rc\x00", 4)]
    assert list(split_lines([b"a\n"], max_bytes=100)) == [(b"a", 1)]
    assert list(split_lines([], max_bytes=100)) == []


def test_split_lines_cuts_an_over_long_line_but_reports_its_length():
    chunks = [b"x" * 7, b"y" * 7 + b"\nshort\n", b"z" * 30]
    assert list(split_lines(chunks, max_bytes=10)) == [(b"x" * 7 + b"yyy", 14), (b"short", 5), (b"z" * 10, 30)]


@pytest.mark.parametrize("seed", range(20))
def test_split_runs_give_every_line_as_split_on_newline_whatever_the_chunking(seed):
    """Runs (a chunk's lines decoded at once) and single lines together are the file's lines in order, each cut to
    the limit with its full length; a run holds only lines that decode and fit."""
    rng = random.Random(seed)
    pieces = [b"", b"{}", b"ok line", "é€😀".encode(), b"\xff\xfe bad", "é".encode()[:1], b"x" * 40, b"\r", b"\x00"]
    data = b"\n".join(rng.choice(pieces) for _ in range(rng.randint(0, 60))) + rng.choice([b"", b"\n"])
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 12))))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    got: list[tuple[bytes, int]] = []
    for run in split_runs(chunks, max_bytes=30):
        if isinstance(run, list):
            encoded = [text.encode() for text in run]
            assert all(len(line) <= 30 for line in encoded)
            got += [(line, len(line)) for line in encoded]
        else:
            got.append(run)
    assert got == [(line[:30], len(line)) for line in lines]


def test_an_over_long_line_is_rejected_unparsed_keeping_its_start():
    raw, outcome = line_outcome(b"{" * 100, MAX_LINE_BYTES + 1, FIRST_DAY)
    assert (outcome.kind, outcome.reason, outcome.day) == ("reject", "line_too_long", None)
    assert raw.startswith(b"{" * 100) and raw.endswith(f"[line of {MAX_LINE_BYTES + 1} bytes cut]".encode())


def test_file_names_that_are_not_utf8_are_stored_escaped(tmp_path):
    name = os.fsencode(tmp_path) + b"/odd-\xff.jsonl"
    with open(name, "wb") as fh:
        fh.write(encoded(post_event("odd")) + b"\n")
    [(file, _, _, outcome)] = list(read_outcomes(tmp_path, date(2024, 3, 10), FIRST_DAY))
    assert (file, outcome.kind) == ("odd-\\xff.jsonl", "post")
    file.encode("utf-8")


@pytest.mark.integration
def test_ingest_asset_metadata_counts_each_rejected_row_once_over_a_range(tmp_path):
    from dagster import AssetKey, DagsterInstance

    from bsky_warehouse.partitions import DayWindow
    from bsky_warehouse.pipeline import run_window

    archive = tmp_path / "archive"
    corpus = build_hostile_archive(archive)
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    result = run_window(DayWindow(DAYS[0], DAYS[-1]), instance, db_path=db, archive_dir=str(archive),
                        assets=["raw_posts", "post_deletions", "rejected_records"])  # fmt: skip
    assert result["success"]
    metadata = instance.get_latest_materialization_event(AssetKey("rejected_records")).asset_materialization.metadata
    con = duckdb.connect(db, read_only=True)
    try:
        rows = dict(con.execute("SELECT reason, count(*) FROM rejected_records GROUP BY 1").fetchall())
    finally:
        con.close()
    assert metadata["rejected"].value == sum(rows.values()) > len(corpus) // 2
    assert metadata["rejected_by_reason"].value == dict(sorted(rows.items()))
