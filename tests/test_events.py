import json
from datetime import date

import pytest

from bsky_warehouse.events import (
    EARLIEST_TIME_US,
    LATEST_TIME_US,
    RecordError,
    check_did,
    check_rkey,
    check_time_us,
    decode_line,
    json_depth,
    json_text,
    parse_created_at,
    parse_event,
    printable_raw,
    within_partitions,
)
from tests.factories import delete_event, line, post_event, uri


def test_create_event_becomes_a_post_owned_by_its_created_day():
    event = post_event(
        "a1",
        text="hi there",
        created_at="2024-03-10T23:59:59.500Z",
        reply={"root": {"uri": uri("r0"), "cid": "x"}, "parent": {"uri": uri("p0"), "cid": "y"}},
        embed={"$type": "app.bsky.embed.external", "external": {"uri": "https://x.org"}},
        facets=[{"features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://x.org"}]}],
    )
    event["time_us"] += 10 * 1_000_000  # seen just after midnight: still the 10th's post
    outcome = parse_event(line(event))
    assert outcome.kind == "post"
    assert outcome.day == date(2024, 3, 10)
    row = outcome.row
    assert row["uri"] == uri("a1")
    assert row["author_did"] == "did:plc:author1"
    assert row["reply_parent_uri"] == uri("p0") and row["reply_root_uri"] == uri("r0")
    assert row["embed_type"] == "app.bsky.embed.external"
    assert '"app.bsky.richtext.facet#link"' in row["facets"]
    assert row["langs"] == ["en"]


def test_created_at_offsets_are_normalised_to_utc_days():
    event = post_event("a2", created_at="2024-03-10T22:30:00-05:00", seen_at="2024-03-11T03:30:00Z")
    assert parse_event(line(event)).day == date(2024, 3, 11)
    assert parse_created_at("2024-03-10T12:00:00").tzinfo is not None  # no offset: read as UTC


def test_delete_is_owned_by_the_day_it_was_seen():
    outcome = parse_event(line(delete_event("a1", seen_at="2024-03-12T01:00:00Z")))
    assert outcome.kind == "delete"
    assert outcome.day == date(2024, 3, 12)
    assert outcome.row["uri"] == uri("a1")


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            {"did": "did:plc:x", "time_us": 1710000000000000, "kind": "identity", "identity": {}},
            "identity_event",
        ),
        (
            {"did": "did:plc:x", "time_us": 1710000000000000, "kind": "account", "account": {}},
            "account_event",
        ),
        (
            {
                "did": "did:plc:x",
                "time_us": 1710000000000000,
                "kind": "commit",
                "commit": {
                    "operation": "create",
                    "collection": "app.bsky.feed.like",
                    "rkey": "l1",
                    "record": {},
                },
            },
            "other_collection",
        ),
    ],
)
def test_events_ignored_by_rule(event, reason):
    outcome = parse_event(line(event))
    assert (outcome.kind, outcome.reason) == ("ignore", reason)


def _mutate(path: str, value, drop: bool = False):
    event = post_event("m1")
    target = event
    *parents, leaf = path.split(".")
    for part in parents:
        target = target[part]
    if drop:
        del target[leaf]
    else:
        target[leaf] = value
    return line(event)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"did": "did:plc:x", "time_us": 17', "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (b'{"kind":"commit","commit":{}}\xff\xfe', "invalid_utf8"),
        (_mutate("commit.record", None, drop=True), "missing_field:commit.record"),
        (_mutate("commit.record.text", None, drop=True), "missing_field:record.text"),
        (_mutate("commit.record.text", 42), "wrong_type:record.text"),
        (_mutate("commit.record.createdAt", None, drop=True), "missing_field:record.createdAt"),
        (_mutate("commit.record.createdAt", "yesterday"), "invalid_created_at"),
        (_mutate("commit.record.createdAt", "2099-01-01T00:00:00Z"), "created_at_out_of_range"),
        (_mutate("commit.record.createdAt", "1970-01-01T00:00:00Z"), "created_at_out_of_range"),
        (_mutate("commit.record.text", "a\x00b"), "nul_character:record.text"),
        (_mutate("commit.record.text", "x" * 3001), "text_too_long"),
        (_mutate("commit.record.langs", "en"), "wrong_type:record.langs"),
        (_mutate("commit.record.$type", "app.bsky.feed.like"), "wrong_record_type"),
        (_mutate("commit.operation", "frobnicate"), "unknown_operation"),
        (_mutate("time_us", "soon"), "wrong_type:time_us"),
        (_mutate("did", "not-a-did"), "invalid_did"),
        (_mutate("commit.rkey", None, drop=True), "missing_field:commit.rkey"),
        (_mutate("kind", None, drop=True), "missing_field:kind"),
        (
            line(post_event("s1")).replace(b"hello bluesky", b"hello \\ud800 bluesky"),
            "invalid_unicode:record.text",
        ),
    ],
)
def test_bad_records_are_rejected_with_a_reason(raw, reason):
    outcome = parse_event(raw)
    assert outcome.kind == "reject"
    assert outcome.reason == reason


