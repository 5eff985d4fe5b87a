"""Parsing Jetstream v1 events into warehouse rows, one outcome per input line.

Pure functions: every line becomes exactly one `Outcome` (a post, a delete, a rejection with a reason, or an
event ignored by rule), so a caller can always account for every line it read.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import orjson

POST_COLLECTION = "app.bsky.feed.post"
MAX_TEXT_BYTES = 3000  # app.bsky.feed.post lexicon: text maxLength (bytes)
EARLIEST_CREATED_AT = datetime(2022, 11, 1, tzinfo=UTC)  # before Bluesky's first posts
MAX_CLOCK_SKEW = timedelta(days=1)  # createdAt may run ahead of the relay's clock, not by days
# time_us is the relay's clock: nothing was seen before Bluesky existed, and a day past 2099 is no partition anyone
# will run (a reject or delete owned by it would never be stored).
EARLIEST_TIME_US = int(EARLIEST_CREATED_AT.timestamp()) * 1_000_000
LATEST_TIME_US = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
# Fields stored as JSON text are walked by recursive serializers: cap their nesting well below Python's recursion
# limit so the outcome never depends on how deep the caller's stack is. Real facets and labels nest about 5 deep.
MAX_JSON_DEPTH = 64
# atproto syntax (https://atproto.com/specs/did, https://atproto.com/specs/record-key).
DID_PATTERN = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
MAX_DID_LENGTH = 2048
RKEY_PATTERN = re.compile(r"[A-Za-z0-9._:~-]{1,512}")

OutcomeKind = Literal["post", "delete", "reject", "ignore"]


@dataclass(slots=True)
class Outcome:
    """What one line became. `day` is the partition that owns it (None: no trustworthy date)."""

    kind: OutcomeKind
    day: date | None = None
    time_us: int | None = None
    row: dict[str, Any] | None = None
    reason: str | None = None


class RecordError(ValueError):
    """A record that cannot be loaded; the message is the stored reason."""


def parse_created_at(value: Any) -> datetime:
    """RFC 3339 `createdAt` to an aware UTC datetime; a missing offset is read as UTC, as the AppView does."""
    if not isinstance(value, str):
        raise RecordError("wrong_type:record.createdAt")
    text = value.strip()
    if not text or not text[0].isdigit():
        raise RecordError("invalid_created_at")
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError("invalid_created_at") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # a valid local time whose offset moves it before year 1 or past 9999
        raise RecordError("created_at_out_of_range") from None


def time_us_to_datetime(time_us: int) -> datetime:
    return datetime.fromtimestamp(time_us / 1_000_000, UTC)


def check_time_us(time_us: int) -> int:
    """An event's `time_us` if it can be a relay's clock reading; the reason names which bound it breaks."""
    if time_us <= 0:
        raise RecordError("time_us_not_positive")
    if not EARLIEST_TIME_US <= time_us < LATEST_TIME_US:
        raise RecordError("time_us_out_of_range")
    return time_us


def _day_of_time_us(time_us: Any) -> date | None:
    """The day a line was seen, or None when its time_us is missing or implausible (the line is then undated, so
    it is stored keyed by file and line rather than under a day no run will ever ask for)."""
    if isinstance(time_us, int) and not isinstance(time_us, bool) and EARLIEST_TIME_US <= time_us < LATEST_TIME_US:
        return time_us_to_datetime(time_us).date()
    return None


def check_did(did: str) -> str:
    """A DID in atproto syntax; anything else would make a uri that names no repository."""
    if len(did) > MAX_DID_LENGTH or DID_PATTERN.fullmatch(did) is None:
        raise RecordError("invalid_did")
    return did


def check_rkey(rkey: str) -> str:
    """A record key in atproto syntax (`.` and `..` are reserved); anything else would make an ambiguous uri."""
    if rkey in (".", "..") or RKEY_PATTERN.fullmatch(rkey) is None:
        raise RecordError("invalid_rkey")
    return rkey


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"wrong_type:{field}")
    if "\x00" in value:
        raise RecordError(f"nul_character:{field}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"invalid_unicode:{field}") from None
    return value


def _optional_text(value: Any, field: str) -> str | None:
    return None if value is None else _text(value, field)


def json_depth(value: Any, limit: int) -> int:
    """How deep containers nest in a decoded JSON value, counting no further than `limit + 1`. Iterative, so a
    hostile value cannot exhaust the stack."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def json_text(value: Any, field: str) -> str:
    """A decoded JSON value as the text stored in a JSON column: bounded nesting, finite numbers, valid Unicode.
    Compact, as DuckDB writes JSON, so the fast path (events_sql.py) can store DuckDB's own text of the value."""
    if json_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise RecordError(f"too_deep:{field}")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise RecordError(f"invalid_number:{field}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"invalid_unicode:{field}") from None
    return text


def _optional_uri(container: Any, key: str, field: str) -> str | None:
    if container is None:
        return None
    if not isinstance(container, dict):
        raise RecordError(f"wrong_type:{field}")
    ref = container.get(key)
    if ref is None:
        return None
    if not isinstance(ref, dict) or not isinstance(ref.get("uri"), str):
        raise RecordError(f"wrong_type:{field}.{key}")
    return _text(ref["uri"], f"{field}.{key}.uri")


def post_row(did: str, rkey: str, cid: Any, record: Any, time_us: int | None) -> dict[str, Any]:
    """Validate an `app.bsky.feed.post` record and flatten it to the `raw_posts` columns."""
    if not isinstance(record, dict):
        raise RecordError("missing_field:commit.record" if record is None else "wrong_type:commit.record")
    record_type = record.get("$type", POST_COLLECTION)
    if record_type != POST_COLLECTION:
        raise RecordError("wrong_record_type")
    if "text" not in record:
        raise RecordError("missing_field:record.text")
    text = _text(record["text"], "record.text")
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise RecordError("text_too_long")
    if "createdAt" not in record:
        raise RecordError("missing_field:record.createdAt")
    created_at = parse_created_at(record["createdAt"])
    upper = time_us_to_datetime(time_us) + MAX_CLOCK_SKEW if time_us else None
    if created_at < EARLIEST_CREATED_AT or (upper is not None and created_at > upper):
        raise RecordError("created_at_out_of_range")
    langs = record.get("langs")
    if langs is not None and not (isinstance(langs, list) and all(isinstance(x, str) for x in langs)):
        raise RecordError("wrong_type:record.langs")
    embed = record.get("embed")
    if embed is not None and not isinstance(embed, dict):
        raise RecordError("wrong_type:record.embed")
    facets = record.get("facets")
    if facets is not None and not isinstance(facets, list):
        raise RecordError("wrong_type:record.facets")
    labels = record.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise RecordError("wrong_type:record.labels")
    reply = record.get("reply")
    return {
        "uri": f"at://{did}/{POST_COLLECTION}/{rkey}",
        "cid": _text(cid, "commit.cid") if isinstance(cid, str) else None,
        "author_did": did,
        "text": text,
        "created_at": created_at,
        "langs": [_text(x, "record.langs") for x in langs] if langs else None,
        "reply_parent_uri": _optional_uri(reply, "parent", "record.reply"),
        "reply_root_uri": _optional_uri(reply, "root", "record.reply"),
        "embed_type": _optional_text(embed.get("$type"), "record.embed.$type") if embed else None,
        "facets": json_text(facets, "record.facets") if facets is not None else None,
        "labels": json_text(labels, "record.labels") if labels is not None else None,
    }


def _require(obj: dict[str, Any], key: str, kind: type, field: str) -> Any:
    if key not in obj or obj[key] is None:
        raise RecordError(f"missing_field:{field}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError(f"wrong_type:{field}")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a double")
    return value


def decode_line(line: bytes) -> Any:
    """JSON-decode a line; the error names what is wrong with the bytes.

    orjson refuses lone surrogates that the json module accepts, so the json module gets a second look (the
    field checks then name the surrogate); it is held to what orjson accepts otherwise: no NaN or Infinity, no
    number that overflows a double. A leading UTF-8 BOM is read past, as the json module does.
    """
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError("invalid_utf8") from None
        try:
            return json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float)
        except RecursionError:
            raise RecordError("json_too_deep") from None
        except ValueError:
            raise RecordError("invalid_json") from None


