"""The human-judgements import: scales, post keys, rejections with reasons and line numbers, idempotent loads,
Parquet input, the pilot's reference hand labels, and the `bsky-warehouse import judgements` command."""

from __future__ import annotations

import csv
import gc
import json
import os
import subprocess
import sys
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bsky_warehouse.judgements import (
    JudgementFileError,
    ParsedFile,
    load_judgements,
    parse_judgements,
    parse_value,
    rejection_lines,
)
from bsky_warehouse.label_files import RowError
from bsky_warehouse.project import REFERENCE_DIR
from bsky_warehouse.reference_labels import reference_handle_to_did

DID = "did:plc:judgetest0000000000000000"
OTHER_DID = "did:plc:judgetest1111111111111111"
HANDLES = {"alice.example.com": DID, "bob.example.com": OTHER_DID}
REFERENCE_FILE = REFERENCE_DIR / "pilot_posts_hand_labels.csv"


def judgement_counts(con: duckdb.DuckDBPyConnection, raters: list[str] | None = None) -> list[tuple[Any, ...]]:
    """(rater, task, judgements, files) for the given raters (all when None), straight from the table."""
    sql = "SELECT rater, task, count(*), count(DISTINCT source_file) FROM human_judgements"
    if raters is not None:
        sql += " WHERE list_contains($raters, rater)"
    return con.execute(sql + " GROUP BY ALL ORDER BY ALL", {"raters": raters} if raters is not None else {}).fetchall()


def uri(rkey: str | int, did: str = DID) -> str:
    return f"at://{did}/app.bsky.feed.post/{rkey}"


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def parquet(path: Path, select_sql: str) -> Path:
    con = duckdb.connect()
    try:
        con.execute(f"COPY ({select_sql}) TO '{path}' (FORMAT parquet)")
    finally:
        con.close()
    return path


def record_start_lines(path: Path) -> list[int]:
    """The line each data record of a CSV starts on (the header is line 1), as the csv module counts."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        starts, last = [], reader.line_num
        for fields in reader:
            if fields:
                starts.append(last + 1)
            last = reader.line_num
    return starts


def load(warehouse, parsed: ParsedFile, now: datetime | None = None) -> dict[str, Any]:
    with warehouse.connect() as con:
        return load_judgements(con, parsed, now)


def stored(warehouse, rater: str | None = None, task: str | None = None) -> dict[str, tuple]:
    """uri -> (value, label, source_file, line_no) for one rater and task."""
    with warehouse.connect() as con:
        rows = con.execute(
            """SELECT uri, value, label, source_file, line_no FROM human_judgements
               WHERE rater = coalesce($rater, rater) AND task = coalesce($task, task)""",
            {"rater": rater, "task": task},
        ).fetchall()
    out = {row[0]: row[1:] for row in rows}
    assert len(out) == len(rows), "one row per (uri, rater, task)"
    return out


def all_judgements(warehouse) -> list[tuple]:
    with warehouse.connect() as con:
        return con.execute(
            "SELECT uri, rater, task, value, label, source_file, line_no FROM human_judgements ORDER BY ALL"
        ).fetchall()


def rejected(warehouse, file: str | None = None) -> list[tuple]:
    """(line_no, reason, raw JSON) of the judgements' rejections, by line."""
    with warehouse.connect() as con:
        return con.execute(
            """SELECT line_no, reason, raw FROM rejected_records
               WHERE source = 'judgements' AND file = coalesce($file, file) ORDER BY line_no, reason""",
            {"file": file},
        ).fetchall()


def reasons(parsed: ParsedFile) -> list[tuple[int, str]]:
    return [(r.line_no, r.reason) for r in parsed.rejections]


# --- values ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("2", 2.0),
        ("3", 3.0),
        ("4", 4.0),
        ("-1", -1.0),
        (" 3 ", 3.0),
        ("4.0", 4.0),
        (2, 2.0),
        (0, 0.0),
        (-1, -1.0),
        (4.0, 4.0),
    ],
)
def test_toxicity_scale_accepts_0_to_4_and_unsure(raw: Any, expected: float) -> None:
    value, label = parse_value("toxicity", raw)
    assert value == expected and isinstance(value, float)
    assert label is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("5", "out_of_range"),
        ("-2", "out_of_range"),
        (7, "out_of_range"),
        ("2.5", "not_an_integer"),
        (0.5, "not_an_integer"),
        ("abc", "not_an_integer"),
        ("1e400", "not_an_integer"),
        (True, "not_an_integer"),
        ("", "missing_value"),
        ("   ", "missing_value"),
        ("NA", "missing_value"),
        (None, "missing_value"),
        (float("nan"), "missing_value"),
    ],
)
def test_toxicity_scale_rejects(raw: Any, code: str) -> None:
    with pytest.raises(RowError) as err:
        parse_value("toxicity", raw)
    assert err.value.code == code


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("yes", (1.0, "yes")),
        ("no", (0.0, "no")),
        ("true", (1.0, "yes")),
        ("FALSE", (0.0, "no")),
        ("1", (1.0, "yes")),
        ("0", (0.0, "no")),
        ("civic", (1.0, "yes")),
        ("not civic", (0.0, "no")),
        ("Not_Civic", (0.0, "no")),
        (True, (1.0, "yes")),
        (False, (0.0, "no")),
        (1, (1.0, "yes")),
        (0, (0.0, "no")),
    ],
)
def test_sociopolitical_values(raw: Any, expected: tuple[float, str]) -> None:
    assert parse_value("sociopolitical", raw) == expected


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("left", "left"),
        ("left-leaning", "left"),
        ("Left Leaning", "left"),
        ("right", "right"),
        ("right-leaning", "right"),
        ("moderate", "moderate"),
        ("UNCLEAR", "unclear"),
    ],
)
def test_ideology_values(raw: str, label: str) -> None:
    assert parse_value("ideology", raw) == (None, label)