def test_reject_keeps_its_day_when_time_is_readable():
    outcome = parse_event(_mutate("commit.record.createdAt", "yesterday"))
    assert outcome.day == date(2024, 3, 10)
    assert parse_event(b'{"truncated').day is None


def test_printable_raw_keeps_every_byte_visible():
    assert printable_raw(b'{"a":"\x00"}\xff\n') == '{"a":"\\x00"}\\xff'


def test_created_at_parser_names_bad_input():
    with pytest.raises(RecordError, match="invalid_created_at"):
        parse_created_at("2024-13-45T00:00:00Z")


@pytest.mark.parametrize(
    ("created_at", "seen_at"),
    [("0001-01-01T00:00:00+01:00", "2024-03-10T00:00:00Z"), ("9999-12-31T23:59:59-01:00", "2024-03-10T00:00:00Z")],
)
def test_created_at_pushed_past_the_calendar_by_its_offset_is_out_of_range(created_at, seen_at):
    with pytest.raises(RecordError, match="created_at_out_of_range"):
        parse_created_at(created_at)
    outcome = parse_event(line(post_event("y", created_at=created_at, seen_at=seen_at)))
    assert (outcome.kind, outcome.reason, outcome.day) == ("reject", "created_at_out_of_range", date(2024, 3, 10))


@pytest.mark.parametrize(
    ("value", "reason"),
    [(0, "time_us_not_positive"), (-1, "time_us_not_positive"), (10**18, "time_us_out_of_range"),
     (EARLIEST_TIME_US - 1, "time_us_out_of_range"), (LATEST_TIME_US, "time_us_out_of_range")],
)  # fmt: skip
def test_implausible_time_us_is_named_and_leaves_the_line_undated(value, reason):
    with pytest.raises(RecordError, match=reason):
        check_time_us(value)
    for event in (post_event("t"), delete_event("t", seen_at="2024-03-10T00:00:00Z")):
        event["time_us"] = value
        outcome = parse_event(line(event))
        assert (outcome.kind, outcome.reason, outcome.day) == ("reject", reason, None)


def test_time_us_bounds_are_inclusive_below_and_exclusive_above():
    assert check_time_us(EARLIEST_TIME_US) == EARLIEST_TIME_US
    assert check_time_us(LATEST_TIME_US - 1) == LATEST_TIME_US - 1


@pytest.mark.parametrize(
    "did", ["did:plc:z72i7hdynmk6r22z27h6tvur", "did:web:example.com", "did:web:localhost%3A8080", "did:x:a:b-c_d.e"]
)
def test_valid_dids_pass(did):
    assert check_did(did) == did


@pytest.mark.parametrize(
    "did",
    ["did:plc:has space", "did:plc:", "did:plc:abc:", "did:plc:abc%", "did:PLC:abc", "did::abc", "plc:abc",
     "did:plc:abc\n", "did:plc:" + "a" * 2041, "did:plc:ab/c", "did:plc:ab#c"],
)  # fmt: skip
def test_dids_outside_atproto_syntax_are_invalid(did):
    with pytest.raises(RecordError, match="invalid_did"):
        check_did(did)
    assert parse_event(_mutate("did", did)).reason == "invalid_did"


@pytest.mark.parametrize("rkey", ["3kabcdefghij2", "self", "a.b", "a:b~c_d-e", "...", "k" * 512])
def test_valid_record_keys_pass(rkey):
    assert check_rkey(rkey) == rkey


