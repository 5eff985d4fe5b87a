"""A file of hostile input: every line is accounted for, nothing crashes, the good lines load."""

from __future__ import annotations

import json
from datetime import date

from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.resources.bluesky import read_outcomes
from tests.factories import delete_event, post_event, uri

DAYS = [date(2024, 3, 10), date(2024, 3, 11)]


def hostile_lines() -> tuple[list[bytes], set[str]]:
    good = [post_event(f"good{i}", text=f"good post number {i}") for i in range(5)]
    good.append(post_event("good5", text="seen the next day", created_at="2024-03-11T01:00:00Z"))
    wrong_types = post_event("wt")
    wrong_types["commit"]["record"]["langs"] = {"en": True}
    missing_record = post_event("mr")
    del missing_record["commit"]["record"]
    huge = post_event("huge", text="x" * 1_000_000)
    future = post_event("future")
    future["commit"]["record"]["createdAt"] = "2999-01-01T00:00:00Z"
    invalid_time = post_event("badtime")
    invalid_time["commit"]["record"]["createdAt"] = "2024-02-30T25:61:00Z"
    like = post_event("like1")
    like["commit"]["collection"] = "app.bsky.feed.like"
    update = post_event("good0", text="good post number 0, edited", operation="update", seen_at="2024-03-10T12:30:00Z")
    numbers_as_text = post_event("num")
    numbers_as_text["time_us"] = str(numbers_as_text["time_us"])
    lines = [json.dumps(e).encode() for e in good]
    lines += [
        b'{"did": "did:plc:x", "kind": "commit", "commit": {',  # truncated
        b"not json at all",
        b"\x00\x00\x00",
        b'{"kind":"commit","time_us":1710072000000000}\xc3\x28',  # invalid UTF-8
        json.dumps(wrong_types).encode(),
        json.dumps(missing_record).encode(),
        json.dumps(huge).encode(),
        json.dumps(post_event("nul", text="before\x00after")).encode(),
        json.dumps(post_event("surrogate", text="x")).encode().replace(b'"x"', b'"\\udc80 lone"'),
        json.dumps(future).encode(),
        json.dumps(invalid_time).encode(),
        json.dumps(like).encode(),
        json.dumps({"did": "did:plc:x", "time_us": good[0]["time_us"], "kind": "identity", "identity": {}}).encode(),
        json.dumps(good[1]).encode(),  # duplicate event
        json.dumps(update).encode(),
        json.dumps(numbers_as_text).encode(),
        json.dumps(delete_event("good4", seen_at="2024-03-10T18:00:00Z")).encode(),
        b"[]",
        b"",
    ]
    return lines, {uri(f"good{i}") for i in range(6)}


def test_every_hostile_line_is_accounted_for_and_good_lines_load(tmp_path, warehouse):
    lines, good_uris = hostile_lines()
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "hostile.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    dated, undated = 0, None
    with warehouse.connect() as con:
        for day in DAYS:
            stats = replace_day(con, day, "archive", stage_lines(con, read_outcomes(archive, day)))
            clean_day(con, day, FilterRules())
            assert sum(stats.by_kind.values()) == stats.lines
            dated += stats.lines
            assert undated in (None, stats.undated)  # the same undated lines are seen by every day
            undated = stats.undated
        assert dated + undated == len(lines)

        raw = {r[0]: r[1] for r in con.execute("SELECT uri, text FROM raw_posts").fetchall()}
        assert set(raw) == good_uris
        assert raw[uri("good0")] == "good post number 0, edited"
        cleaned = {r[0] for r in con.execute("SELECT uri FROM cleaned_posts").fetchall()}
        assert cleaned == good_uris - {uri("good4")}
        reasons = sorted(r[0] for r in con.execute("SELECT reason FROM rejected_records").fetchall())
    assert reasons == sorted([
        "invalid_json", "invalid_json", "invalid_json", "invalid_utf8", "wrong_type:record.langs",
        "missing_field:commit.record", "text_too_long", "nul_character:record.text",
        "invalid_unicode:record.text", "created_at_out_of_range", "invalid_created_at", "wrong_type:time_us",
        "not_an_object",
    ])  # fmt: skip


def test_rerunning_hostile_input_does_not_double_undated_rejects(tmp_path, warehouse):
    lines, _ = hostile_lines()
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "hostile.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    counts = []
    for _ in range(2):
        with warehouse.connect() as con:
            for day in DAYS:
                replace_day(con, day, "archive", stage_lines(con, read_outcomes(archive, day)))
            counts.append(con.execute("SELECT count(*) FROM rejected_records").fetchall()[0][0])
    assert counts[0] == counts[1] == 13
