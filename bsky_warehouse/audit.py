"""Audits: where a scorer or labeler disagrees with one person, topic by topic, with the posts that show it.

indie-label's idea: a toxicity model is tuned for an imagined average reader, and the topics where it fails a
particular reader are what that reader needs to see, with evidence. The arithmetic lives in dbt
(`audit_judged_posts`, `audit_by_topic`); this module reads those marts for one (system, rater, task) and
turns them into the report a person reads: the worst topics by error, the topics where the system flags what
the person does not (over-sensitive) and the reverse (under-sensitive), each with example posts and links.
Rendering is pure, so it is tested on hand-made rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from bsky_warehouse.resources.warehouse import table_exists

EXAMPLE_TEXT_CHARS = 200
OVER = "over_sensitive"
UNDER = "under_sensitive"


class AuditError(ValueError):
    """The audit asked for cannot be read: the marts are not built, or hold nothing for it."""


@dataclass(frozen=True)
class TopicAudit:
    """One row of marts.audit_by_topic."""

    topic_id: int
    topic_label: str
    n_judged: int
    system_mean: float
    human_mean: float
    mae: float
    n_over_sensitive: int
    n_under_sensitive: int
    over_sensitive_share: float
    under_sensitive_share: float
    enough_judged: bool
    error_rank: int


@dataclass(frozen=True)
class Example:
    uri: str
    link: str
    text: str | None
    system_score: float
    human_value: float


@dataclass
class Audit:
    system: str
    rater: str
    task: str
    topic_model_version: str
    threshold: float
    topics: list[TopicAudit]
    # (topic_id, OVER | UNDER) -> the posts that show it, most telling first.
    examples: dict[tuple[int, str], list[Example]] = field(default_factory=dict)

    @property
    def n_judged(self) -> int:
        return sum(t.n_judged for t in self.topics)

    @property
    def mae(self) -> float:
        """Over all judged posts (the topics' MAEs weighted by their size)."""
        return sum(t.mae * t.n_judged for t in self.topics) / self.n_judged if self.n_judged else 0.0

    @property
    def n_over_sensitive(self) -> int:
        return sum(t.n_over_sensitive for t in self.topics)

    @property
    def n_under_sensitive(self) -> int:
        return sum(t.n_under_sensitive for t in self.topics)


def worst_topics(topics: list[TopicAudit], top: int) -> list[TopicAudit]:
    """The `top` topics by the mart's error rank (rank 1 = largest MAE among topics judged enough)."""
    return sorted(topics, key=lambda t: t.error_rank)[:top]


def sensitive_topics(topics: list[TopicAudit], direction: str, top: int) -> list[TopicAudit]:
    """Topics judged enough where the system errs in `direction` at all, by that share, then count, then id."""
    if direction not in (OVER, UNDER):
        raise ValueError(f"direction must be {OVER!r} or {UNDER!r}, got {direction!r}")
    share = (lambda t: t.over_sensitive_share) if direction == OVER else (lambda t: t.under_sensitive_share)
    count = (lambda t: t.n_over_sensitive) if direction == OVER else (lambda t: t.n_under_sensitive)
    chosen = [t for t in topics if t.enough_judged and count(t) > 0]
    return sorted(chosen, key=lambda t: (-share(t), -count(t), t.topic_id))[:top]


def report_path(root: Path, system: str, rater: str, task: str) -> Path:
    """`<root>/audits/<system>__<rater>__<task>.md`, with anything but letters, digits, `.`, `-` made `_`."""
    parts = [re.sub(r"[^A-Za-z0-9.-]+", "_", part).strip("_") or "_" for part in (system, rater, task)]
    return root / "audits" / f"{'__'.join(parts)}.md"


def _one_line(text: str | None, limit: int = EXAMPLE_TEXT_CHARS) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _human(task: str, value: float) -> str:
    if task == "sociopolitical":
        return "yes" if value >= 1 else "no"
    return f"{value:g}/4"


def _system(task: str, score: float) -> str:
    return ("yes" if score >= 0.5 else "no") if task == "sociopolitical" else f"{score:.3f}"


def render_markdown(audit: Audit, top: int = 5) -> str:
    """The audit report, indie-label style: what the system gets wrong for this person, topic by topic."""
    what = "flags" if audit.task == "toxicity" else "says yes to"
    lines = [
        f"# Audit of `{audit.system}` against `{audit.rater}` ({audit.task})",
        "",
        f"- Topic model `{audit.topic_model_version}`, {len(audit.topics)} topics; {audit.n_judged} judged posts "
        "that the system answered for and that have a topic.",
        f"- The system {what} a post when its score is at least {audit.threshold:g}; the person, when "
        + ("their 0-4 rating reaches the audit's human threshold." if audit.task == "toxicity" else "they said yes."),
        f"- Mean absolute error on the common [0, 1] scale: {audit.mae:.3f}. Over-sensitive (system yes, person "
        f"no): {audit.n_over_sensitive} posts; under-sensitive (person yes, system no): {audit.n_under_sensitive}.",
        "",
    ]
    sections = (
        (OVER, "Where the system is over-sensitive", "the system flags, the person does not",
         lambda t: (t.over_sensitive_share, t.n_over_sensitive)),
        (UNDER, "Where the system is under-sensitive", "the person flags, the system does not",
         lambda t: (t.under_sensitive_share, t.n_under_sensitive)),
    )  # fmt: skip
    for direction, title, meaning, measure in sections:
        lines += [f"## {title}", ""]
        chosen = sensitive_topics(audit.topics, direction, top)
        if not chosen:
            lines += [f"No topic judged often enough has posts {meaning}.", ""]
            continue
        lines += [f"Topics with the largest share of posts {meaning}:", ""]
        for t in chosen:
            share, count = measure(t)
            lines += [f"### {_cell(t.topic_label)} (topic {t.topic_id})", "",
                      f"{count} of {t.n_judged} judged posts ({share:.0%}); system mean {t.system_mean:.3f}, "
                      f"person mean {t.human_mean:.3f}, MAE {t.mae:.3f}.", ""]  # fmt: skip
            for ex in audit.examples.get((t.topic_id, direction), []):
                verdicts = f"system {_system(audit.task, ex.system_score)}, person {_human(audit.task, ex.human_value)}"
                lines.append(f"- {verdicts}: [post]({ex.link}) {_one_line(ex.text)}")
            lines.append("")
    lines += [
        "## All topics, worst first",
        "",
        "| rank | topic | posts judged | system mean | person mean | MAE | over-sensitive | under-sensitive |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in sorted(audit.topics, key=lambda t: t.error_rank):
        few = "" if t.enough_judged else " (few judged)"
        lines.append(
            f"| {t.error_rank} | {_cell(t.topic_label)} ({t.topic_id}){few} | {t.n_judged} | {t.system_mean:.3f} | "
            f"{t.human_mean:.3f} | {t.mae:.3f} | {t.over_sensitive_share:.0%} | {t.under_sensitive_share:.0%} |"
        )
    return "\n".join(lines) + "\n"


# Reading the marts -----------------------------------------------------------------------------------------


def audited(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """The (system, rater, task) combinations marts.audit_by_topic holds."""
    if not table_exists(con, "marts", "audit_by_topic"):
        return []
    return con.execute("SELECT DISTINCT system, rater, task FROM marts.audit_by_topic ORDER BY ALL").fetchall()


AUDIT_MARTS = ("audit_by_topic", "audit_judged_posts")


def _choose_version(
    con: duckdb.DuckDBPyConnection, key: dict[str, str], requested: str | None, by_topic: str = "audit_by_topic"
) -> str:
    versions = [
        row[0]
        for row in con.execute(
            f"""SELECT a.topic_model_version FROM marts."{by_topic}" a
               LEFT JOIN (SELECT topic_model_version, max(fitted_at) AS fitted_at FROM topic_models GROUP BY 1) m
                 USING (topic_model_version)
               WHERE a.system = $system AND a.rater = $rater AND a.task = $task
               GROUP BY a.topic_model_version ORDER BY max(m.fitted_at) DESC NULLS LAST, a.topic_model_version DESC""",
            key,
        ).fetchall()
    ]
    if not versions:
        present = ", ".join(f"{s} / {r} / {t}" for s, r, t in audited(con)) or "nothing yet"
        raise AuditError(
            f"marts.{by_topic} has no rows for {key['system']} / {key['rater']} / {key['task']} "
            f"(it holds: {present}); the system needs answers for, and a topic model topics for, posts the rater "
            "judged in that task"
        )
    if requested is None:
        return versions[0]
    if requested not in versions:
        raise AuditError(f"topic model {requested!r} has no audit rows here; audited under: {versions}")
    return requested


def load_audit(
    con: duckdb.DuckDBPyConnection,
    system: str,
    rater: str,
    task: str,
    topic_model_version: str | None = None,
    top: int = 5,
    examples: int = 3,
    relations: Mapping[str, str] | None = None,
) -> Audit:
    """One audit from the marts: every topic's row, and example posts for the topics a report shows.
    `relations` names other tables (in schema marts) to read instead of the two audit marts, e.g. a what-if's."""
    tables = {mart: mart for mart in AUDIT_MARTS} | dict(relations or {})
    for mart in AUDIT_MARTS:
        if not table_exists(con, "marts", tables[mart]):
            raise AuditError(
                f"marts.{tables[mart]} is not built: import judgements (bsky-warehouse import judgements), "
                "materialize post_embeddings and post_topics, then the dbt audit models (or run `make demo`)"
            )
    key = {"system": system, "rater": rater, "task": task}
    version = _choose_version(con, key, topic_model_version, tables["audit_by_topic"])
    params = {**key, "version": version}
    rows = con.execute(
        f"""SELECT topic_id, topic_label, n_judged, system_mean, human_mean, mae, n_over_sensitive,
                  n_under_sensitive, over_sensitive_share, under_sensitive_share, enough_judged, error_rank,
                  threshold
           FROM marts."{tables["audit_by_topic"]}"
           WHERE system = $system AND rater = $rater AND task = $task AND topic_model_version = $version
           ORDER BY error_rank""",
        params,
    ).fetchall()
    topics = [TopicAudit(*row[:12]) for row in rows]
    audit = Audit(system, rater, task, version, float(rows[0][12]), topics)
    shown = {t.topic_id for t in worst_topics(topics, top)}
    for direction in (OVER, UNDER):
        shown |= {t.topic_id for t in sensitive_topics(topics, direction, top)}
    for direction, flags, order in ((OVER, "system_flags AND NOT human_flags", "system_score DESC"),
                                    (UNDER, "human_flags AND NOT system_flags", "system_score ASC")):  # fmt: skip
        found = con.execute(
            f"""SELECT topic_id, uri, link, text, system_score, human_value FROM marts."{tables["audit_judged_posts"]}"
                WHERE system = $system AND rater = $rater AND task = $task AND topic_model_version = $version
                  AND list_contains($topics, topic_id) AND {flags}
                QUALIFY row_number() OVER (PARTITION BY topic_id ORDER BY {order}, uri) <= $n
                ORDER BY topic_id, {order}, uri""",
            {**params, "topics": sorted(shown), "n": examples},
        ).fetchall()
        for topic_id, *example in found:
            audit.examples.setdefault((topic_id, direction), []).append(Example(*example))
    return audit


def audit_summary(audit: Audit, top: int) -> dict[str, Any]:
    """The audit as JSON-ready data (the CLI's --json)."""

    def topic(t: TopicAudit) -> dict[str, Any]:
        return {
            **t.__dict__,
            "over_sensitive_examples": [e.__dict__ for e in audit.examples.get((t.topic_id, OVER), [])],
            "under_sensitive_examples": [e.__dict__ for e in audit.examples.get((t.topic_id, UNDER), [])],
        }

    return {
        "system": audit.system,
        "rater": audit.rater,
        "task": audit.task,
        "topic_model_version": audit.topic_model_version,
        "threshold": audit.threshold,
        "n_judged": audit.n_judged,
        "mae": audit.mae,
        "n_over_sensitive": audit.n_over_sensitive,
        "n_under_sensitive": audit.n_under_sensitive,
        "worst_topics": [topic(t) for t in worst_topics(audit.topics, top)],
        "over_sensitive_topics": [t.topic_id for t in sensitive_topics(audit.topics, OVER, top)],
        "under_sensitive_topics": [t.topic_id for t in sensitive_topics(audit.topics, UNDER, top)],
    }
