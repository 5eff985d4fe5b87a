"""DuckDB's fast path decides a line only as `events.py` would: the same kind, day, time and row, over lines
crafted at every check's edge and over thousands of random mutations of good events; and it does decide the
good lines (a fast path that sent everything back would pass the first check and help no one)."""

from __future__ import annotations

import json
import random
from datetime import date
from typing import Any

import pytest

from bsky_warehouse.archive_index import spool_connection
from bsky_warehouse.events_sql import classify
from bsky_warehouse.resources.bluesky import line_outcome
from tests.factories import delete_event, post_event, time_us

FIRST = date(2024, 3, 8)
ROW_COLUMNS = ["uri", "cid", "author_did", "text", "created_at", "langs", "reply_parent_uri", "reply_root_uri",
               "embed_type", "facets", "labels"]  # fmt: skip


def dumps(event: Any, compact: bool = False) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":") if compact else None)


def decided(lines: list[str], first_day: date | None = FIRST) -> dict[int, dict[str, Any]]:
    con = spool_connection()
    result = classify(con, lines, first_day)
    rows = con.execute(f"SELECT pos, kind, day, time_us, deleted_at, {', '.join(ROW_COLUMNS)} FROM fast_lines")
    names = [d[0] for d in rows.description]
    out = {row[0]: dict(zip(names, row, strict=True)) for row in rows.fetchall()}
    assert sorted([*out, *result.slow]) == list(range(len(lines)))  # every line decided once, or sent back
    assert result.decided == len(out)
    return out


def assert_same_as_python(lines: list[str], first_day: date | None = FIRST) -> dict[int, dict[str, Any]]:
    fast = decided(lines, first_day)
    for pos, got in fast.items():
        raw = lines[pos].encode()
        _, want = line_outcome(raw, len(raw), first_day)
        where = f"line {pos}: {lines[pos][:300]!r}"
        assert got["kind"] == want.kind, where
        assert got["day"] == want.day, where
        if want.kind == "ignore":
            assert want.reason == "other_collection", where
            continue
        assert got["time_us"] == want.time_us, where
        assert want.row is not None
        if want.kind == "delete":
            assert (got["uri"], got["deleted_at"]) == (want.row["uri"], want.row["deleted_at"]), where
        else:
            assert {c: got[c] for c in ROW_COLUMNS} == want.row, where
    return fast


def with_record(**fields: Any) -> dict[str, Any]:
    event = post_event("r1")
    event["commit"]["record"].update(fields)
    return event


def without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    node = event
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return event


# Integers at the edges of what orjson reads as an integer (64 bits) rather than a float.
BIG_INTEGERS = [12345678901234567890123, 2**64, 2**64 - 1, 10**19 - 1, -(2**63), -(2**63) - 1, -1]