@pytest.mark.parametrize(
    ("task", "raw", "code"),
    [
        ("sociopolitical", "maybe", "unknown_value"),
        ("sociopolitical", "2", "unknown_value"),
        ("sociopolitical", 2, "unknown_value"),
        ("sociopolitical", "", "missing_value"),
        ("ideology", "centrist", "unknown_value"),
        ("ideology", "far-left", "unknown_value"),
        ("ideology", 1, "unknown_value"),
        ("ideology", " ", "missing_value"),
    ],
)
def test_label_tasks_reject_unknown_and_missing(task: str, raw: Any, code: str) -> None:
    with pytest.raises(RowError) as err:
        parse_value(task, raw)
    assert err.value.code == code


# --- toxicity file: reasons and line numbers --------------------------------------------------------------------


def test_toxicity_file_values_reasons_and_line_numbers(warehouse, tmp_path: Path) -> None:
    path = write(
        tmp_path / "tox.csv",
        "uri,value,note\n"
        f"{uri(1)},0,\n"  # line 2
        f"{uri(2)},1,\n"
        f"{uri(3)},2,\n"
        f"{uri(4)},3,\n"
        f"{uri(5)},4,\n"  # line 6
        f"{uri(6)},-1,unsure\n"  # line 7
        f"{uri(7)},5,\n"  # line 8: out of range
        f"{uri(8)},-2,\n"  # line 9: out of range
        f"{uri(9)},2.5,\n"  # line 10: not an integer
        f"{uri(10)},abc,\n"  # line 11: not an integer
        f"{uri(11)},,\n"  # line 12: missing
        f'{uri(12)},3,"a note\nover three\nlines"\n'  # lines 13-15: one record
        f"{uri(13)},9,\n"  # line 16: out of range
        f"{uri(14)}, 2 ,\n",  # line 17
    )
    assert record_start_lines(path) == [*range(2, 14), 16, 17]
    parsed = parse_judgements(path, "ann", "toxicity")
    assert (parsed.uri_column, parsed.value_column) == ("uri", "value")
    assert [(j.uri, j.value, j.line_no) for j in parsed.judgements] == [
        (uri(1), 0.0, 2),
        (uri(2), 1.0, 3),
        (uri(3), 2.0, 4),
        (uri(4), 3.0, 5),
        (uri(5), 4.0, 6),
        (uri(6), -1.0, 7),
        (uri(12), 3.0, 13),
        (uri(14), 2.0, 17),
    ]
    assert reasons(parsed) == [
        (8, "out_of_range"),
        (9, "out_of_range"),
        (10, "not_an_integer"),
        (11, "not_an_integer"),
        (12, "missing_value"),
        (16, "out_of_range"),
    ]
    assert parsed.rejected_by_reason == {"missing_value": 1, "not_an_integer": 2, "out_of_range": 3}

    now = datetime(2024, 3, 14, 12, 0, tzinfo=UTC)
    summary = load(warehouse, parsed, now)
    assert (summary["records"], summary["loaded"], summary["rejected"]) == (14, 8, 6)
    rows = stored(warehouse, "ann", "toxicity")
    resolved = str(path.resolve())
    assert rows[uri(6)] == (-1.0, None, resolved, 7)
    assert rows[uri(12)] == (3.0, None, resolved, 13)
    assert {u: v[0] for u, v in rows.items()} == {j.uri: j.value for j in parsed.judgements}
    with warehouse.connect() as con:
        types = con.execute("SELECT DISTINCT typeof(value), imported_at FROM human_judgements").fetchall()
    assert types == [("DOUBLE", now)]

    rejects = rejected(warehouse, resolved)
    assert [(line, reason) for line, reason, _ in rejects] == reasons(parsed)
    raw = json.loads(rejects[0][2])
    assert (raw["rater"], raw["task"]) == ("ann", "toxicity")
    assert raw["record"] == {"uri": uri(7), "value": "5", "note": ""}
    assert "0–4" in raw["detail"]
    assert json.loads(rejects[4][2])["record"]["value"] == ""