@pytest.mark.parametrize("rkey", ["", ".", "..", "a/b", 'a"b', "a'b", "a b", "a#b", "k" * 513, "a\n"])
def test_record_keys_outside_atproto_syntax_are_invalid(rkey):
    with pytest.raises(RecordError, match="invalid_rkey"):
        check_rkey(rkey)
    assert parse_event(_mutate("commit.rkey", rkey)).reason == "invalid_rkey"


def test_json_depth_counts_containers_and_stops_early():
    assert json_depth(5, 10) == 0
    assert json_depth([], 10) == 1
    assert json_depth({"a": [{"b": 1}]}, 10) == 3
    assert json_depth(json.loads("[" * 900 + "]" * 900), 64) == 65  # stops one past the limit


@pytest.mark.parametrize(
    ("value", "reason"),
    [(json.loads("[" * 65 + "]" * 65), "too_deep:f"), ([float("inf")], "invalid_number:f"),
     ({"x": float("nan")}, "invalid_number:f"), (["\udc80"], "invalid_unicode:f")],
)  # fmt: skip
def test_json_text_refuses_what_a_json_column_cannot_hold(value, reason):
    with pytest.raises(RecordError, match=reason):
        json_text(value, "f")


def test_json_text_keeps_the_serialization_of_valid_values():
    value = [{"features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "café"}], "n": 10**30}]
    assert json_text(value, "f") == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert (
        json_text(value, "f")
        == '[{"features":[{"$type":"app.bsky.richtext.facet#tag","tag":"café"}],"n":' + "1" + "0" * 30 + "}]"
    )
    assert json_text(json.loads("[" * 64 + "]" * 64), "f") == "[" * 64 + "]" * 64


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"[" * 10_000 + b"]" * 10_000, "json_too_deep"), (b'{"a": NaN}', "invalid_json"),
     (b'{"a": -Infinity}', "invalid_json"), (b'{"a": 1e400, "b": "\\udc80"}', "invalid_json")],
)  # fmt: skip
def test_decode_line_is_held_to_strict_json(raw, reason):
    with pytest.raises(RecordError, match=reason):
        decode_line(raw)


def test_decode_line_reads_past_a_bom_and_accepts_lone_surrogates_for_the_field_checks():
    assert decode_line(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert decode_line(b'{"a": "\\udc80"}') == {"a": "\udc80"}


def test_post_fields_that_would_not_store_are_rejected():
    event = post_event("e", embed={"$type": {"nested": True}})
    assert parse_event(line(event)).reason == "wrong_type:record.embed.$type"
    event = post_event("e")
    event["commit"]["cid"] = "bafy\x00"
    assert parse_event(line(event)).reason == "nul_character:commit.cid"
    deep = line(post_event("e", facets="PH")).replace(b'"PH"', b"[" * 1000 + b"]" * 1000)
    assert parse_event(deep).reason == "too_deep:record.facets"


FIRST = date(2024, 3, 8)


def test_within_partitions_rejects_a_post_created_before_the_first_partition_on_its_seen_day():
    early = parse_event(line(post_event("e", created_at="2024-03-01T00:00:00Z", seen_at="2024-03-10T05:00:00Z")))
    assert early.kind == "post" and early.day == date(2024, 3, 1)
    moved = within_partitions(early, FIRST)
    assert (moved.kind, moved.reason, moved.day) == ("reject", "before_first_partition", date(2024, 3, 10))
    seen_early = parse_event(line(post_event("e", created_at="2024-03-01T00:00:00Z")))
    assert within_partitions(seen_early, FIRST).day == FIRST  # seen before the first partition too


def test_within_partitions_moves_other_early_lines_to_the_first_partition_and_leaves_the_rest():
    delete = parse_event(line(delete_event("d", seen_at="2024-03-01T00:00:00Z")))
    moved = within_partitions(delete, FIRST)
    assert (moved.kind, moved.day, moved.row) == ("delete", FIRST, delete.row)
    for outcome in (parse_event(line(post_event("p"))), parse_event(b"{"), parse_event(b"")):
        assert within_partitions(outcome, FIRST) is outcome
