"""Human judgements: one rater's ratings of posts for one task, read from a CSV or Parquet file.

A judgement file names each post by its AT URI or its bsky.app link (read as the `import` labeler reads them,
see label_files.py) and gives one value per post. The scales follow indie-label, whose audits this serves:

- `toxicity`: an integer 0–4 ("not at all" … "extremely toxic"), or −1 for "unsure" (kept, so an audit can
  leave it out knowingly rather than never having seen it);
- `sociopolitical`: yes/no (also true/false, 1/0, and the pilot's civic/not civic), stored as 1.0/0.0;
- `ideology`: left, right, moderate or unclear (US politics; the pilot's left-leaning/right-leaning too).

Nothing is dropped: every record becomes a judgement or a rejection with its line number and a reason
(`missing_value`, `not_an_integer`, `out_of_range`, `unknown_value`, `missing_uri`, `invalid_uri`,
`invalid_link`, `unresolved_handle`, `duplicate_in_file`, `wrong_field_count`, `invalid_utf8`, `invalid_csv`).
Within one file the first record of a post wins and later ones are rejected as `duplicate_in_file`: a file
that rates a post twice is ambiguous, and the first line is the one a rater reading top-down saw first.

Loading (`load_judgements`) replaces, in one transaction, the rows this file gave this rater and task, and
the file's earlier rejections, so re-importing a file is idempotent. A post that another file already gave
the same rater and task is taken over by the newer import (the last import wins), keeping (uri, rater, task)
unique.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from bsky_warehouse.label_files import (
    HandleResolver,
    RowError,
    SourceRow,
    is_empty,
    iter_rows,
    normalize_ideology,
    normalize_sociopolitical,
    normalize_uri,
    pick_column,
)
from bsky_warehouse.resources.warehouse import insert_rows, transaction

TASKS = ("toxicity", "sociopolitical", "ideology")
TOXICITY_MAX = 4
UNSURE = -1
REJECT_SOURCE = "judgements"
# The post column, when none is named: at:// URIs or bsky.app links, told apart per value.
KEY_COLUMNS = ("uri", "link", "url")
# The value column, when none is named: `value`, the task's name, then the names the 2024 pilot's hand-label
# file uses (so data/reference/pilot_posts_hand_labels.csv loads as it is).
VALUE_COLUMNS = {
    "toxicity": ("value", "toxicity", "rating"),
    "sociopolitical": ("value", "sociopolitical", "is_sociopolitical", "civic", "civic_hand_label"),
    "ideology": ("value", "ideology", "political_ideology", "political_ideology_hand_label"),
}


class JudgementFileError(ValueError):
    """The file as a whole cannot be imported (unknown task, no such column, no rows); nothing is written."""


@dataclass(frozen=True)
class Judgement:
    uri: str
    value: float | None
    label: str | None
    line_no: int


@dataclass(frozen=True)
class Rejection:
    line_no: int
    reason: str
    detail: str
    record: dict[str, Any]


@dataclass
class ParsedFile:
    """A judgement file read and checked, not yet loaded."""

    path: str
    rater: str
    task: str
    uri_column: str
    value_column: str
    judgements: list[Judgement] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.rejections).items()))


def parse_value(task: str, raw: Any) -> tuple[float | None, str | None]:
    """(value, label) as stored in human_judgements; RowError with the reason when the value is unusable."""
    if is_empty(raw):
        raise RowError("missing_value: no judgement given")
    if task == "toxicity":
        return _toxicity(raw), None
    if task == "sociopolitical":
        try:
            social = normalize_sociopolitical(raw)
        except ValueError:
            raise RowError(f"unknown_value: {raw!r} is not yes/no, true/false or 1/0") from None
        return (1.0, "yes") if social else (0.0, "no")
    try:
        ideology = normalize_ideology(raw)
    except ValueError:
        raise RowError(f"unknown_value: {raw!r} is not left, right, moderate or unclear") from None
    return None, ideology


def _toxicity(raw: Any) -> float:
    if isinstance(raw, bool):
        raise RowError(f"not_an_integer: {raw!r}")
    try:
        number = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError):
        raise RowError(f"not_an_integer: {raw!r} is not a number") from None
    if not math.isfinite(number) or number != int(number):
        raise RowError(f"not_an_integer: {raw!r} (toxicity is an integer 0–{TOXICITY_MAX}, or {UNSURE} for unsure)")
    if not (0 <= number <= TOXICITY_MAX or number == UNSURE):
        raise RowError(f"out_of_range: {raw!r} (toxicity is 0–{TOXICITY_MAX}, or {UNSURE} for unsure)")
    return number


def check_rater_task(rater: str, task: str) -> None:
    if task not in TASKS:
        raise JudgementFileError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if not rater or not rater.strip() or rater != rater.strip():
        raise JudgementFileError(f"rater must be a non-empty name without surrounding spaces, got {rater!r}")


def parse_judgements(
    path: str | Path,
    rater: str,
    task: str,
    *,
    uri_column: str | None = None,
    value_column: str | None = None,
    handle_to_did: HandleResolver | None = None,
    fmt: str | None = None,
) -> ParsedFile:
    """Read and check a judgement file; every record ends up in `judgements` or `rejections`.

    Raises JudgementFileError when the file cannot be imported at all (unknown task, missing or unnamed
    columns, no header, no data rows), before anything is written.
    """
    check_rater_task(rater, task)
    path = Path(path)
    try:
        columns, rows = iter_rows(path, fmt)
        if not columns:
            raise JudgementFileError(f"{path}: empty file (no header line)")
        key = pick_column(columns, uri_column, KEY_COLUMNS, "uri/link")
        value = pick_column(columns, value_column, VALUE_COLUMNS[task], f"{task} value")
    except JudgementFileError:
        raise
    except (OSError, ValueError) as exc:
        raise JudgementFileError(f"{path}: {exc}") from None
    parsed = ParsedFile(str(path.resolve()), rater, task, key, value)
    first_line: dict[str, Judgement] = {}
    for row in rows:
        try:
            judgement = _judgement(row, task, key, value, handle_to_did)
            earlier = first_line.get(judgement.uri)
            if earlier is not None:
                same = (earlier.value, earlier.label) == (judgement.value, judgement.label)
                raise RowError(
                    f"duplicate_in_file: line {earlier.line_no} already judged {judgement.uri}"
                    f" ({'same value' if same else 'a different value; the first line wins'})"
                )
        except RowError as exc:
            parsed.rejections.append(Rejection(row.line_no, exc.code, exc.detail, row.values))
            continue
        first_line[judgement.uri] = judgement
        parsed.judgements.append(judgement)
    if not parsed.judgements and not parsed.rejections:
        raise JudgementFileError(f"{path}: no data rows (only a header); nothing imported")
    return parsed


def _judgement(row: SourceRow, task: str, key: str, value: str, handle_to_did: HandleResolver | None) -> Judgement:
    if row.error:
        raise RowError(row.error)
    raw_key = row.values.get(key)
    if is_empty(raw_key):
        raise RowError(f"missing_uri: column {key} is empty")
    uri = normalize_uri(str(raw_key), handle_to_did)
    number, label = parse_value(task, row.values.get(value))
    return Judgement(uri, number, label, row.line_no)


def _raw(parsed: ParsedFile, rejection: Rejection) -> str:
    """The rejected record as JSON, with the rater and task it was imported for (which key its replacement)."""
    return json.dumps(
        {"rater": parsed.rater, "task": parsed.task, "detail": rejection.detail, "record": rejection.record},
        ensure_ascii=False,
        default=str,
    )


def load_judgements(con: duckdb.DuckDBPyConnection, parsed: ParsedFile, now: datetime | None = None) -> dict[str, Any]:
    """Replace this file's rows for (rater, task) and its rejections, in one transaction; returns the counts."""
    now = now or datetime.now(UTC)
    key = {"file": parsed.path, "rater": parsed.rater, "task": parsed.task}
    judgements = [
        {"uri": j.uri, "rater": parsed.rater, "task": parsed.task, "value": j.value, "label": j.label,
         "source_file": parsed.path, "line_no": j.line_no, "imported_at": now}
        for j in parsed.judgements
    ]  # fmt: skip
    rejects = [
        {"source": REJECT_SOURCE, "raw": _raw(parsed, r), "reason": r.reason, "file": parsed.path,
         "line_no": r.line_no, "ingested_at": now}
        for r in parsed.rejections
    ]  # fmt: skip
    with transaction(con):
        con.execute("CREATE OR REPLACE TEMP TABLE judgement_stage AS SELECT * FROM human_judgements LIMIT 0")
        insert_rows(con, "judgement_stage", judgements)
        replaced = _count(
            con,
            "DELETE FROM human_judgements WHERE rater = $rater AND task = $task AND source_file = $file",
            key,
        )
        superseded = _count(
            con,
            """DELETE FROM human_judgements WHERE rater = $rater AND task = $task
               AND uri IN (SELECT uri FROM judgement_stage)""",
            {"rater": parsed.rater, "task": parsed.task},
        )
        con.execute("INSERT INTO human_judgements BY NAME SELECT * FROM judgement_stage")
        con.execute(
            """DELETE FROM rejected_records WHERE source = $source AND file = $file
               AND json_extract_string(raw, '$.rater') = $rater AND json_extract_string(raw, '$.task') = $task""",
            {**key, "source": REJECT_SOURCE},
        )
        insert_rows(con, "rejected_records", rejects)
        con.execute("DROP TABLE judgement_stage")
    return {
        "file": parsed.path,
        "rater": parsed.rater,
        "task": parsed.task,
        "uri_column": parsed.uri_column,
        "value_column": parsed.value_column,
        "records": len(parsed.judgements) + len(parsed.rejections),
        "loaded": len(parsed.judgements),
        "rejected": len(parsed.rejections),
        "rejected_by_reason": parsed.rejected_by_reason,
        "replaced_from_this_file": replaced,
        "taken_over_from_other_files": superseded,
    }


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> int:
    return int(con.execute(sql, params).fetchall()[0][0])


def rejection_lines(parsed: ParsedFile, limit: int = 10) -> list[str]:
    """The first rejections, one line each, naming the line, the reason and why."""
    return [f"line {r.line_no}: {r.reason}: {r.detail}" for r in parsed.rejections[:limit]]
