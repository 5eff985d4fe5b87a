"""Parsing Jetstream v1 events into warehouse rows, one outcome per input line.

Pure functions: every line becomes exactly one `Outcome` (a post, a delete, a rejection with a reason, or an
event ignored by rule), so a caller can always account for every line it read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import orjson

POST_COLLECTION = "app.bsky.feed.post"
MAX_TEXT_BYTES = 3000  # app.bsky.feed.post lexicon: text maxLength (bytes)
EARLIEST_CREATED_AT = datetime(2022, 11, 1, tzinfo=UTC)  # before Bluesky's first posts
MAX_CLOCK_SKEW = timedelta(days=1)  # createdAt may run ahead of the relay's clock, not by days

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
    return moment.astimezone(UTC)


def time_us_to_datetime(time_us: int) -> datetime:
    return datetime.fromtimestamp(time_us / 1_000_000, UTC)


def _day_of_time_us(time_us: Any) -> date | None:
    if isinstance(time_us, int) and not isinstance(time_us, bool) and 0 < time_us < 10**17:
        return time_us_to_datetime(time_us).date()
    return None


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
        "cid": cid if isinstance(cid, str) else None,
        "author_did": did,
        "text": text,
        "created_at": created_at,
        "langs": [_text(x, "record.langs") for x in langs] if langs else None,
        "reply_parent_uri": _optional_uri(reply, "parent", "record.reply"),
        "reply_root_uri": _optional_uri(reply, "root", "record.reply"),
        "embed_type": embed.get("$type") if embed else None,
        "facets": json.dumps(facets, ensure_ascii=False) if facets is not None else None,
        "labels": json.dumps(labels, ensure_ascii=False) if labels is not None else None,
    }


def _require(obj: dict[str, Any], key: str, kind: type, field: str) -> Any:
    if key not in obj or obj[key] is None:
        raise RecordError(f"missing_field:{field}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError(f"wrong_type:{field}")
    return value


def decode_line(line: bytes) -> Any:
    """JSON-decode a line; the error names what is wrong with the bytes."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError("invalid_utf8") from None
        try:
            # orjson refuses lone surrogates that the json module accepts; the field check then names them.
            return json.loads(line)
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
        time_us = _require(event, "time_us", int, "time_us")
        did = _text(_require(event, "did", str, "did"), "did")
        if not did.startswith("did:"):
            raise RecordError("invalid_did")
        commit = _require(event, "commit", dict, "commit")
        collection = _require(commit, "collection", str, "commit.collection")
        if collection != POST_COLLECTION:
            return Outcome("ignore", day=_day_of_time_us(time_us), reason="other_collection")
        operation = _require(commit, "operation", str, "commit.operation")
        rkey = _text(_require(commit, "rkey", str, "commit.rkey"), "commit.rkey")
        if not rkey or "/" in rkey:
            raise RecordError("invalid_rkey")
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


def printable_raw(line: bytes) -> str:
    """The rejected line as storable text: invalid bytes and NULs escaped, nothing dropped."""
    return line.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
