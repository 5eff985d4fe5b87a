"""Files of labels and judgements made elsewhere (CSV or Parquet): their rows, post keys and label vocabularies.

Two importers read such files, the `import` labeler (LLM labels produced on a cluster or an annotation tool)
and the human judgements import, and they must agree on what a file can say: a post is named by its AT URI
or by its bsky.app link (a link naming a handle needs a handle → DID map, because post URIs are keyed by DID
and guessing one would attach a judgement to the wrong post), an empty cell is one of a few spellings, and
`civic` / `left-leaning` mean what the 2024 pilot's files meant by them. Anything else is an error the caller
records with the row's line number, never a guess.

The `import` labeler itself lives here too (`read_label_file`, `ImportLabeler`): a file's rows normalised to
the label rows the models produce, so imported labels go through the same asset and checks. `file_digest`
names the file a label came from (`llm_labels.source_digest`).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bsky_warehouse.label_validation import (
    REASON_IDEOLOGY_ON_NON_SOCIOPOLITICAL,
    REASON_MISSING_IDEOLOGY,
    REASON_UNKNOWN_LABEL,
)
from bsky_warehouse.records import LabelResult, PostText
from bsky_warehouse.resources.llm import LabelStats

log = logging.getLogger(__name__)

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


def read_label_file(
    path: str | Path,
    labeler: str,
    model: str,
    prompt_version: str = "external",
    uri_column: str | None = None,
    *,
    link_column: str | None = None,
    label_column: str | None = None,
    ideology_column: str | None = None,
    rationale_column: str | None = None,
    handle_to_did: HandleResolver | None = None,
    fmt: str | None = None,
    drop_ideology_on_non_sociopolitical: bool = False,
) -> Iterator[LabelResult]:
    """One LabelResult per row of a CSV or Parquet file of labels made elsewhere, in file order.

    The key is `uri_column` (at:// URIs) or else `link_column` (bsky.app links, turned into URIs via
    `handle_to_did` when they name a handle); by default `uri`, then `link`. Label and ideology columns
    default to the first present of common names. Rows that cannot be used are yielded as `failed` with
    the reason (`invalid_row: ...`), never dropped; a row whose key cannot be resolved keeps the raw key
    (or `row:<n>`) as its uri so it is still visible. `labeler`, `model` and `prompt_version` are the
    identity the caller records the rows under (LabelResult does not carry it); they are checked here so
    that a misconfigured import fails before any row is read. Column problems raise ValueError at once.
    """
    for what, value in (("labeler", labeler), ("model", model), ("prompt_version", prompt_version)):
        if not value or not str(value).strip():
            raise ValueError(f"read_label_file needs a non-empty {what}")
    columns, rows = iter_rows(path, fmt)
    if uri_column is None and link_column is None:
        key_column = pick_column(columns, None, ("uri", "link", "url"), "uri/link")
    else:
        key_column = pick_column(columns, uri_column or link_column, (), "uri" if uri_column else "link")
    key_is_link = uri_column is None and key_column != "uri"
    label_col = pick_column(columns, label_column, ("is_sociopolitical", "sociopolitical", "civic", "label"), "label")
    ideology_col = pick_column(
        columns, ideology_column, ("political_ideology", "ideology", "leaning", "political_leaning"), "ideology"
    )
    rationale_col = pick_column(columns, rationale_column, (), "rationale") if rationale_column else None
    return _label_rows(
        rows, key_column, key_is_link, label_col, ideology_col, rationale_col, handle_to_did,
        drop_ideology_on_non_sociopolitical,
    )  # fmt: skip


def _label_rows(
    rows: Iterator[SourceRow],
    key_column: str,
    key_is_link: bool,
    label_col: str,
    ideology_col: str,
    rationale_col: str | None,
    handle_to_did: HandleResolver | None,
    drop_ideology_on_non_sociopolitical: bool = False,
) -> Iterator[LabelResult]:
    for number, record in enumerate(rows, start=1):
        row = record.values
        raw_key = row.get(key_column)
        uri = str(raw_key).strip() if not is_empty(raw_key) else f"row:{number}"
        try:
            if record.error:
                raise RowError(record.error)
            if is_empty(raw_key):
                raise RowError(f"missing_{key_column}")
            uri = link_to_uri(uri, handle_to_did) if key_is_link else normalize_uri(uri, handle_to_did)
            try:
                social = normalize_sociopolitical(row.get(label_col))
                ideology = normalize_ideology(row.get(ideology_col))
            except ValueError as exc:
                raise RowError(f"{REASON_UNKNOWN_LABEL}: {exc}") from None
            if social is None:
                raise RowError(f"missing_label: column {label_col} is empty")
            dropped = None
            if not social and ideology is not None and drop_ideology_on_non_sociopolitical:
                # Some recorded labelers (Llama-3 in the 2024 pilot) fill the ideology column with a
                # placeholder on non-sociopolitical posts; the table contract keeps ideology for those null,
                # and the row keeps what the file said apart (LabelResult.dropped_ideology).
                ideology, dropped = None, ideology
            if not social and ideology is not None:
                raise RowError(f"{REASON_IDEOLOGY_ON_NON_SOCIOPOLITICAL}: {ideology}")
            if social and ideology is None:
                raise RowError(f"{REASON_MISSING_IDEOLOGY}: column {ideology_col} is empty")
        except RowError as exc:
            yield LabelResult(uri, "failed", f"invalid_row: {exc} (row {number})")
            continue
        rationale = row.get(rationale_col) if rationale_col else None
        rationale = None if is_empty(rationale) else str(rationale).strip()
        yield LabelResult(uri, "ok", None, social, ideology, rationale, dropped)


REASON_NOT_IN_FILE = "not_in_label_file"
REASON_CONFLICTING_ROWS = "conflicting_label_rows"


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of the file's bytes: what `sha256sum` prints, so a user can tell which of their files a
    stored label came from, whatever it has been renamed or moved to since."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ImportLabeler:
    """A label file as a `Labeler`, so imported labels go through the same asset path as model labels.

    `label` reports, for each post asked about, its row (identical duplicate rows collapse; conflicting
    ones fail with `conflicting_label_rows`) or `skipped`/`not_in_label_file` when the file lacks it.
    Reading a file costs nothing, so unlike a model's answers an import is re-read on every run: the
    `llm_labels` asset asks about every post and stores what differs (see `assets/llm_labels.py`).
    """

    path: str
    name: str = "import"
    model: str = "external"
    prompt_version: str = "external"
    options: dict[str, Any] = field(default_factory=dict)

    def read(self) -> Iterator[LabelResult]:
        """Every row of the file as a LabelResult, in file order."""
        return read_label_file(self.path, self.name, self.model, self.prompt_version, **self.options)

    def digest(self) -> str:
        """The file's `file_digest`, recorded with the labels imported from it."""
        return file_digest(self.path)

    def label(self, posts: Sequence[PostText], on_result: Callable[[LabelResult], None]) -> LabelStats:
        """Call `on_result` once per post in `posts`, in their order, with what the file says about it."""
        wanted = {post.uri for post in posts}
        found: dict[str, LabelResult] = {}
        unattributed = 0
        for result in self.read():
            if result.uri not in wanted:
                unattributed += result.status == "failed"
                continue
            previous = found.get(result.uri)
            if previous is None or previous == result:
                found[result.uri] = result
            else:
                found[result.uri] = LabelResult(result.uri, "failed", REASON_CONFLICTING_ROWS)
        if unattributed:
            log.warning("llm import: %d failed row(s) in %s match none of the posts asked", unattributed, self.path)
        stats = LabelStats(posts=len(posts))
        for post in posts:
            result = found.get(post.uri) or LabelResult(post.uri, "skipped", REASON_NOT_IN_FILE)
            stats.record(result)
            on_result(result)
        return stats