def crafted() -> list[str]:
    """Lines at the edge of every check the parser makes on the way to a post, a delete or an ignore."""
    good = post_event("g1")
    text = dumps(good)
    seen = "2024-03-10T12:00:00Z"
    events: list[Any] = [
        good, dumps(good, compact=True), delete_event("d1", seen), delete_event("d0", "2024-03-01T00:00:00Z"),
        {**post_event("l1"), "commit": {**post_event("l1")["commit"], "collection": "app.bsky.feed.like"}},
        {"did": "did:plc:x", "time_us": time_us(seen), "kind": "identity"},
        post_event("early", created_at="2024-03-01T00:00:00Z"), post_event("upd", operation="update"),
        post_event("op", operation="Delete"), post_event("op2", operation=5),  # type: ignore[arg-type]
    ]  # fmt: skip
    for created_at in ["2024-03-10T12:00:00Z", "2024-03-10T12:00:00+00:00", "2024-03-10T07:00:00-05:00",
                       "2024-03-11T02:00:00+14:00", "2024-03-10T23:59:59+23:59", "2024-03-10T12:00:00.1Z",
                       "2024-03-10T12:00:00.12Z", "2024-03-10T12:00:00.1234Z", "2024-03-10T12:00:00.12345Z",
                       "2024-03-10T12:00:00.123456Z", "2024-03-10T12:00:00.1234567Z", "2024-03-10T12:00:00z",
                       "2024-03-10T12:00:00", "2024-03-10 12:00:00Z", "2024-02-29T12:00:00Z",
                       "2023-02-29T12:00:00Z", "2024-03-10T24:00:00Z", "2024-03-10T12:00:60Z",
                       "2024-03-10T12:60:00Z", "2024-03-10T12:00:00+24:00", "2024-03-10T12:00:00+05:60",
                       " 2024-03-10T12:00:00Z", "0000-03-10T12:00:00Z", "2022-10-31T23:59:59.999999Z",
                       "2022-11-01T00:00:00Z", "2024-13-01T00:00:00Z", "2024-03-10T12:00:00.000Z",
                       "20240310T120000Z", "2024-W10-7T12:00:00Z", "2024-03-10T12:00:00-00:00"]:  # fmt: skip
        events.append(post_event("c", created_at=created_at, seen_at="2024-03-10T12:00:00Z"))
    late = post_event("late", created_at="2024-03-11T12:00:00.001Z", seen_at="2024-03-10T12:00:00Z")
    events.append(late)  # one day and 1 ms ahead of the relay's clock (the event's time_us adds 1 ms)
    events.append(post_event("edge", created_at="2024-03-11T12:00:00.000999Z", seen_at="2024-03-10T12:00:00Z"))
    events.append(post_event("ahead", created_at="2024-03-11T12:00:00.001001Z", seen_at="2024-03-10T12:00:00Z"))
    for value in [0, -1, 10**18, 2**63, 2**64 - 1, 1.7e15, "1710072000000000", True, None, 1420070400000000,
                  4102444799999999, 4102444800000000]:  # fmt: skip
        events.append({**post_event("t"), "time_us": value})
    for did in ["did:plc:ok", "did:web:example.com", "did:PLC:x", "did:plc:", "did:plc:a b", "did:plc:x%20y",
                "did:plc:" + "a" * 2040, "did:plc:" + "a" * 2041, "did:plc:x:", 5]:  # fmt: skip
        events.append(post_event("d", did=did))  # type: ignore[arg-type]
    for rkey in [".", "..", "...", "k" * 512, "k" * 513, "a:b~c_d-e.f", "a/b", "", 'q"q', 5]:
        events.append(post_event(rkey))  # type: ignore[arg-type]
    records: list[dict[str, Any]] = [
        {"text": ""}, {"text": "x" * 3000}, {"text": "x" * 3001}, {"text": "é" * 1500}, {"text": "é" * 1501},
        {"text": "€" * 1000}, {"text": "€" * 1001}, {"text": 'quote " back \\ slash / tab \t nl \n cr \r'},
        {"text": "emoji 😀 and U+2028 \u2028 and BOM \ufeff"}, {"text": "NaN Infinity inf nan 1e400 [1,]"},
        {"text": None}, {"text": 5}, {"text": ["a"]},
        {"langs": []}, {"langs": None}, {"langs": ["en", "fr-CA"]}, {"langs": ["en", 1]}, {"langs": "en"},
        {"langs": [None]}, {"langs": [["en"]]},
        {"embed": {}}, {"embed": None}, {"embed": {"$type": None}}, {"embed": {"$type": 5}}, {"embed": []},
        {"embed": {"$type": "app.bsky.embed.external", "external": {"uri": "https://x"}}}, {"embed": "x"},
        {"facets": []}, {"facets": None}, {"facets": {}}, {"facets": "x"},
        {"facets": [{"index": {"byteStart": 0, "byteEnd": 5}, "features": [
            {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/<a>&b"}]}]},
        {"facets": [0.1, 1e-7, 5e-324, 1.7976931348623157e308, -0.0, 12345678901234567890123, 2.5e10, -1.5]},
        {"facets": [{"a": 1, "b": {"c": [True, False, None]}}]}, {"facets": [[[[[[]]]]]]},
        {"labels": {}}, {"labels": []}, {"labels": {"values": [{"val": "porn"}]}}, {"labels": "x"},
        {"reply": None}, {"reply": {}}, {"reply": "x"}, {"reply": {"parent": None}}, {"reply": {"parent": {}}},
        {"reply": {"parent": {"uri": 5}}}, {"reply": {"parent": {"uri": "at://p"}, "root": {"uri": "at://r"}}},
        {"reply": {"root": {"uri": "at://r"}}}, {"reply": {"parent": "at://p"}},
        {"$type": None}, {"$type": "app.bsky.feed.like"}, {"$type": 5},
    ]  # fmt: skip
    events += [with_record(**fields) for fields in records]
    events += [without(post_event("m"), *path) for path in [("kind",), ("time_us",), ("did",), ("commit",),
               ("commit", "collection"), ("commit", "operation"), ("commit", "rkey"), ("commit", "cid"),
               ("commit", "record"), ("commit", "record", "$type"), ("commit", "record", "text"),
               ("commit", "record", "createdAt"), ("commit", "record", "langs")]]  # fmt: skip
    events += [{**post_event("cid"), "commit": {**post_event("cid")["commit"], "cid": cid}} for cid in [5, None, ""]]
    events += [{**post_event("k"), "kind": kind} for kind in ["Commit", "account", 5, None]]
    events += [{**post_event("c"), "commit": value} for value in [None, [], "x", 5]]
    events += [{**post_event("r"), "commit": {**post_event("r")["commit"], "record": v}} for v in [None, [], "x"]]
    lines = [e if isinstance(e, str) else dumps(e) for e in events]
    lines += [
        text[:-1] + ', "did": "did:plc:other"}',  # a repeated key at the top
        text.replace('"text": "hello bluesky"', '"text": "a", "text": "b"'),
        text.replace('"text": "hello bluesky"', '"text": "a", "\\u0074ext": "b"'),  # repeated through an escape
        text.replace('"rev": "3kabcdefghij2"', '"rev": 1, "rev": 2'),  # repeated where nothing reads it
        text.replace('"$type": "app.bsky.feed.post"', '"$type": "app.bsky.feed.post", "$type": "x"'),
        dumps(with_record(embed={"$type": "a"})).replace('"$type": "a"', '"$type": "a", "$type": "b"'),
        dumps(with_record(reply={"parent": {"uri": "at://p"}})).replace('"uri": "at://p"', '"uri": "1", "uri": "2"'),
        dumps(with_record(facets=[{"k": 1}])).replace('"k": 1', '"k": 1, "k": 2'),  # Python keeps the last
        dumps(with_record(labels={"k": 1})).replace('"k": 1', '"k": 1, "k": [2]'),
        text.replace('"kind": "commit"', '"kind": "\\u0063ommit"'),
        text.replace('"hello bluesky"', '"hello \\ud83d\\ude00 \\u003c\\/b\\u003e"'),
        text.replace('"hello bluesky"', '"lone \\udc80"'), text.replace('"hello bluesky"', '"nul \\u0000"'),
        text.replace('"langs": ["en"]', '"langs": ["en",]'), text.replace('"langs": ["en"]', '"langs": [NaN]'),
        text.replace('"langs": ["en"]', '"langs": ["en"], "extra": Infinity'),
        text.replace('"langs": ["en"]', '"langs": ["en"], "extra": 1e400'),
        text.replace('"langs": ["en"]', '"langs": ["en"], "extra": 10000000000000000000000000000'),
        text.replace('"langs": ["en"]', '"langs": ["en"], "extra": -1e-400'),
        # Facets and labels: repeated keys in each object of the shapes whose keys are counted, and beyond them.
        dumps(with_record(facets=[{"index": {"byteStart": 0, "B": 1}, "features": []}])).replace('"B"', '"byteStart"'),
        dumps(with_record(facets=[{"features": [{"$type": "t", "uri": "a", "U": "b"}]}])).replace('"U"', '"uri"'),
        dumps(with_record(facets=[{"index": {}, "I": {}}])).replace('"I"', '"index"'),
        dumps(with_record(facets=[{"features": [5, {"y": {"k": 1, "K": 2}}]}])).replace('"K"', '"k"'),
        dumps(with_record(labels={"values": [{"val": "a"}, {"val": "b", "V": "c"}]})).replace('"V"', '"val"'),
        dumps(with_record(labels={"values": [{"val": "a"}], "V": []})).replace('"V"', '"values"'),
        dumps(with_record(labels={"values": [{"val": "a", "x": {"k": 1, "K": 2}}]})).replace('"K"', '"k"'),
        dumps(with_record(facets=[{"features": [{"x": {"k": 1}}]}])),
        dumps(with_record(facets=[{"index": {"byteStart": 1}, "features": [{"uri": "https://a.b/c?d=1:2,3[4]"}]}])),
        dumps(with_record(facets=[{"index": {"byteStart": n}} for n in BIG_INTEGERS])),
        dumps(with_record(facets=[{"index": {"byteStart": 0}, "features": [{"tag": "x"}]}])).replace("0}", "-0}"),
        dumps(with_record(facets=[{"index": {"byteStart": 0}}])).replace("0}", "0.0}"),
        dumps(with_record(facets=[{"index": {"byteStart": 0}}])).replace("0}", "1E2}"),
        dumps(with_record(facets=[{"features": [{"tag": 'q"q \\ t\t \x7f \u2028 /'}]}])),
        dumps(with_record(facets=[{"features": [{"tag": "x"}]}])).replace('"x"', '"\\u00e9\\/\\u0041"'),
        dumps(with_record(labels={"values": [{"val": "[{" * 40}]})),
        text + "\r", " \t" + text + " ", "\ufeff" + text, text + " x", text[:-1], "", " ", "[]", '"x"', "null",
        text.replace("{", "{ /* c */ ", 1), text.replace('"hello bluesky"', '"tab\there"'),
        text.replace('"langs": ["en"]', '"facets": [' + "[" * 63 + "]" * 63 + "]"),
        text.replace('"langs": ["en"]', '"facets": [' + "[" * 64 + "]" * 64 + "]"),
        text.replace('"langs": ["en"]', '"labels": {"a": ' + "[" * 64 + "]" * 64 + "}"),
        text.replace('"langs": ["en"]', '"langs": ["en"], "extra": ' + "[" * 600 + "]" * 600),
        text.replace('"langs": ["en"]', '"langs": ["en"], "extra": ' + '{"a": ' * 2000 + "1" + "}" * 2000),
    ]  # fmt: skip
    return lines


def test_crafted_lines_decided_fast_have_pythons_outcome():
    lines = crafted()
    fast = assert_same_as_python(lines)
    # The good lines do take the fast path: the plain post, its compact form, the deletes, the like.
    assert {0, 1, 2, 3, 4} <= set(fast)
    assert fast[3]["day"] == FIRST  # a delete seen before the first partition belongs to the first partition
    assert len(fast) > len(lines) // 4
    # Facets and self-labels of the shapes posts carry are stored as DuckDB writes them, without Python.
    shaped = [
        i for i, line in enumerate(lines) if '"uri": "https://example.com/<a>&b"' in line or '"val": "porn"' in line
    ]
    assert len(shaped) == 2 and set(shaped) <= set(fast)


def test_without_a_first_partition_nothing_is_clamped():
    lines = crafted()
    fast = assert_same_as_python(lines, first_day=None)
    assert fast[3]["day"] == date(2024, 3, 1)


JSON_VALUES: list[Any] = [None, True, False, 0, -1, 1.5, 2**40, 10**20, "", "x", "did:plc:a", "2024-03-10T12:00:00Z",
                          [], ["en"], [1, "a"], {}, {"uri": "at://x"}, {"$type": "t"}, {"a": {"b": [1]}}]  # fmt: skip


MUTATED_KEYS = ["text", "createdAt", "langs", "embed", "facets", "labels", "reply", "parent", "root", "uri", "$type",
                "cid", "rkey", "did", "kind", "time_us", "operation", "extra"]  # fmt: skip


def mutate(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Replace, drop or add a key at a random object of the event (the record and its parts most often)."""
    event = json.loads(json.dumps(event))
    objects = [event, event["commit"], event["commit"]["record"]]
    record = event["commit"]["record"]
    for key in ("reply", "embed"):
        if isinstance(record.get(key), dict):
            objects.append(record[key])
            objects.extend(v for v in record[key].values() if isinstance(v, dict))
    for facet in record.get("facets") or []:  # the objects whose keys the fast path counts
        objects += [facet, *(v for v in facet.values() if isinstance(v, dict)), *facet.get("features", [])]
    if isinstance(record.get("labels"), dict):
        objects += [record["labels"], *record["labels"].get("values", [])]
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(objects)
        action = rng.random()
        if action < 0.45 and target:
            target[rng.choice(list(target))] = rng.choice(JSON_VALUES)
        elif action < 0.6 and target:
            del target[rng.choice(list(target))]
        else:
            target[rng.choice(MUTATED_KEYS)] = rng.choice(JSON_VALUES)
    return event


@pytest.mark.parametrize("seed", [1, 2])
def test_random_mutations_decided_fast_have_pythons_outcome(seed):
    rng = random.Random(seed)
    bases = [post_event("b1"), post_event("b2", reply={"parent": {"uri": "at://p"}, "root": {"uri": "at://r"}},
             embed={"$type": "app.bsky.embed.images"}, facets=[{"index": {"byteStart": 0}}], labels={"v": []}),
             post_event("b4", facets=[{"index": {"byteStart": 0, "byteEnd": 4}, "features": [
                 {"$type": "app.bsky.richtext.facet#tag", "tag": "vote"}]}],
                 labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "graphic-media"}]}),
             delete_event("b3", "2024-03-10T00:00:00Z") | {"commit": {**delete_event("b3", "2024-03-10T00:00:00Z")
             ["commit"], "record": {}}}]  # fmt: skip
    lines = [dumps(mutate(rng.choice(bases), rng), compact=rng.random() < 0.5) for _ in range(3000)]
    fast = assert_same_as_python(lines)
    assert len(fast) > 300  # mutations that keep a line good are common enough to prove the fast path decides them