# --- label tasks in files ---------------------------------------------------------------------------------------


def test_sociopolitical_file(warehouse, tmp_path: Path) -> None:
    words = ["yes", "no", "true", "false", "1", "0", "civic", "not civic", "Civic", "NOT-CIVIC", "maybe", ""]
    path = write(
        tmp_path / "socio.csv",
        "uri,sociopolitical\n" + "".join(f"{uri(i)},{w}\n" for i, w in enumerate(words)),
    )
    parsed = parse_judgements(path, "ann", "sociopolitical")
    assert parsed.value_column == "sociopolitical"
    assert reasons(parsed) == [(12, "unknown_value"), (13, "missing_value")]
    assert "maybe" in parsed.rejections[0].detail
    load(warehouse, parsed)
    rows = stored(warehouse, "ann", "sociopolitical")
    expected = [(1.0, "yes"), (0.0, "no")] * 5
    assert {u: v[:2] for u, v in rows.items()} == {uri(i): expected[i] for i in range(10)}


def test_ideology_file(warehouse, tmp_path: Path) -> None:
    words = ["left-leaning", "right-leaning", "left", "right", "moderate", "unclear", "centrist", "n/a"]
    path = write(
        tmp_path / "ideo.csv",
        "link,political_ideology\n"
        + "".join(f"https://bsky.app/profile/{DID}/post/{i},{w}\n" for i, w in enumerate(words)),
    )
    parsed = parse_judgements(path, "ann", "ideology")
    assert (parsed.uri_column, parsed.value_column) == ("link", "political_ideology")
    assert reasons(parsed) == [(8, "unknown_value"), (9, "missing_value")]
    load(warehouse, parsed)
    rows = stored(warehouse, "ann", "ideology")
    labels = ["left", "right", "left", "right", "moderate", "unclear"]
    assert {u: v[:2] for u, v in rows.items()} == {uri(i): (None, labels[i]) for i in range(6)}
    with warehouse.connect() as con:
        assert con.execute("SELECT count(*) FROM human_judgements WHERE value IS NOT NULL").fetchone() == (0,)


def test_value_column_defaults_and_explicit_choice(tmp_path: Path) -> None:
    path = write(tmp_path / "both.csv", f"uri,toxicity,value,mine\n{uri(1)},1,2,3\n")
    assert parse_judgements(path, "ann", "toxicity").judgements[0].value == 2.0  # `value` comes first
    chosen = parse_judgements(path, "ann", "toxicity", value_column="mine")
    assert (chosen.value_column, chosen.judgements[0].value) == ("mine", 3.0)
    renamed = write(tmp_path / "renamed.csv", f"post,rating\n{uri(1)},4\n")
    parsed = parse_judgements(renamed, "ann", "toxicity", uri_column="post")
    assert (parsed.uri_column, parsed.value_column, parsed.judgements[0].value) == ("post", "rating", 4.0)


# --- post keys --------------------------------------------------------------------------------------------------


def test_post_keys(warehouse, tmp_path: Path) -> None:
    path = write(
        tmp_path / "keys.csv",
        "uri,value\n"
        f"{uri('a')},1\n"  # 2: an AT URI
        f"https://bsky.app/profile/{DID}/post/b,2\n"  # 3: a link with a DID
        "https://bsky.app/profile/Alice.Example.com/post/c,3\n"  # 4: a handle, resolved (case-insensitively)
        "https://bsky.app/profile/bob.example.com/post/d/?ref=feed,0\n"  # 5: a handle, a query string
        "at://alice.example.com/app.bsky.feed.post/e,4\n"  # 6: an AT URI naming a handle
        "https://bsky.app/profile/nobody.example.com/post/f,1\n"  # 7: unknown handle
        "not a post,1\n"  # 8
        f"at://{DID}/app.bsky.feed.like/g,1\n"  # 9: not a post
        "https://bsky.app/profile/alice.example.com,1\n"  # 10: a profile link, not a post
        "https://example.com/profile/x/post/h,1\n"  # 11: not bsky.app
        ",1\n"  # 12
        "   ,1\n"  # 13
        f"https://bsky.app/profile/{DID}/post/a,0\n",  # 14: the post of line 2 again, as a link
    )
    parsed = parse_judgements(path, "ann", "toxicity", handle_to_did=HANDLES)
    assert [(j.line_no, j.uri, j.value) for j in parsed.judgements] == [
        (2, uri("a"), 1.0),
        (3, uri("b"), 2.0),
        (4, uri("c"), 3.0),
        (5, uri("d", OTHER_DID), 0.0),
        (6, uri("e"), 4.0),
    ]
    assert reasons(parsed) == [
        (7, "unresolved_handle"),
        (8, "invalid_uri"),
        (9, "invalid_uri"),
        (10, "invalid_link"),
        (11, "invalid_link"),
        (12, "missing_uri"),
        (13, "missing_uri"),
        (14, "duplicate_in_file"),
    ]
    assert "nobody.example.com" in parsed.rejections[0].detail
    assert "line 2" in parsed.rejections[-1].detail
    load(warehouse, parsed)
    assert set(stored(warehouse, "ann", "toxicity")) == {j.uri for j in parsed.judgements}


