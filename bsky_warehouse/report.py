"""The daily report: the marts as pictures people can look at, and the numbers behind them.

Four figures over a lookback window ending at the report's day: toxicity per scorer over the days, share
sociopolitical and ideology mix per labeler over the days, toxicity by ideology, and the topics where a system
disagrees most with a rater (the `audit_by_topic` mart, over everything judged). A fifth, once a local scorer
has been bridged to Perspective (`marts.scorer_bridge`), shows both instruments' series across the switch over
the whole history up to the report's day, overlap days shaded and posts per day below, so a change at the
switch can be told from a change in the posts. Each is written as a PNG beside
a self-contained `index.html` that repeats the plotted numbers as tables, and returned as bytes so the Dagster
asset can embed them in its materialization's Markdown.

This module reads the marts and writes the page; the figures are drawn in report_figures.py, which imports
matplotlib (about 0.7 s) and is imported only when a report is rendered, not by every Dagster step process.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from bsky_warehouse.assets.topics import current_version
from bsky_warehouse.resources.warehouse import table_exists
from bsky_warehouse.settings import REPORTS_DIR

REPORTS_ENV = REPORTS_DIR.name
DEFAULT_LOOKBACK_DAYS = 30


def reports_root(configured: str | None = None) -> Path:
    """Where reports go: the configured folder, else $BSKY_WAREHOUSE_REPORTS, else `reports/` under the cwd."""
    return (Path(configured) if configured else REPORTS_DIR.get()).expanduser().resolve()


@dataclass
class ReportData:
    """What the report shows: the marts' rows for the window [start, end] (inclusive days), and the audit."""

    start: date
    end: date
    toxicity: pd.DataFrame
    sociopolitical: pd.DataFrame
    by_ideology: pd.DataFrame
    audit: pd.DataFrame | None
    notes: dict[str, str] = field(default_factory=dict)
    # marts.scorer_bridge's toxicity rows up to `end` (all history: the switch need not be in the window).
    bridge: pd.DataFrame = field(default_factory=pd.DataFrame)


TOXICITY_SQL = """
    SELECT day, scorer, n, mean, median, p90, share_ge_0_5 FROM marts.daily_toxicity_summary
    WHERE attribute = 'toxicity' AND day BETWEEN $start AND $end ORDER BY scorer, day"""
SOCIOPOLITICAL_SQL = """
    SELECT day, labeler || '/' || model AS system, prompt_version, posts_labeled, share_sociopolitical, sociopolitical,
           ideology_left AS "left", ideology_right AS "right", ideology_moderate AS moderate,
           ideology_unclear AS unclear
    FROM marts.daily_sociopolitical_summary
    WHERE day BETWEEN $start AND $end ORDER BY system, prompt_version, day"""
# Daily rows pooled over the window: means weighted by each day's n (medians do not pool, so none are shown).
BY_IDEOLOGY_SQL = """
    SELECT scorer, labeler || '/' || model AS system, ideology, sum(n) AS n,
           sum(n * mean_toxicity) / sum(n) AS mean_toxicity, sum(n * share_toxic) / sum(n) AS share_toxic
    FROM marts.toxicity_by_ideology
    WHERE day BETWEEN $start AND $end GROUP BY ALL ORDER BY scorer, system, ideology"""
BRIDGE_SQL = """
    SELECT day, local_scorer, reference_scorers, mapping_version, n_reference, n_local, n_both, overlap_day,
           reference_mean, local_mean, mapped_mean, reference_share_ge_0_5, local_share_ge_0_5, mapped_share_ge_0_5
    FROM marts.scorer_bridge
    WHERE attribute = 'toxicity' AND day <= $end ORDER BY local_scorer, day"""
AUDIT_SQL = """
    SELECT system, rater, task, topic_model_version, topic_id, topic_label, n_judged, system_mean, human_mean,
           mae, over_sensitive_share, under_sensitive_share, error_rank
    FROM marts.audit_by_topic {where} ORDER BY system, rater, task, error_rank"""


def load_report_data(
    con: duckdb.DuckDBPyConnection, end: date, lookback_days: int, earliest: date | None = None
) -> ReportData:
    """The window's rows from each mart; a mart not built yet is an empty frame with a note, not an error.

    The window is the `lookback_days` days ending at `end`, cut at `earliest` (the first partition: nothing
    can exist before it, and an empty month to the left would squeeze the days that have data)."""
    if lookback_days < 1:
        raise ValueError(f"lookback_days must be at least 1, got {lookback_days}")
    start = end - timedelta(days=lookback_days - 1)
    if earliest is not None:
        start = min(end, max(start, earliest))
    window = {"start": start, "end": end}
    notes: dict[str, str] = {}
    frames: dict[str, pd.DataFrame] = {}
    for name, mart, sql in (
        ("toxicity", "daily_toxicity_summary", TOXICITY_SQL),
        ("sociopolitical", "daily_sociopolitical_summary", SOCIOPOLITICAL_SQL),
        ("by_ideology", "toxicity_by_ideology", BY_IDEOLOGY_SQL),
    ):
        if table_exists(con, "marts", mart):
            frames[name] = con.execute(sql, window).df()
        else:
            frames[name] = pd.DataFrame()
            notes[name] = f"marts.{mart} is not in the warehouse yet (run the dbt marts)."
    audit = None
    if table_exists(con, "marts", "audit_by_topic"):
        where, params = "", {}
        current = current_version(con) if table_exists(con, "main", "topic_models") else None
        if current:
            where, params = "WHERE topic_model_version = $version", {"version": current}
        audit = con.execute(AUDIT_SQL.format(where=where), params).df()
    else:
        notes["audit"] = (
            "marts.audit_by_topic is not in the warehouse yet: import human judgements, assign topics and build "
            "the audit mart to see where a system disagrees with a rater."
        )
    # No bridge mart (or no mapping in it) is no gap in the report: there is then one instrument, nothing to bridge.
    frames["bridge"] = (
        con.execute(BRIDGE_SQL, {"end": end}).df() if table_exists(con, "marts", "scorer_bridge") else pd.DataFrame()
    )
    for name in ("toxicity", "sociopolitical", "bridge"):
        if not frames[name].empty:
            frames[name]["day"] = pd.to_datetime(frames[name]["day"]).dt.date
    return ReportData(start, end, frames["toxicity"], frames["sociopolitical"], frames["by_ideology"], audit, notes,
                      frames["bridge"])  # fmt: skip


