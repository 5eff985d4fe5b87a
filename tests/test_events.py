from datetime import date

import pytest

from bsky_warehouse.events import RecordError, parse_created_at, parse_event, printable_raw
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
