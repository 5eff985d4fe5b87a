"""Files of labels and judgements made elsewhere (CSV or Parquet): their rows, post keys and label vocabularies.

Two importers read such files, the `import` labeler (LLM labels produced on a cluster or an annotation tool)
and the human judgements import, and they must agree on what a file can say: a post is named by its AT URI
or by its bsky.app link (a link naming a handle needs a handle → DID map, because post URIs are keyed by DID
and guessing one would attach a judgement to the wrong post), an empty cell is one of a few spellings, and
`civic` / `left-leaning` mean what the 2024 pilot's files meant by them. Anything else is an error the caller
records with the row's line number, never a guess.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

_SOCIOPOLITICAL_VALUES = {
    "true": True,
    "yes": True,
    "1": True,
    "civic": True,
    "sociopolitical": True,
    "political": True,
    "false": False,
    "no": False,
    "0": False,
    "not civic": False,
    "non civic": False,
    "noncivic": False,
    "not sociopolitical": False,
    "non sociopolitical": False,
    "not political": False,
}
_IDEOLOGY_VALUES = {
    "left": "left",
    "left leaning": "left",
    "right": "right",
    "right leaning": "right",
    "moderate": "moderate",
    "unclear": "unclear",
}
_EMPTY_VALUES = {"", "none", "null", "nan", "na", "n/a"}


def _norm_text(value: str) -> str:
    return re.sub(r"[\s_\-]+", " ", value.strip().lower()).strip()


def is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in _EMPTY_VALUES


def normalize_sociopolitical(value: Any) -> bool | None:
    """`civic`/`true`/`yes`/1 -> True, `not civic`/`false`/`no`/0 -> False, empty -> None.

    Raises ValueError for anything else: an unrecognised label is a question for a human, not a guess.
    """
    if is_empty(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        key = _norm_text(value)
        if key in _SOCIOPOLITICAL_VALUES:
            return _SOCIOPOLITICAL_VALUES[key]
    raise ValueError(f"unrecognised sociopolitical label {value!r}")


def normalize_ideology(value: Any) -> str | None:
    """`left`/`left-leaning` -> left, `right`/`right-leaning` -> right, `moderate`, `unclear`;
    empty -> None. Raises ValueError for anything else."""
    if is_empty(value):
        return None
    if isinstance(value, str):
        key = _norm_text(value)
        if key in _IDEOLOGY_VALUES:
            return _IDEOLOGY_VALUES[key]
    raise ValueError(f"unrecognised ideology label {value!r}")


_LINK = re.compile(r"^https?://(?:www\.)?bsky\.app/profile/([^/?#]+)/post/([^/?#]+)/?(?:[?#].*)?$")
_AT_URI = re.compile(r"^at://([^/]+)/app\.bsky\.feed\.post/([^/?#]+)$")
_WEB_ADDRESS = re.compile(r"^https?://", re.IGNORECASE)

HandleResolver = Mapping[str, str] | Callable[[str], str | None]


class RowError(ValueError):
    """A row that cannot be used; the message is `<reason>: <detail>` (see `RowError.code`)."""

    @property
    def code(self) -> str:
        return str(self).split(":", 1)[0].strip()

    @property
    def detail(self) -> str:
        return str(self).partition(":")[2].strip()


def _resolve_actor(actor: str, handle_to_did: HandleResolver | None) -> str:
    if actor.startswith("did:"):
        return actor
    handle = actor.lower()
    did: str | None = None
    if isinstance(handle_to_did, Mapping):
        did = handle_to_did.get(handle) or handle_to_did.get(actor)
    elif handle_to_did is not None:
        did = handle_to_did(handle)
    if not did:
        hint = "" if handle_to_did is not None else " (no handle_to_did mapping given)"
        raise RowError(f"unresolved_handle: {actor}{hint}")
    if not did.startswith("did:"):
        raise RowError(f"unresolved_handle: {actor} maps to {did!r}, not a DID")
    return did


def link_to_uri(link: str, handle_to_did: HandleResolver | None = None) -> str:
    """`https://bsky.app/profile/<handle-or-did>/post/<rkey>` -> `at://<did>/app.bsky.feed.post/<rkey>`.

    Post URIs are keyed by DID, so a link naming a handle needs `handle_to_did` (a dict or a callable);
    raises RowError (`invalid_link` / `unresolved_handle`) rather than invent a URI.
    """
    match = _LINK.match(link.strip())
    if match is None:
        raise RowError(f"invalid_link: {link!r}")
    actor, rkey = match.groups()
    return f"at://{_resolve_actor(actor, handle_to_did)}/app.bsky.feed.post/{rkey}"


def normalize_uri(value: str, handle_to_did: HandleResolver | None) -> str:
    """An AT URI (its authority resolved to a DID) or a bsky.app link -> the post's AT URI; else RowError
    (`invalid_uri`, `invalid_link`, `unresolved_handle`)."""
    match = _AT_URI.match(value.strip())
    if match is None:
        if _WEB_ADDRESS.match(value.strip()):  # a link, well-formed or not: link_to_uri says which (invalid_link)
            return link_to_uri(value, handle_to_did)
        raise RowError(f"invalid_uri: {value!r}")
    actor, rkey = match.groups()
    return f"at://{_resolve_actor(actor, handle_to_did)}/app.bsky.feed.post/{rkey}"


# Where a CSV record's fields beyond the header's are kept (so the raw record is complete).
EXTRA_FIELDS = "_extra_fields"


@dataclass
class SourceRow:
    """One record of a file. `line_no` is the CSV line the record starts on (the header is line 1) or the
    1-based row number in a Parquet file. `error` is set when the record itself is unreadable
    (`invalid_utf8`, `invalid_csv: ...`, `wrong_field_count: ...`); `values` then holds what could be read."""

    line_no: int
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def file_format(path: Path, fmt: str | None = None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"file must be .csv or .parquet, got {path.name!r}")
    return fmt


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _clean(text: str) -> str:
    """Undecodable bytes (read as surrogate escapes) shown as U+FFFD, so the record can still be stored."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _csv_rows(path: Path) -> tuple[list[str], Iterator[SourceRow]]:
    handle = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    reader = csv.reader(handle)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        handle.close()
        raise ValueError(f"{path.name}: unreadable header line: {exc}") from None
    if header is None:
        handle.close()
        return [], iter(())
    columns = [_clean(c) for c in header]

    def rows() -> Iterator[SourceRow | None]:
        with handle:
            yield None  # see _started
            last = reader.line_num
            while True:
                start = last + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    last = reader.line_num
                    yield SourceRow(start, error=f"invalid_csv: {exc}")
                    continue
                last = reader.line_num
                if not fields:  # a blank line is no record
                    continue
                bad_text = any(_has_surrogates(f) for f in fields)
                fields = [_clean(f) for f in fields] if bad_text else fields
                values: dict[str, Any] = dict(zip(columns, fields, strict=False))
                error = "invalid_utf8" if bad_text else None
                if len(fields) != len(columns):
                    for column in columns[len(fields) :]:
                        values[column] = None
                    if len(fields) > len(columns):
                        values[EXTRA_FIELDS] = fields[len(columns) :]
                    error = error or f"wrong_field_count: {len(fields)} fields, the header has {len(columns)}"
                yield SourceRow(start, values, error)

    return columns, _started(rows())


