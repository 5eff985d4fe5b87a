"""The rater page's logic without HTTP: which post to show next, what a rating means, the row it becomes.

indie-label's rater page lets a person judge posts and then see where a model disagrees with *them*. The page
here serves a study's coders: it draws posts stratified by topic (the topic with the fewest of this rater's
judgements goes first, so every topic gets judged and the per-topic audit has something to say), never shows a
post the rater already judged for the task, and writes each rating at once to `human_judgements` in a short
transaction, as `import judgements` would have (one row per post, rater and task; a re-rating replaces).

A rating is read by `judgements.parse_value`, the validation file imports use, so a value the page accepts is
one a file could hold and the reverse. Everything that decides (next topic, validation, the row) is a plain
function of its inputs, tested without a server or a browser.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import duckdb

from bsky_warehouse.audit import OVER, UNDER, Audit, audit_summary, sensitive_topics
from bsky_warehouse.calibration import MIN_JUDGEMENTS, System
from bsky_warehouse.judgements import TOXICITY_MAX, UNSURE, parse_value
from bsky_warehouse.label_files import RowError
from bsky_warehouse.resources.warehouse import table_exists, transaction

# What `human_judgements.source_file` says for a rating made on the page (a file import names its file).
SOURCE = "rater_page"
# indie-label asks for at least 40 ratings before it shows a personal model; calibration needs as many.
DEFAULT_TARGET = MIN_JUDGEMENTS
# The tasks the audit marts cover (a scorer against toxicity, a labeler against sociopolitical).
AUDITED_TASKS = ("toxicity", "sociopolitical")
SKIP_KEY = "s"


class RatingError(ValueError):
    """A rating the task's scale does not hold: refused with the reason, nothing written."""


class UnknownPost(LookupError):
    """A rating of a post the page could not have shown: not in the warehouse, not eligible, or without a topic."""


@dataclass(frozen=True)
class Choice:
    """One answer on a task's scale: the value sent (as a file would hold it), its words, and its key."""

    value: str
    label: str
    key: str


_TOXICITY_WORDS = ("not at all toxic", "slightly toxic", "moderately toxic", "very toxic", "extremely toxic")
SCALES: dict[str, tuple[Choice, ...]] = {
    "toxicity": (
        *(Choice(str(n), f"{n}: {_TOXICITY_WORDS[n]}", str(n)) for n in range(TOXICITY_MAX + 1)),
        Choice(str(UNSURE), "unsure", "u"),
    ),
    "sociopolitical": (Choice("yes", "yes: sociopolitical", "y"), Choice("no", "no: not sociopolitical", "n")),
    "ideology": (
        Choice("left", "left", "l"),
        Choice("right", "right", "r"),
        Choice("moderate", "moderate", "m"),
        Choice("unclear", "unclear", "u"),
    ),
}
QUESTIONS = {
    "toxicity": "How toxic is this post?",
    "sociopolitical": "Is this post about a social or political issue?",
    "ideology": "Which way does this post lean in US politics?",
}


def parse_rating(task: str, raw: Any) -> tuple[float | None, str | None]:
    """(value, label) as human_judgements stores them, read exactly as a judgement file's value would be."""
    if raw is None or isinstance(raw, list | dict):
        raise RatingError(f"a {task} rating is one value, got {raw!r}")
    try:
        return parse_value(task, raw)
    except RowError as err:
        raise RatingError(f"not a {task} rating: {err.code}: {err.detail}") from None


def judgement_row(uri: str, rater: str, task: str, value: float | None, label: str | None, at: datetime) -> dict:
    """The human_judgements row a page rating becomes: no file, no line, the time it was made."""
    return {"uri": uri, "rater": rater, "task": task, "value": value, "label": label, "source_file": SOURCE,
            "line_no": None, "imported_at": at}  # fmt: skip


