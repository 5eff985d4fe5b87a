"""Ingest and cleaning against real DuckDB files (no Dagster): the table contracts and their rules."""

from __future__ import annotations

import gzip
import json
from datetime import date

import zstandard

from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.resources.bluesky import read_outcomes
from tests.factories import delete_event, post_event, uri, write_archive

D10, D11, D12 = date(2024, 3, 10), date(2024, 3, 11), date(2024, 3, 12)


def load(warehouse, archive, *days, rules=None):
    rules = rules or FilterRules()
    out = {}
    for day in days:
        with warehouse.connect() as con:
            ingest = replace_day(con, day, "archive", stage_lines(con, read_outcomes(archive, day)))
            out[day] = (ingest, clean_day(con, day, rules))
    return out


def rows(warehouse, sql, params=None):
    with warehouse.connect() as con:
        return con.execute(sql, params or {}).fetchall()


def test_malformed_lines_are_rejected_while_good_lines_in_the_same_file_load(tmp_path, warehouse):
    archive = tmp_path / "archive"
    bad_time = post_event("b2")
    bad_time["commit"]["record"]["createdAt"] = "not a time"
    write_archive(archive / "day.jsonl", [
        post_event("g1"), '{"did": "did:plc:x", "time_us": 171', post_event("g2"),
        {"did": "did:plc:x", "time_us": post_event("x")["time_us"], "kind": "commit"},
        bad_time, "", post_event("g3"),
    ])  # fmt: skip
    ((ingest, _),) = load(warehouse, archive, D10).values()
    assert sorted(r[0] for r in rows(warehouse, "SELECT uri FROM raw_posts")) == [
        uri("g1"),
        uri("g2"),
        uri("g3"),
    ]
    rejected = rows(warehouse, "SELECT reason, line_no, partition_date FROM rejected_records ORDER BY line_no")
    assert rejected == [
        ("invalid_json", 2, None),
        ("missing_field:commit", 4, D10),
        ("invalid_created_at", 5, D10),
    ]
    assert (ingest.lines, ingest.undated) == (5, 2)  # the truncated and the blank line belong to no day


def test_rerunning_a_day_is_idempotent(tmp_path, warehouse):
    archive = tmp_path / "a"
    write_archive(
        archive / "x.jsonl",
        [post_event("p1"), post_event("p2"), "{bad", delete_event("p2", "2024-03-10T13:00:00Z")],
    )
    tables = ("raw_posts", "rejected_records", "post_deletions", "cleaned_posts")
    counts = []
    for _ in range(3):
        load(warehouse, archive, D10)
        counts.append([rows(warehouse, f"SELECT count(*) FROM {t}")[0][0] for t in tables])
    assert counts[0] == counts[1] == counts[2] == [2, 1, 1, 1]


def test_duplicate_and_updated_events_collapse_to_the_latest_record(tmp_path, warehouse):
    archive = tmp_path / "a"
    update = post_event("p1", text="edited", operation="update", seen_at="2024-03-10T12:05:00Z")
    write_archive(archive / "x.jsonl", [post_event("p1"), post_event("p1"), update, post_event("p1")])
    ((ingest, _),) = load(warehouse, archive, D10).values()
    assert rows(warehouse, "SELECT text FROM raw_posts") == [("edited",)]
    assert (ingest.post_events, ingest.posts, ingest.duplicate_events) == (4, 1, 3)


def test_a_uri_in_two_partitions_is_kept_once_by_the_earliest_day_in_any_run_order(tmp_path, warehouse):
    archive = tmp_path / "a"
    # The same post in two days' files (an edit moved its createdAt): the earlier day owns it.
    write_archive(
        archive / "x.jsonl",
        [
            post_event("dup", created_at="2024-03-10T10:00:00Z"),
            post_event("dup", created_at="2024-03-11T10:00:00Z"),
            post_event("only11", created_at="2024-03-11T11:00:00Z"),
        ],
    )
    result = load(warehouse, archive, D11, D10)  # later day first
    assert rows(warehouse, "SELECT uri, partition_date FROM cleaned_posts ORDER BY uri") == [
        (uri("dup"), D10),
        (uri("only11"), D11),
    ]
    assert result[D10][1].taken_from_later == 1
    load(warehouse, archive, D11)  # re-running the later day now skips it
    assert rows(warehouse, "SELECT count(*) FROM cleaned_posts WHERE uri = $u", {"u": uri("dup")}) == [(1,)]
    assert rows(warehouse, "SELECT count(*), count(DISTINCT uri) FROM cleaned_posts") == [(2, 2)]


def test_a_delete_removes_a_post_from_cleaned_posts_and_downstream(tmp_path, warehouse):
    archive = tmp_path / "a"
    write_archive(archive / "x.jsonl", [post_event("p1"), post_event("p2")])
    load(warehouse, archive, D10)
    with warehouse.connect() as con:
        con.execute(
            """INSERT INTO toxicity_scores (uri, scorer, scorer_version, status, scored_at, partition_date)
                       VALUES ($u, 's', '1', 'ok', now(), $d)""",
            {"u": uri("p1"), "d": D10},
        )
    write_archive(archive / "y.jsonl", [delete_event("p1", seen_at="2024-03-12T08:00:00Z")])
    ((ingest, _),) = load(warehouse, archive, D12).values()
    assert ingest.purged_downstream == 2
    assert rows(warehouse, "SELECT uri FROM cleaned_posts") == [(uri("p2"),)]
    assert rows(warehouse, "SELECT count(*) FROM toxicity_scores") == [(0,)]
    load(warehouse, archive, D10)  # re-cleaning the post's day does not bring it back
    assert rows(warehouse, "SELECT uri FROM cleaned_posts") == [(uri("p2"),)]
    assert rows(warehouse, "SELECT count(*) FROM raw_posts") == [(2,)]


def test_filters_are_recorded_not_applied(tmp_path, warehouse):
    archive = tmp_path / "a"
    write_archive(archive / "x.jsonl", [
        post_event("empty", text="   "), post_event("short", text="ok"), post_event("fine", text="a real post"),
        post_event("de", text="Guten Morgen zusammen", langs=["de"]),
        post_event("enus", text="howdy all", langs=["en-US"]),
        post_event("nolang", text="no langs given", langs=[]),
        post_event("link", text="see https://example.org now"),
    ])  # fmt: skip
    load(warehouse, archive, D10, rules=FilterRules(min_text_length=3, languages=("en",)))
    got = dict(rows(warehouse, "SELECT split_part(uri, '/', -1), filter_reason FROM cleaned_posts"))
    assert got == {
        "empty": "empty_text",
        "short": "text_too_short",
        "fine": None,
        "de": "language_excluded",
        "enus": None,
        "nolang": None,
        "link": None,
    }
    assert rows(warehouse, "SELECT has_link FROM cleaned_posts WHERE uri = $u", {"u": uri("link")}) == [(True,)]
    assert rows(warehouse, "SELECT count(*) FROM cleaned_posts WHERE passes_filters") == [(4,)]


def test_compressed_archives_are_read(tmp_path, warehouse):
    archive = tmp_path / "a"
    archive.mkdir()
    with gzip.open(archive / "one.jsonl.gz", "wt") as fh:
        fh.write(json.dumps(post_event("gz")) + "\n")
    (archive / "two.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress((json.dumps(post_event("zst")) + "\n").encode())
    )
    load(warehouse, archive, D10)
    assert sorted(r[0] for r in rows(warehouse, "SELECT uri FROM raw_posts")) == [uri("gz"), uri("zst")]