def parse_event(line: bytes) -> Outcome:
    """One Jetstream v1 event line to its outcome. Posts are owned by their createdAt day, the rest by time_us."""
    if not line.strip():
        return Outcome("ignore", reason="blank_line")
    time_us: Any = None
    try:
        event = decode_line(line)
        if not isinstance(event, dict):
            raise RecordError("not_an_object")
        time_us = event.get("time_us")
        kind = event.get("kind")
        if kind in ("identity", "account"):
            return Outcome("ignore", day=_day_of_time_us(time_us), reason=f"{kind}_event")
        if kind != "commit":
            raise RecordError("missing_field:kind" if kind is None else "unknown_event_kind")
        time_us = check_time_us(_require(event, "time_us", int, "time_us"))
        did = check_did(_text(_require(event, "did", str, "did"), "did"))
        commit = _require(event, "commit", dict, "commit")
        collection = _require(commit, "collection", str, "commit.collection")
        if collection != POST_COLLECTION:
            return Outcome("ignore", day=_day_of_time_us(time_us), reason="other_collection")
        operation = _require(commit, "operation", str, "commit.operation")
        rkey = check_rkey(_text(_require(commit, "rkey", str, "commit.rkey"), "commit.rkey"))
        if operation == "delete":
            return Outcome(
                "delete",
                day=_day_of_time_us(time_us),
                time_us=time_us,
                row={
                    "uri": f"at://{did}/{POST_COLLECTION}/{rkey}",
                    "deleted_at": time_us_to_datetime(time_us),
                },
            )
        if operation not in ("create", "update"):
            raise RecordError("unknown_operation")
        row = post_row(did, rkey, commit.get("cid"), commit.get("record"), time_us)
        return Outcome("post", day=row["created_at"].date(), time_us=time_us, row=row)
    except RecordError as err:
        return Outcome("reject", day=_day_of_time_us(time_us), time_us=None, reason=str(err))


def within_partitions(outcome: Outcome, first_day: date) -> Outcome:
    """The outcome as the partitions can hold it: nothing may be owned by a day before the first partition, since
    no run ever loads such a day.

    A post created before it is rejected as `before_first_partition`, owned by the day it was seen, so that day's
    run stores and counts it; any other line seen before the first partition belongs to the first partition.
    """
    if outcome.day is None or outcome.day >= first_day:
        return outcome
    if outcome.kind == "post":
        seen = _day_of_time_us(outcome.time_us)
        day = first_day if seen is None or seen < first_day else seen
        return Outcome("reject", day=day, reason="before_first_partition")
    return replace(outcome, day=first_day)


def printable_raw(line: bytes) -> str:
    """The rejected line as storable text: invalid bytes and NULs escaped, nothing dropped."""
    return line.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