def test_handle_resolution_without_a_map_or_with_a_bad_one(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", "link,value\nhttps://bsky.app/profile/alice.example.com/post/x,1\n")
    unmapped = parse_judgements(path, "ann", "toxicity")
    assert reasons(unmapped) == [(2, "unresolved_handle")]
    assert "no handle_to_did mapping" in unmapped.rejections[0].detail
    bad = parse_judgements(path, "ann", "toxicity", handle_to_did={"alice.example.com": "alice"})
    assert reasons(bad) == [(2, "unresolved_handle")]
    by_function = parse_judgements(path, "ann", "toxicity", handle_to_did=lambda h: DID if h.startswith("a") else None)
    assert [j.uri for j in by_function.judgements] == [uri("x")]


def test_duplicates_first_line_wins(warehouse, tmp_path: Path) -> None:
    path = write(
        tmp_path / "dup.csv",
        f"uri,value\n{uri(1)},2\n{uri(2)},0\n{uri(1)},2\n{uri(1)},4\n{uri(2)},\n{uri(2)},1\n",
    )
    parsed = parse_judgements(path, "ann", "toxicity")
    assert [(j.line_no, j.uri, j.value) for j in parsed.judgements] == [(2, uri(1), 2.0), (3, uri(2), 0.0)]
    # line 6 is judged on its value first (missing), the others are duplicates naming the line that won
    assert reasons(parsed) == [
        (4, "duplicate_in_file"),
        (5, "duplicate_in_file"),
        (6, "missing_value"),
        (7, "duplicate_in_file"),
    ]
    details = [r.detail for r in parsed.rejections]
    assert "line 2" in details[0] and "same value" in details[0]
    assert "line 2" in details[1] and "first line wins" in details[1]
    assert "line 3" in details[3]
    load(warehouse, parsed)
    rows = stored(warehouse, "ann", "toxicity")
    assert rows[uri(1)][0::3] == (2.0, 2) and rows[uri(2)][0::3] == (0.0, 3)


def test_unreadable_records_rejected_while_neighbours_load(warehouse, tmp_path: Path) -> None:
    path = write(
        tmp_path / "broken.csv",
        b"uri,value\r\n"
        + f"{uri(1)},1\r\n".encode()  # 2
        + f"{uri(2)}\r\n".encode()  # 3: too few fields
        + f"{uri(3)},2\r\n".encode()  # 4
        + f"{uri(4)},3,extra,more\r\n".encode()  # 5: too many fields
        + b"\r\n"  # 6: a blank line is no record
        + f"{uri(5)},".encode()
        + b'"\xff\xfe bad"\r\n'  # 7: not UTF-8
        + f"{uri(6)},4\r\n".encode()  # 8
        + f'"{uri(7)}","0"\r\n'.encode(),  # 9, no newline at the end
    )
    parsed = parse_judgements(path, "ann", "toxicity")
    assert [(j.line_no, j.uri) for j in parsed.judgements] == [(2, uri(1)), (4, uri(3)), (8, uri(6)), (9, uri(7))]
    assert reasons(parsed) == [(3, "wrong_field_count"), (5, "wrong_field_count"), (7, "invalid_utf8")]
    too_few, too_many, not_utf8 = parsed.rejections
    assert "1 fields, the header has 2" in too_few.detail
    assert too_few.record == {"uri": uri(2), "value": None}
    assert too_many.record["_extra_fields"] == ["extra", "more"]
    assert not_utf8.record["value"] == "\ufffd\ufffd bad"

    load(warehouse, parsed)
    assert len(stored(warehouse, "ann", "toxicity")) == 4
    rows = rejected(warehouse)
    assert [(line, reason) for line, reason, _ in rows] == reasons(parsed)
    assert json.loads(rows[2][2])["record"] == {"uri": uri(5), "value": "\ufffd\ufffd bad"}


def test_oversized_field_is_an_invalid_csv_record(tmp_path: Path) -> None:
    path = write(tmp_path / "big.csv", f"uri,value\n{uri(1)},{'9' * 200_000}\n{uri(2)},1\n")
    parsed = parse_judgements(path, "ann", "toxicity")
    assert reasons(parsed) == [(2, "invalid_csv")]
    assert [(j.line_no, j.uri) for j in parsed.judgements] == [(3, uri(2))]


# --- whole-file errors --------------------------------------------------------------------------------------------


def _good_csv(tmp_path: Path) -> Path:
    return write(tmp_path / "good.csv", f"uri,value\n{uri(1)},1\n")


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (_good_csv, {"task": "colour"}, "unknown task 'colour'"),
        (_good_csv, {"rater": ""}, "rater must be"),
        (_good_csv, {"rater": " ann"}, "rater must be"),
        (lambda p: write(p / "empty.csv", ""), {}, "empty file"),
        (lambda p: write(p / "header.csv", "uri,value\n"), {}, "no data rows"),
        (lambda p: write(p / "blank.csv", "uri,value\n\n\n"), {}, "no data rows"),
        (_good_csv, {"value_column": "score"}, "no toxicity value column 'score'"),
        (_good_csv, {"uri_column": "post"}, "no uri/link column 'post'"),
        (lambda p: write(p / "novalue.csv", f"uri,stars\n{uri(1)},1\n"), {}, "no toxicity value column"),
        (lambda p: write(p / "nokey.csv", "post,value\nx,1\n"), {}, "no uri/link column"),
        (lambda p: write(p / "bad.parquet", b"PAR1 this is not parquet PAR1"), {}, "not a readable Parquet file"),
        (lambda p: write(p / "notes.txt", "uri,value\n"), {}, "must be .csv or .parquet"),
        (lambda p: p / "absent.csv", {}, "No such file"),
        (
            lambda p: parquet(p / "none.parquet", f"SELECT '{uri(1)}' AS uri, 1 AS value LIMIT 0"),
            {},
            "no data rows",
        ),
    ],
)
def test_whole_file_errors_raise_before_anything_is_written(
    warehouse, tmp_path: Path, make: Any, kwargs: dict[str, str], message: str
) -> None:
    # an earlier good import, which a failed one must leave alone
    load(warehouse, parse_judgements(write(tmp_path / "before.csv", f"uri,value\n{uri(9)},3\n"), "ann", "toxicity"))
    before = (all_judgements(warehouse), rejected(warehouse))
    args = {"rater": "ann", "task": "toxicity", **kwargs}
    with pytest.raises(JudgementFileError, match=message):
        parse_judgements(make(tmp_path), args.pop("rater"), args.pop("task"), **args)
    assert (all_judgements(warehouse), rejected(warehouse)) == before


