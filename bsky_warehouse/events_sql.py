"""DuckDB's fast path for the Jetstream lines whose outcome it can vouch for: the same outcome as `events.py`.

Parsing every line in Python cost ~40 µs a line in the archive index, seven times DuckDB's own `read_ndjson` of
the same file. Here a batch of lines is parsed by DuckDB in two passes over each line (its keys, then its values
in one `from_json`), and a line takes the fast path only when every check `events.parse_event` would make on the way to
accepting it is known to pass: a post, a delete, or an event of another collection (ignored by rule). Every
other line, and so every line that might be a reject, is sent back to `events.py`, which decides it as before.
A line is sent back too wherever DuckDB's JSON reader is looser than Python's, or picks another value:
  * NaN and Infinity, numbers whose exponent has three digits or whose digits run past 24 (DuckDB reads them,
    orjson refuses them or a double cannot hold them), trailing commas, raw control characters, `\\u0000`;
  * JSON that may nest deeper than orjson allows (more than MAX_OPENERS brackets in the line);
  * a key repeated in any object the parser reads (Python keeps the last value; DuckDB the first);
  * a `createdAt` outside `YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)` with the fields in range (DuckDB reads
    24:00 and other forms that `datetime.fromisoformat` refuses or reads differently).
`facets` and `labels` are stored as the JSON text DuckDB writes when it is the text Python writes (compact, see
`events.json_text`): no escape in it, no floating-point number (their shortest forms differ), no deeper nesting
than Python allows, and every key read once. DuckDB keeps a repeated key where Python keeps the last, so each object
of the known shapes (a facet, its index and features; the self-labels and their values) has its distinct keys
counted, and the subtree is taken only when they add up to every key in its text; any other line is Python's.
`tests/test_events_sql.py` holds both paths to the same outcomes over crafted and randomly mutated lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from bsky_warehouse.events import (
    DID_PATTERN,
    EARLIEST_CREATED_AT,
    EARLIEST_TIME_US,
    LATEST_TIME_US,
    MAX_CLOCK_SKEW,
    MAX_DID_LENGTH,
    MAX_JSON_DEPTH,
    MAX_TEXT_BYTES,
    POST_COLLECTION,
    RKEY_PATTERN,
)
from bsky_warehouse.resources.warehouse import registered

# Anything DuckDB might read differently from Python, anywhere in the line (inside strings too: such a line only
# loses the fast path).
SUSPICIOUS = (
    r"\\u0000|[:,\[][ \t\r\n]*[-+]?(?i:nan|inf)|[:,\[][ \t\r\n]*-?[0-9]+(\.[0-9]*)?[eE][+-]?[0-9]{3}|[0-9]{25}"
    r"|,[ \t\r\n]*[\]}]"
    r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
)
# orjson refuses JSON nested past 1,024 levels and Python's json module runs out of stack near 1,000, where DuckDB
# reads on: a line with more brackets than this (so possibly nested deeper) is Python's to decide.
MAX_OPENERS = 512
CREATED_AT = (
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
# What the parser reads, as DuckDB's `from_json` structure: every value as JSON text, one parse of the line. The
# reply and the embed are read from their own (small) JSON afterwards.
_STRUCTURE = json.dumps({
    "kind": "JSON", "time_us": "JSON", "did": "JSON",
    "commit": {"collection": "JSON", "operation": "JSON", "rkey": "JSON", "cid": "JSON",
               "record": {"$type": "JSON", "text": "JSON", "createdAt": "JSON", "langs": "JSON", "embed": "JSON",
                          "facets": "JSON", "labels": "JSON", "reply": "JSON"}},
})  # fmt: skip
# The objects whose keys the parser reads: each must hold every key once (Python keeps a repeated key's last
# value, DuckDB its first).
_LINE_OBJECTS = "['$', '$.commit', '$.commit.record']"
_REPLY_OBJECTS = "['$', '$.parent', '$.root']"
_REPLY_VALUES = "['$.parent', '$.parent.uri', '$.root', '$.root.uri']"
OBJECT, ARRAY, STRING = "{", "[", '"'


# A value is minified JSON text, so its first character says what it is. A path that reaches a field proves each
# object on the way is an object (a string has no fields).
def _absent(name: str) -> str:
    """Missing or JSON null: what `dict.get` reads as None."""
    return f"coalesce(v_{name} = 'null', true)"


def _is(name: str, first: str) -> str:
    return f"coalesce(left(v_{name}, 1) = '{first}', false)"


def _string(name: str) -> str:
    return f"(v_{name} ->> '$')"


def _unique(keys: str, n: int) -> str:
    return " AND ".join(f"coalesce(len(list_distinct({keys}[{i}])) = len({keys}[{i}]), true)" for i in range(1, n + 1))


def _openers(text: str) -> str:
    return f"(strlen({text}) - strlen(replace(replace({text}, '[', ''), '{{', '')))"


# DuckDB's text of a subtree that Python would write differently: an escape, a floating-point number, or an integer
# past 64 bits, which orjson reads as a float and DuckDB keeps digit for digit (a number token follows `:`, `,` or
# `[` in minified JSON).
_NOT_PYTHONS_TEXT = r"\\|[:,\[]-?[0-9]+[.eE]|[:,\[][0-9]{20}|[:,\[]-[0-9]{19}"


def _distinct_keys(name: str, path: str) -> str:
    """How many distinct keys the objects at `path` (a wildcard path, or `$`) hold, summed."""
    if "*" not in path:
        return f"coalesce(list_unique(json_keys(v_{name}, '{path}')), 0)"
    return f"coalesce(list_sum(list_transform(json_keys(v_{name}, '{path}'), lambda k: list_unique(k))), 0)"


def _pythons_json(name: str, paths: tuple[str, ...]) -> str:
    """The subtree's DuckDB text is Python's: nothing written differently, nesting within Python's limit, and the
    distinct keys of the objects at `paths` are every key in the text (with no escape, `":` ends a key and only a
    key), so no object lies elsewhere and none repeats a key."""
    keys = " + ".join(_distinct_keys(name, p) for p in paths)
    text = f"v_{name}"
    return f"""(NOT regexp_matches({text}, '{_NOT_PYTHONS_TEXT}') AND {_openers(text)} <= {MAX_JSON_DEPTH}
        AND (strlen({text}) - strlen(replace({text}, '":', ''))) // 2 = {keys})"""


FACET_OBJECTS = ("$[*]", "$[*].index", "$[*].features[*]")
LABEL_OBJECTS = ("$", "$.values[*]")

_US_PER_DAY = int(MAX_CLOCK_SKEW.total_seconds()) * 1_000_000
_EARLIEST_US = int(EARLIEST_CREATED_AT.timestamp()) * 1_000_000
_R = "s.commit.record"

# Two statements, the second reading the first one's table: in one query DuckDB's optimizer would copy the parse
# into every expression that reads it and run it again for each.
PARSE_SQL = f"""
    SELECT pos, try(json_keys(line, {_LINE_OBJECTS})) AS keys, try(from_json(line, '{_STRUCTURE}')) AS s
    FROM fast_batch
    WHERE NOT regexp_matches(line, '{SUSPICIOUS}')
      AND {_openers("line")} <= {MAX_OPENERS}
"""
EVENT_SQL = f"""
    SELECT *, CASE
        WHEN collection <> '{POST_COLLECTION}' THEN 'ignore'
        WHEN operation = 'delete' THEN 'delete'
        ELSE 'post' END AS kind,
        CASE WHEN {_is("reply", OBJECT)} THEN json_keys(v_reply, {_REPLY_OBJECTS}) END AS reply_keys,
        CASE WHEN {_is("reply", OBJECT)} THEN json_extract(v_reply, {_REPLY_VALUES}) END AS reply_values,
        CASE WHEN {_is("embed", OBJECT)} THEN json_keys(v_embed) END AS embed_keys,
        CASE WHEN {_is("embed", OBJECT)} THEN json_extract(v_embed, '$."$type"') END AS v_embed_type
    FROM (
        SELECT pos, keys[3] AS record_keys, s.commit.cid AS v_cid, {_R}."$type" AS v_record_type, {_R}.text AS v_text,
               {_R}.createdAt AS v_created_at, {_R}.langs AS v_langs, {_R}.embed AS v_embed,
               {_R}.reply AS v_reply, {_R}.facets AS v_facets, {_R}.labels AS v_labels,
               s.commit.operation AS v_operation, s.commit.rkey AS v_rkey,
               CASE WHEN json_type(s.time_us) IN ('UBIGINT', 'BIGINT') THEN TRY_CAST(s.time_us AS BIGINT) END
                   AS time_us,
               s.did ->> '$' AS did, s.commit.collection ->> '$' AS collection,
               s.commit.operation ->> '$' AS operation, s.commit.rkey ->> '$' AS rkey
        FROM fast_parsed
        WHERE keys IS NOT NULL AND s IS NOT NULL AND {_unique("keys", 3)}
          AND s.kind = '"commit"' AND left(s.did, 1) = '"' AND left(s.commit.collection, 1) = '"'
    )
    WHERE time_us >= {EARLIEST_TIME_US} AND time_us < {LATEST_TIME_US}
      AND strlen(did) <= {MAX_DID_LENGTH} AND regexp_full_match(did, '{DID_PATTERN.pattern}')
      AND (collection <> '{POST_COLLECTION}' OR (
            {_is("operation", STRING)} AND operation IN ('create', 'update', 'delete')
            AND {_is("rkey", STRING)} AND rkey NOT IN ('.', '..')
            AND regexp_full_match(rkey, '{RKEY_PATTERN.pattern}')))
"""
# One pass over the parsed lines, no union (it would materialize the events for its two branches): a post passes
# its checks, a delete or an ignore is taken as it is.
ROW_SQL = f"""
SELECT pos, kind, time_us,
       CASE kind WHEN 'post' THEN created_at::DATE ELSE make_timestamp(time_us)::DATE END AS day,
       'at://' || did || '/{POST_COLLECTION}/' || rkey AS uri,
       CASE WHEN {_is("cid", STRING)} THEN {_string("cid")} END AS cid,
       did AS author_did,
       {_string("text")} AS text,
       created_at,
       CASE WHEN {_is("langs", ARRAY)} AND v_langs <> '[]' THEN from_json(v_langs, '["VARCHAR"]') END AS langs,
       CASE WHEN {_is("parent", OBJECT)} THEN {_string("parent_uri")} END AS reply_parent_uri,
       CASE WHEN {_is("root", OBJECT)} THEN {_string("root_uri")} END AS reply_root_uri,
       CASE WHEN {_is("embed_type", STRING)} THEN {_string("embed_type")} END AS embed_type,
       CASE WHEN {_is("facets", ARRAY)} THEN v_facets END AS facets,
       CASE WHEN {_is("labels", OBJECT)} THEN v_labels END AS labels,
       make_timestamp(time_us)::TIMESTAMPTZ AS deleted_at
FROM (
    SELECT *, CASE WHEN kind = 'post' THEN TRY_CAST({_string("created_at")} AS TIMESTAMPTZ) END AS created_at
    FROM (SELECT *, reply_values[1] AS v_parent, reply_values[2] AS v_parent_uri, reply_values[3] AS v_root,
                 reply_values[4] AS v_root_uri
          FROM ({EVENT_SQL}))
)
WHERE kind <> 'post' OR (
          (v_record_type = '"{POST_COLLECTION}"' OR (v_record_type IS NULL AND NOT list_contains(record_keys, '$type')))
          AND {_is("text", STRING)} AND strlen({_string("text")}) <= {MAX_TEXT_BYTES}
          AND {_is("created_at", STRING)} AND regexp_full_match({_string("created_at")}, '{CREATED_AT}')
          AND ({_absent("langs")} OR ({_is("langs", ARRAY)}
               AND coalesce(list_bool_and(list_transform(json_type(v_langs, '$[*]'), lambda t: t = 'VARCHAR')), true)))
          AND ({_absent("embed")} OR ({_is("embed", OBJECT)} AND {_unique("[embed_keys]", 1)}
               AND ({_absent("embed_type")} OR {_is("embed_type", STRING)})))
          AND ({_absent("facets")} OR ({_is("facets", ARRAY)} AND {_pythons_json("facets", FACET_OBJECTS)}))
          AND ({_absent("labels")} OR ({_is("labels", OBJECT)} AND {_pythons_json("labels", LABEL_OBJECTS)}))
          AND ({_absent("reply")} OR ({_is("reply", OBJECT)} AND {_unique("reply_keys", 3)}
               AND ({_absent("parent")} OR ({_is("parent", OBJECT)} AND {_is("parent_uri", STRING)}))
               AND ({_absent("root")} OR ({_is("root", OBJECT)} AND {_is("root_uri", STRING)}))))
    AND epoch_us(created_at) >= {_EARLIEST_US} AND epoch_us(created_at) <= time_us + {_US_PER_DAY})
"""


@dataclass
class FastResult:
    """A batch's lines that DuckDB decided, in the temp table `fast_lines` (one row per line: kind `post`,
    `delete` or `ignore`, its `route` day and its row's columns), and the batch positions left for Python."""

    decided: int
    slow: list[int]


def classify(con: duckdb.DuckDBPyConnection, lines: list[str], first_day: date | None) -> FastResult:
    """Decide what DuckDB can of `lines` (valid UTF-8, each within the line limit) into `fast_lines`."""
    batch = pd.DataFrame({"pos": np.arange(len(lines), dtype=np.int64), "line": pd.Series(lines, dtype=object)})
    try:
        with registered(con, "fast_batch", batch):
            con.execute(f"CREATE OR REPLACE TEMP TABLE fast_parsed AS {PARSE_SQL}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE fast_lines AS {ROW_SQL}")
    finally:
        con.execute("DROP TABLE IF EXISTS fast_parsed")
    if first_day is not None:
        # A post before the first partition is a reject (events.within_partitions): Python's to record. Any other
        # line seen before it belongs to the first partition.
        con.execute("DELETE FROM fast_lines WHERE kind = 'post' AND day < $first", {"first": first_day})
        con.execute("UPDATE fast_lines SET day = $first WHERE day < $first", {"first": first_day})
    slow = con.execute(
        "SELECT i FROM range($n) r(i) WHERE i NOT IN (SELECT pos FROM fast_lines) ORDER BY i", {"n": len(lines)}
    ).fetchall()
    return FastResult(len(lines) - len(slow), [i for (i,) in slow])