def _parquet_rows(path: Path) -> tuple[list[str], Iterator[SourceRow]]:
    import duckdb

    connection = duckdb.connect()
    try:
        cursor = connection.execute("SELECT * FROM read_parquet(?)", [str(path)])
    except duckdb.Error as exc:
        connection.close()
        raise ValueError(f"{path.name}: not a readable Parquet file: {exc}") from None
    columns = [d[0] for d in cursor.description]

    def rows() -> Iterator[SourceRow | None]:
        number = 0
        try:
            yield None  # see _started
            while chunk := cursor.fetchmany(10_000):
                for values in chunk:
                    number += 1
                    yield SourceRow(number, dict(zip(columns, values, strict=True)))
        finally:
            connection.close()

    return columns, _started(rows())


def _started(rows: Iterator[SourceRow | None]) -> Iterator[SourceRow]:
    """Run a reader up to its first (`None`) yield, inside its `with`/`finally`: from then on closing the
    iterator, or dropping it unread (a caller's column error), closes the file rather than leaking it."""
    next(rows)
    return cast(Iterator[SourceRow], rows)


def iter_rows(path: str | Path, fmt: str | None = None) -> tuple[list[str], Iterator[SourceRow]]:
    """(columns, records) of a CSV (every value as text) or Parquet file, streamed in file order.

    A CSV record with more or fewer fields than the header, bytes that are not UTF-8, or a line the CSV reader
    refuses comes back with `error` set and the reading goes on; a file with no header has no columns."""
    path = Path(path)
    if file_format(path, fmt) == "csv":
        return _csv_rows(path)
    return _parquet_rows(path)


def pick_column(columns: Sequence[str], explicit: str | None, candidates: Sequence[str], what: str) -> str:
    """`explicit` if the file has it, else the first of `candidates` it has; ValueError naming the columns."""
    if explicit is not None:
        if explicit not in columns:
            raise ValueError(f"file has no {what} column {explicit!r}; columns are {list(columns)}")
        return explicit
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise ValueError(f"file has no {what} column (looked for {list(candidates)}); columns are {list(columns)}")