def test_whole_file_error_closes_the_file(tmp_path: Path) -> None:
    path = _good_csv(tmp_path)
    gc.collect()  # other tests' leftovers warn now, not inside the window below
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(JudgementFileError):
            parse_judgements(path, "ann", "toxicity", value_column="score")
        gc.collect()
    # Only this file's handle counts: a collection may still finalize something another test left open.
    assert [w for w in caught if issubclass(w.category, ResourceWarning) and path.name in str(w.message)] == []


# --- accounting -------------------------------------------------------------------------------------------------


def test_every_record_ends_in_exactly_one_place(warehouse, tmp_path: Path) -> None:
    lines = [
        f"{uri(1)},1",
        f"{uri(2)},7",
        "garbage,2",
        f"{uri(3)}",
        f"{uri(1)},1",
        f'{uri(4)},"3"',
        f"https://bsky.app/profile/{DID}/post/5,0",
        ",4",
        f"{uri(6)},-1",
        f"{uri(7)},x",
    ]
    path = write(tmp_path / "mixed.csv", "uri,value\n" + "\n".join(lines) + "\n")
    parsed = parse_judgements(path, "ann", "toxicity")
    summary = load(warehouse, parsed)
    starts = record_start_lines(path)
    assert summary["records"] == len(starts) == len(lines)
    assert summary["loaded"] + summary["rejected"] == summary["records"]
    assert sum(summary["rejected_by_reason"].values()) == summary["rejected"]
    loaded_lines = {j.line_no for j in parsed.judgements}
    rejected_lines = {r.line_no for r in parsed.rejections}
    assert loaded_lines.isdisjoint(rejected_lines) and loaded_lines | rejected_lines == set(starts)
    with warehouse.connect() as con:
        in_table = con.execute("SELECT list(line_no ORDER BY line_no) FROM human_judgements").fetchone()[0]
        sql = "SELECT reason, count(*) FROM rejected_records WHERE source = 'judgements' GROUP BY 1"
        reasons_in_table = dict(con.execute(sql).fetchall())
    assert in_table == sorted(loaded_lines)
    assert reasons_in_table == summary["rejected_by_reason"]
    assert summary["loaded"] == 4 and summary["rejected_by_reason"] == {
        "duplicate_in_file": 1,
        "invalid_uri": 1,
        "missing_uri": 1,
        "not_an_integer": 1,
        "out_of_range": 1,
        "wrong_field_count": 1,
    }