# The page ---------------------------------------------------------------------------------------------------


@dataclass
class Section:
    name: str
    title: str
    png: bytes
    table: pd.DataFrame
    note: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.name}.png"


@dataclass
class RenderedReport:
    directory: Path
    index: Path
    sections: list[Section]

    def markdown(self) -> str:
        """The figures inline (base64 data URIs), as the Dagster UI renders Markdown metadata."""
        parts = []
        for s in self.sections:
            parts.append(f"### {s.title}")
            if s.note:
                parts.append(f"_{s.note}_")
            parts.append(f"![{s.title}](data:image/png;base64,{base64.b64encode(s.png).decode('ascii')})")
        return "\n\n".join(parts)


def build_sections(data: ReportData) -> list[Section]:
    """The four figures (and the bridged series where a mapping exists) with the numbers each one plots (rounded
    for reading) and a note where data is missing."""
    # matplotlib only when rendering: every Dagster step process imports this module.
    from bsky_warehouse.report_figures import (
        figure_png,
        plot_audit_worst_topics,
        plot_sociopolitical_over_days,
        plot_toxicity_by_ideology,
        plot_toxicity_over_days,
        pool_prompt_versions,
    )

    audit_note = data.notes.get("audit")
    if data.audit is not None:
        audit_note = "Over every judged post the audit covers, not only this window."
    window = (data.start, data.end)
    sections = [
        Section(
            "toxicity_over_days",
            "Toxicity per scorer over days",
            figure_png(plot_toxicity_over_days(data.toxicity, *window)),
            data.toxicity.round(4),
            data.notes.get("toxicity"),
        ),
        Section(
            "sociopolitical_over_days",
            "Share sociopolitical and ideology mix per labeler",
            figure_png(plot_sociopolitical_over_days(data.sociopolitical, *window)),
            pool_prompt_versions(data.sociopolitical).round(4) if not data.sociopolitical.empty else pd.DataFrame(),
            data.notes.get("sociopolitical"),
        ),
        Section(
            "toxicity_by_ideology",
            "Toxicity by ideology",
            figure_png(plot_toxicity_by_ideology(data.by_ideology, *window)),
            data.by_ideology.round(4),
            data.notes.get("by_ideology"),
        ),
        Section(
            "audit_worst_topics",
            "Audit: worst topics",
            figure_png(plot_audit_worst_topics(data.audit, audit_note)),
            pd.DataFrame() if data.audit is None else data.audit.round(4),
            audit_note,
        ),
    ]
    return [*sections, *bridge_sections(data)]


def bridge_sections(data: ReportData) -> list[Section]:
    """The bridged series, only where a mapping exists: a warehouse with one instrument has nothing to bridge."""
    from bsky_warehouse.report_figures import figure_png, plot_scorer_bridge  # matplotlib: only when rendering

    if data.bridge.empty:
        return []
    return [
        Section(
            "scorer_bridge",
            "Toxicity across the change of instrument",
            figure_png(plot_scorer_bridge(data.bridge, data.end)),
            data.bridge.round(4),
            f"Every day up to {data.end}, not only this window: shaded days were scored by both instruments.",
        )
    ]


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p class='empty'>no rows</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{'' if pd.isna(v) else html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(data: ReportData, sections: list[Section], generated_at: datetime) -> str:
    items = []
    for s in sections:
        note = f"<p class='note'>{html.escape(s.note)}</p>" if s.note else ""
        items.append(
            f"<section id='{s.name}'><h2>{html.escape(s.title)}</h2>{note}"
            f"<img src='{s.filename}' alt='{html.escape(s.title)}'>"
            f"<details><summary>numbers</summary>{_html_table(s.table)}</details></section>"
        )
    toc = "".join(f"<li><a href='#{s.name}'>{html.escape(s.title)}</a></li>" for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bsky-warehouse report {data.end}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
th {{ background: #f3f3f3; }}
.note {{ color: #8a5a00; }} .empty {{ color: #666; }}
</style></head><body>
<h1>bsky-warehouse daily report: {data.end}</h1>
<p>Window: {data.start} to {data.end} (UTC days, inclusive).
Generated at {generated_at.isoformat(timespec="seconds")}.</p>
<ul>{toc}</ul>
{"".join(items)}
</body></html>
"""


def render_report(data: ReportData, directory: Path, generated_at: datetime | None = None) -> RenderedReport:
    """Write the PNGs and index.html into `directory` (replacing what a previous run wrote there)."""
    sections = build_sections(data)
    directory.mkdir(parents=True, exist_ok=True)
    for s in sections:
        _write_atomic(directory / s.filename, s.png)
    index = directory / "index.html"
    _write_atomic(index, render_html(data, sections, generated_at or datetime.now(UTC)).encode("utf-8"))
    return RenderedReport(directory, index, sections)


def _write_atomic(path: Path, content: bytes) -> None:
    """A reader (a browser, a web server) never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    tmp.replace(path)