def write_judgement(con: duckdb.DuckDBPyConnection, row: dict) -> bool:
    """Replace the rater's judgement of this post for this task (from any file or the page) with `row`, in one
    transaction; True when an earlier judgement was replaced. Keeps (uri, rater, task) unique."""
    columns = ", ".join(row)
    with transaction(con):
        replaced = con.execute(
            "DELETE FROM human_judgements WHERE uri = $uri AND rater = $rater AND task = $task",
            {k: row[k] for k in ("uri", "rater", "task")},
        ).fetchall()[0][0]
        con.execute(
            f"INSERT INTO human_judgements ({columns}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
    return bool(replaced)


@dataclass(frozen=True)
class TopicProgress:
    topic_id: int
    label: str
    judged: int
    remaining: int


def next_topic(topics: Iterable[TopicProgress]) -> TopicProgress | None:
    """The topic to draw from next: of those with posts left, the one this rater judged least (then the lower
    id), so judgements spread over every topic before any topic gets a second round."""
    return min((t for t in topics if t.remaining > 0), key=lambda t: (t.judged, t.topic_id), default=None)


def bsky_link(uri: str) -> str:
    """The post's bsky.app page, built as the dbt macro `bsky_link` builds it (DID and record key)."""
    parts = uri.split("/")
    return f"https://bsky.app/profile/{parts[2]}/post/{parts[4]}" if len(parts) >= 5 else uri


@dataclass(frozen=True)
class Frame:
    """What the page samples from: posts passing the filters with a topic under one topic model, and, when a
    system is audited, only posts that system answered (a judgement of any other post cannot enter its audit)."""

    rater: str
    task: str
    topic_model_version: str
    system: System | None = None

    def sql(self) -> str:
        answered = f"AND t.uri IN (SELECT uri FROM ({self.system.output_sql()}))" if self.system else ""
        return f"""SELECT t.uri, t.topic_id, t.topic_label FROM post_topics t
                   WHERE t.topic_model_version = $version
                     AND t.uri IN (SELECT uri FROM cleaned_posts WHERE passes_filters) {answered}"""

    def params(self) -> dict[str, Any]:
        return {"version": self.topic_model_version, **(self.system.params() if self.system else {})}


def topic_progress(con: duckdb.DuckDBPyConnection, frame: Frame, skip: Sequence[str] = ()) -> list[TopicProgress]:
    """Per topic of the frame: posts this rater judged for the task, and posts left to show (`skip`: posts the
    rater passed over in this browser session, left for later)."""
    rows = con.execute(
        f"""WITH frame AS ({frame.sql()}),
                 judged AS (SELECT DISTINCT uri FROM human_judgements WHERE rater = $rater AND task = $task)
            SELECT f.topic_id, min(f.topic_label), count(j.uri),
                   count(*) FILTER (WHERE j.uri IS NULL AND NOT list_contains($skip, f.uri))
            FROM frame f LEFT JOIN judged j ON j.uri = f.uri
            GROUP BY f.topic_id ORDER BY f.topic_id""",
        {**frame.params(), "rater": frame.rater, "task": frame.task, "skip": list(skip)},
    ).fetchall()
    return [TopicProgress(*row) for row in rows]


def draw_post(con: duckdb.DuckDBPyConnection, frame: Frame, topic_id: int, skip: Sequence[str] = ()) -> str | None:
    """The next unjudged post of a topic, in an order fixed per rater (md5 of rater and uri): a reload shows the
    same post, and two coders do not see the topic's posts in the same order."""
    row = con.execute(
        f"""WITH frame AS ({frame.sql()})
            SELECT uri FROM frame f WHERE f.topic_id = $topic AND NOT list_contains($skip, f.uri)
              AND f.uri NOT IN (SELECT uri FROM human_judgements WHERE rater = $rater AND task = $task)
            ORDER BY md5($rater || '|' || f.uri), f.uri LIMIT 1""",
        {**frame.params(), "rater": frame.rater, "task": frame.task, "topic": topic_id, "skip": list(skip)},
    ).fetchone()
    return row[0] if row else None


def in_frame(con: duckdb.DuckDBPyConnection, frame: Frame, uri: str) -> bool:
    return bool(
        con.execute(
            f"SELECT count(*) FROM ({frame.sql()}) WHERE uri = $uri", {**frame.params(), "uri": uri}
        ).fetchall()[0][0]
    )


def judged_count(con: duckdb.DuckDBPyConnection, rater: str, task: str) -> int:
    """All of the rater's judgements for the task, wherever they came from (the calibration counts them all)."""
    return int(
        con.execute(
            "SELECT count(*) FROM human_judgements WHERE rater = $rater AND task = $task",
            {"rater": rater, "task": task},
        ).fetchall()[0][0]
    )


@functools.cache
def reference_handles() -> dict[str, str]:
    """DID -> handle from the vendored 2024 pilot file (the demo's labeled posts), read once."""
    from bsky_warehouse.reference_labels import reference_handle_to_did

    try:
        return {did: handle for handle, did in reference_handle_to_did().items()}
    except OSError:
        return {}


def handle_of(con: duckdb.DuckDBPyConnection, did: str) -> str | None:
    """The author's handle where the warehouse knows it (an author scan), else the pilot file's; None if unknown
    (the page then shows the DID)."""
    row = con.execute(
        "SELECT author_handle FROM author_scans WHERE author_did = $did AND author_handle IS NOT NULL "
        "ORDER BY scanned_at DESC LIMIT 1",
        {"did": did},
    ).fetchone()
    return row[0] if row else reference_handles().get(did)


def post_view(con: duckdb.DuckDBPyConnection, uri: str, topic: TopicProgress | None) -> dict[str, Any]:
    """The post as a reader sees it: text, author, time, its bsky.app link, and the post it replies to."""
    row = con.execute(
        """SELECT c.uri, c.author_did, c.text, c.created_at, c.reply_parent_uri, p.author_did, p.text
           FROM cleaned_posts c LEFT JOIN cleaned_posts p ON p.uri = c.reply_parent_uri
           WHERE c.uri = $uri LIMIT 1""",
        {"uri": uri},
    ).fetchone()
    if row is None:
        raise UnknownPost(f"no post {uri} in cleaned_posts")
    _, did, text, created_at, parent_uri, parent_did, parent_text = row
    parent = None
    if parent_uri:
        parent_author = parent_did or parent_uri.split("/")[2]
        parent = {"uri": parent_uri, "link": bsky_link(parent_uri), "author_did": parent_author,
                  "author_handle": handle_of(con, parent_author), "text": parent_text}  # fmt: skip
    return {
        "uri": uri,
        "link": bsky_link(uri),
        "author_did": did,
        "author_handle": handle_of(con, did),
        "text": text or "",
        "created_at": created_at.isoformat() if created_at else None,
        "reply_to": parent,
        "topic_id": topic.topic_id if topic else None,
        "topic_label": topic.label if topic else None,
    }


# The rater's audit -----------------------------------------------------------------------------------------


SUMMARY_KEYS = ("system", "rater", "task", "topic_model_version", "threshold", "n_judged", "mae", "n_over_sensitive",
                "n_under_sensitive")  # fmt: skip


def audit_view(audit: Audit, top: int) -> dict[str, Any]:
    """What the page shows of an audit: the summary, then the topics where the system is most over- and most
    under-sensitive for this rater, each with the posts that show it."""

    def topic(t: Any, direction: str) -> dict[str, Any]:
        examples = audit.examples.get((t.topic_id, direction), [])
        return {**asdict(t), "examples": [asdict(e) for e in examples]}

    summary = audit_summary(audit, top)
    return {
        **{k: summary[k] for k in SUMMARY_KEYS},
        "over_sensitive": [topic(t, OVER) for t in sensitive_topics(audit.topics, OVER, top)],
        "under_sensitive": [topic(t, UNDER) for t in sensitive_topics(audit.topics, UNDER, top)],
        "topics": [asdict(t) for t in sorted(audit.topics, key=lambda t: t.error_rank)],
    }


def latest_calibration(con: duckdb.DuckDBPyConnection, rater: str, task: str, system: str) -> dict[str, Any] | None:
    """The projected fit of the rater's latest calibration of the system, if one was ever fitted."""
    if not table_exists(con, "main", "rater_calibrations"):
        return None
    cursor = con.execute(
        """SELECT features, n_judgements, folds, metric, cv_error_system, cv_error_calibrated, cv_error_baseline,
                  model_version, fitted_at,
                  (SELECT count(*) FILTER (WHERE flagged) FROM calibrated_predictions p
                   WHERE p.rater = c.rater AND p.task = c.task AND p.system = c.system
                     AND p.model_version = c.model_version) AS flagged_posts
           FROM rater_calibrations c
           WHERE rater = $rater AND task = $task AND system = $system AND projected
           ORDER BY fitted_at DESC LIMIT 1""",
        {"rater": rater, "task": task, "system": system},
    )
    row = cursor.fetchone()
    if row is None:
        return None
    fit = dict(zip([d[0] for d in cursor.description], row, strict=True))
    fit["fitted_at"] = fit["fitted_at"].isoformat()
    return fit