# --- idempotence and replacement --------------------------------------------------------------------------------


def test_reimporting_the_same_file_is_idempotent(warehouse, tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", f"uri,value\n{uri(1)},1\n{uri(2)},2\n{uri(3)},9\n{uri(4)},\n")
    first = load(warehouse, parse_judgements(path, "ann", "toxicity"))
    rows, rejects = all_judgements(warehouse), rejected(warehouse)
    second = load(warehouse, parse_judgements(path, "ann", "toxicity"))
    assert all_judgements(warehouse) == rows and len(rows) == 2
    assert rejected(warehouse) == rejects and [r[:2] for r in rejects] == [(4, "out_of_range"), (5, "missing_value")]
    assert (first["replaced_from_this_file"], second["replaced_from_this_file"]) == (0, 2)
    assert second["taken_over_from_other_files"] == 0


def test_reimporting_an_edited_file_replaces_its_rows(warehouse, tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", f"uri,value\n{uri(1)},1\n{uri(2)},2\n{uri(3)},3\n{uri(4)},abc\n")
    load(warehouse, parse_judgements(path, "ann", "toxicity"))
    write(path, f"uri,value\n{uri(2)},4\n{uri(3)},3\n{uri(5)},0\n{uri(6)},5\n")
    summary = load(warehouse, parse_judgements(path, "ann", "toxicity"))
    assert summary["replaced_from_this_file"] == 3
    rows = stored(warehouse, "ann", "toxicity")
    assert {u: (v[0], v[3]) for u, v in rows.items()} == {uri(2): (4.0, 2), uri(3): (3.0, 3), uri(5): (0.0, 4)}
    assert [r[:2] for r in rejected(warehouse)] == [(5, "out_of_range")]


def test_a_newer_file_takes_over_a_post_for_the_same_rater_and_task(warehouse, tmp_path: Path) -> None:
    first = write(tmp_path / "first.csv", f"uri,value\n{uri(1)},1\n{uri(2)},2\n{uri(3)},x\n")
    second = write(tmp_path / "second.csv", f"uri,value\n{uri(2)},4\n{uri(4)},0\n")
    load(warehouse, parse_judgements(first, "ann", "toxicity"))
    summary = load(warehouse, parse_judgements(second, "ann", "toxicity"))
    assert (summary["taken_over_from_other_files"], summary["replaced_from_this_file"]) == (1, 0)
    rows = stored(warehouse, "ann", "toxicity")
    assert {u: (v[0], Path(v[2]).name) for u, v in rows.items()} == {
        uri(1): (1.0, "first.csv"),
        uri(2): (4.0, "second.csv"),
        uri(4): (0.0, "second.csv"),
    }
    # the first file's rejections belong to it and stay
    assert [(Path(f).name, line, reason) for line, reason, f in _rejections_with_files(warehouse)] == [
        ("first.csv", 4, "not_an_integer")
    ]
    # importing the first file again takes the post back; still one row per (uri, rater, task)
    again = load(warehouse, parse_judgements(first, "ann", "toxicity"))
    assert (again["taken_over_from_other_files"], again["replaced_from_this_file"]) == (1, 1)
    rows = stored(warehouse, "ann", "toxicity")
    assert rows[uri(2)][0] == 2.0 and len(rows) == 3
    with warehouse.connect() as con:
        assert judgement_counts(con) == [("ann", "toxicity", 3, 2)]


def _rejections_with_files(warehouse) -> list[tuple]:
    with warehouse.connect() as con:
        return con.execute(
            "SELECT line_no, reason, file FROM rejected_records WHERE source = 'judgements' ORDER BY ALL"
        ).fetchall()


def test_other_raters_and_tasks_are_independent(warehouse, tmp_path: Path) -> None:
    path = write(tmp_path / "shared.csv", f"uri,value\n{uri(1)},1\n{uri(2)},0\n{uri(3)},maybe\n")
    for rater, task in [("ann", "toxicity"), ("bob", "toxicity"), ("ann", "sociopolitical")]:
        summary = load(warehouse, parse_judgements(path, rater, task))
        assert (summary["taken_over_from_other_files"], summary["replaced_from_this_file"]) == (0, 0)
    with warehouse.connect() as con:
        assert judgement_counts(con) == [
            ("ann", "sociopolitical", 2, 1),
            ("ann", "toxicity", 2, 1),
            ("bob", "toxicity", 2, 1),
        ]
        assert judgement_counts(con, ["bob", "nobody"]) == [("bob", "toxicity", 2, 1)]
        assert judgement_counts(con, []) == []
    assert stored(warehouse, "ann", "sociopolitical")[uri(1)][:2] == (1.0, "yes")
    assert len(rejected(warehouse)) == 3  # one per (rater, task), each kept
    # re-importing one (rater, task) replaces only its own rows and rejections
    write(path, f"uri,value\n{uri(1)},4\n")
    load(warehouse, parse_judgements(path, "bob", "toxicity"))
    assert stored(warehouse, "bob", "toxicity") == {uri(1): (4.0, None, str(path.resolve()), 2)}
    assert {u: v[0] for u, v in stored(warehouse, "ann", "toxicity").items()} == {uri(1): 1.0, uri(2): 0.0}
    raws = [json.loads(raw) for _, _, raw in rejected(warehouse)]
    assert sorted((r["rater"], r["task"]) for r in raws) == [("ann", "sociopolitical"), ("ann", "toxicity")]


# --- Parquet --------------------------------------------------------------------------------------------------


def test_parquet_with_typed_columns(warehouse, tmp_path: Path) -> None:
    path = parquet(
        tmp_path / "typed.parquet",
        f"""SELECT * FROM (VALUES
            ('{uri(1)}', 3::INTEGER, true),
            ('{uri(2)}', -1::INTEGER, false),
            ('{uri(3)}', 7::INTEGER, NULL),
            ('{uri(4)}', NULL, true),
            (NULL, 2::INTEGER, false),
            ('https://bsky.app/profile/{DID}/post/6', 0::INTEGER, true)
        ) t(uri, toxicity, sociopolitical)""",
    )
    tox = parse_judgements(path, "ann", "toxicity")
    assert tox.value_column == "toxicity"
    assert [(j.line_no, j.uri, j.value) for j in tox.judgements] == [
        (1, uri(1), 3.0),
        (2, uri(2), -1.0),
        (6, uri(6), 0.0),
    ]
    assert reasons(tox) == [(3, "out_of_range"), (4, "missing_value"), (5, "missing_uri")]
    socio = parse_judgements(path, "ann", "sociopolitical")
    assert [(j.line_no, j.value, j.label) for j in socio.judgements] == [
        (1, 1.0, "yes"),
        (2, 0.0, "no"),
        (4, 1.0, "yes"),
        (6, 1.0, "yes"),
    ]
    assert reasons(socio) == [(3, "missing_value"), (5, "missing_uri")]
    load(warehouse, tox)
    load(warehouse, socio)
    with warehouse.connect() as con:
        assert judgement_counts(con) == [("ann", "sociopolitical", 4, 1), ("ann", "toxicity", 3, 1)]
    raw = json.loads(rejected(warehouse)[0][2])  # rows 3 of both tasks; typed values stay typed in the record
    assert raw["record"]["toxicity"] == 7 and raw["record"]["sociopolitical"] is None


def test_parquet_booleans_and_fractions_are_not_toxicity(tmp_path: Path) -> None:
    path = parquet(
        tmp_path / "odd.parquet",
        f"SELECT * FROM (VALUES ('{uri(1)}', true, 2.0::DOUBLE), ('{uri(2)}', false, 2.5::DOUBLE)) t(uri, flag, value)",
    )
    assert reasons(parse_judgements(path, "ann", "toxicity", value_column="flag")) == [
        (1, "not_an_integer"),
        (2, "not_an_integer"),
    ]
    parsed = parse_judgements(path, "ann", "toxicity")
    assert [(j.line_no, j.value) for j in parsed.judgements] == [(1, 2.0)]
    assert reasons(parsed) == [(2, "not_an_integer")]


# --- the pilot's hand labels ----------------------------------------------------------------------------------


def _reference_expectations(column: str, mapping: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """From the reference CSV itself: the URI -> stored (value, label) of each labelled row, and the lines
    of the unlabelled ones."""
    handles = reference_handle_to_did()
    expected: dict[str, Any] = {}
    missing: list[int] = []
    for line_no, row in zip(record_start_lines(REFERENCE_FILE), _reference_rows(), strict=True):
        handle, rkey = row["link"].split("/profile/")[1].split("/post/")
        post = f"at://{handles[handle.lower()]}/app.bsky.feed.post/{rkey.strip('/')}"
        label = row[column].strip()
        if label:
            expected[post] = mapping[label]
        else:
            missing.append(line_no)
    return expected, missing


def _reference_rows() -> list[dict[str, str]]:
    with REFERENCE_FILE.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("task", "column", "mapping"),
    [
        ("sociopolitical", "civic_hand_label", {"civic": (1.0, "yes"), "not civic": (0.0, "no")}),
        (
            "ideology",
            "political_ideology_hand_label",
            {
                "left-leaning": (None, "left"),
                "right-leaning": (None, "right"),
                "moderate": (None, "moderate"),
                "unclear": (None, "unclear"),
            },
        ),
    ],
)
def test_reference_hand_labels(warehouse, task: str, column: str, mapping: dict[str, Any]) -> None:
    expected, missing = _reference_expectations(column, mapping)
    records = len(_reference_rows())
    assert len(expected) + len(missing) == records and len(expected) > 0 and len(missing) > 0
    parsed = parse_judgements(REFERENCE_FILE, "bluesky-research-2024", task, handle_to_did=reference_handle_to_did())
    assert (parsed.uri_column, parsed.value_column) == ("link", column)
    summary = load(warehouse, parsed)
    assert (summary["records"], summary["loaded"], summary["rejected"]) == (records, len(expected), len(missing))
    assert summary["rejected_by_reason"] == {"missing_value": len(missing)}
    assert [r.line_no for r in parsed.rejections] == missing
    rows = stored(warehouse, "bluesky-research-2024", task)
    assert {u: v[:2] for u, v in rows.items()} == expected
    if task == "sociopolitical":  # the figures the pilot's file is known for
        assert (len(expected), len(missing)) == (354, 7)
    else:
        assert (len(expected), len(missing)) == (192, 169)


# --- summaries --------------------------------------------------------------------------------------------------


def test_rejection_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "uri,value\n" + "".join(f"{uri(i)},{i + 5}\n" for i in range(12)))
    parsed = parse_judgements(path, "ann", "toxicity")
    lines = rejection_lines(parsed)
    assert len(lines) == 10 and len(rejection_lines(parsed, limit=3)) == 3
    assert lines[0] == f"line 2: out_of_range: {parsed.rejections[0].detail}"
    assert lines[0].startswith("line 2: out_of_range: '5'")


# --- the command line -------------------------------------------------------------------------------------------


def test_cli_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from bsky_warehouse.cli import main

    db = tmp_path / "cli.duckdb"
    monkeypatch.setenv("BSKY_WAREHOUSE_DB", str(db))
    handles = write(tmp_path / "handles.csv", f"handle,did\ncarol.example.com,{DID}\n")
    path = write(
        tmp_path / "carol.csv",
        "post,verdict\nhttps://bsky.app/profile/carol.example.com/post/1,civic\n"
        "https://bsky.app/profile/dave.example.com/post/2,yes\n",
    )
    code = main(["import", "judgements", str(path), "--rater", "carol", "--task", "sociopolitical",
                 "--uri-column", "post", "--value-column", "verdict", "--handle-map", str(handles)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "1 of 2 sociopolitical judgements by carol loaded" in out
    assert "line 3: unresolved_handle: dave.example.com" in out
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT uri, value, label FROM human_judgements").fetchall() == [(uri(1), 1.0, "yes")]
    finally:
        con.close()

    with pytest.raises(SystemExit) as exit_info:
        main(["import", "judgements", str(path), "--rater", "carol", "--task", "colour"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'colour'" in capsys.readouterr().err


def test_cli_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "cli.duckdb"
    env = {**os.environ, "BSKY_WAREHOUSE_DB": str(db)}
    path = write(tmp_path / "tox.csv", f"uri,toxicity\n{uri(1)},0\n{uri(2)},4\n{uri(3)},5\n{uri(1)},1\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "bsky_warehouse.cli", "import", "judgements", str(path), *args]
        return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)

    bad = run("--rater", "ann", "--task", "toxicity", "--value-column", "score")
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("error: ") and "no toxicity value column 'score'" in bad.stderr
    assert "['uri', 'toxicity']" in bad.stderr
    assert bad.stdout == "" and not db.exists()

    done = run("--rater", "ann", "--task", "toxicity", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary == {
        "file": str(path.resolve()),
        "rater": "ann",
        "task": "toxicity",
        "uri_column": "uri",
        "value_column": "toxicity",
        "records": 4,
        "loaded": 2,
        "rejected": 2,
        "rejected_by_reason": {"duplicate_in_file": 1, "out_of_range": 1},
        "replaced_from_this_file": 0,
        "taken_over_from_other_files": 0,
        "first_rejections": summary["first_rejections"],
    }
    assert [line.split(":")[0:2] for line in summary["first_rejections"]] == [
        ["line 4", " out_of_range"],
        ["line 5", " duplicate_in_file"],
    ]
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT uri, rater, task, value, line_no FROM human_judgements ORDER BY line_no").fetchall()
        rejects = con.execute("SELECT reason, line_no FROM rejected_records ORDER BY line_no").fetchall()
    finally:
        con.close()
    assert rows == [(uri(1), "ann", "toxicity", 0.0, 2), (uri(2), "ann", "toxicity", 4.0, 3)]
    assert rejects == [("out_of_range", 4), ("duplicate_in_file", 5)]
    assert Counter(r for r, _ in rejects) == Counter(summary["rejected_by_reason"])
