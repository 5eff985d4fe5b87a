"""The daily report: the marts as pictures people can look at, and the numbers behind them.

Four figures over a lookback window ending at the report's day: toxicity per scorer over the days, share
sociopolitical and ideology mix per labeler over the days, toxicity by ideology, and the topics where a system
disagrees most with a rater (the `audit_by_topic` mart, over everything judged). A fifth, once a local scorer
has been bridged to Perspective (`marts.scorer_bridge`), shows both instruments' series across the switch over
the whole history up to the report's day, overlap days shaded and posts per day below, so a change at the
switch can be told from a change in the posts. Each is written as a PNG beside
a self-contained `index.html` that repeats the plotted numbers as tables, and returned as bytes so the Dagster
asset can embed them in its materialization's Markdown.

Plotting uses matplotlib's object API (no pyplot: no global figure state, no GUI backend), and PNGs are saved
without the Software tag, so the same data gives byte-identical files. Missing data is drawn as a "no data"
panel, never an exception: an empty day still gets a report that says so.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import matplotlib
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bsky_warehouse.assets.topics import current_version
from bsky_warehouse.resources.warehouse import table_exists
from bsky_warehouse.settings import REPORTS_DIR

# Rendering only to files, never to a screen (Figure objects draw with Agg regardless; this pins any pyplot use).
matplotlib.use("Agg")

REPORTS_ENV = REPORTS_DIR.name
DEFAULT_LOOKBACK_DAYS = 30
AUDIT_TOP_TOPICS = 8
AUDIT_MAX_PANELS = 6
IDEOLOGIES = ["left", "right", "moderate", "unclear"]
IDEOLOGY_COLORS = {"left": "#3b6fb6", "right": "#c8453a", "moderate": "#8c6bb1", "unclear": "#9e9e9e",
                   "not_sociopolitical": "#d9d9d9"}  # fmt: skip
DPI = 100
PNG_METADATA = {"Software": None}


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


# Figures ----------------------------------------------------------------------------------------------------


def _no_data(ax: Axes, message: str = "no data") -> None:
    text = ax.text(0.5, 0.5, textwrap.fill(message, 70), ha="center", va="center", fontsize=12, color="#666666",
                   transform=ax.transAxes)  # fmt: skip
    text.set_in_layout(False)
    ax.set_xticks([])
    ax.set_yticks([])


def _day_axis(ax: Axes, start: date, end: date) -> None:
    half_day = timedelta(hours=12)
    ax.set_xlim(datetime.combine(start, time()) - half_day, datetime.combine(end, time()) + half_day)
    span = (end - start).days + 1
    step = max(1, span // 10)
    ax.set_xticks([start + timedelta(days=i) for i in range(0, span, step)])
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.grid(True, axis="y", alpha=0.3)


def _every_day(rows: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """The rows reindexed on every day of the window: a day without data is a gap in the line, not a bridge."""
    days = pd.Index([start + timedelta(days=i) for i in range((end - start).days + 1)], name="day")
    return rows.set_index("day").reindex(days).reset_index()


def _colors(names: list[str]) -> dict[str, str]:
    cycle = matplotlib.color_sequences["tab10"]
    return {name: mcolors.to_hex(cycle[i % len(cycle)]) for i, name in enumerate(sorted(names))}


def plot_toxicity_over_days(frame: pd.DataFrame, start: date, end: date) -> Figure:
    """Per scorer and day: median and 90th percentile of prob_toxicity, and the share at or above 0.5."""
    fig = Figure(figsize=(9, 6), dpi=DPI, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    fig.suptitle(f"Toxicity per scorer, {start} to {end}")
    if frame.empty:
        _no_data(top)
        _no_data(bottom)
        return fig
    colors = _colors(list(frame["scorer"].unique()))
    for scorer, rows in frame.groupby("scorer", sort=True):
        rows = _every_day(rows, start, end)
        color = colors[scorer]
        top.plot(rows["day"], rows["median"], marker="o", color=color, label=f"{scorer} median")
        top.plot(rows["day"], rows["p90"], marker=".", linestyle="--", color=color, label=f"{scorer} p90")
        bottom.plot(rows["day"], rows["share_ge_0_5"], marker="o", color=color, label=scorer)
    top.set_ylabel("prob_toxicity")
    top.set_ylim(0, 1)
    top.legend(fontsize=8, ncols=2)
    bottom.set_ylabel("share ≥ 0.5")
    bottom.set_ylim(0, max(0.05, float(frame["share_ge_0_5"].max()) * 1.15))
    bottom.legend(fontsize=8)
    for ax in (top, bottom):
        _day_axis(ax, start, end)
    bottom.set_xlabel("day (UTC)")
    return fig


def plot_sociopolitical_over_days(frame: pd.DataFrame, start: date, end: date) -> Figure:
    """Share of posts each labeler calls sociopolitical per day, then each labeler's ideology mix per day."""
    systems = sorted(frame["system"].unique()) if not frame.empty else []
    fig = Figure(figsize=(9, 3 + 2.2 * max(1, len(systems))), dpi=DPI, layout="constrained")
    axes = fig.subplots(1 + max(1, len(systems)), 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(f"Sociopolitical labels per labeler, {start} to {end}")
    if frame.empty:
        for ax in axes:
            _no_data(ax)
        return fig
    pooled = _pool_prompt_versions(frame)
    colors = _colors(systems)
    for system, rows in pooled.groupby("system", sort=True):
        rows = _every_day(rows, start, end)
        axes[0].plot(rows["day"], rows["share_sociopolitical"], marker="o", color=colors[system], label=system)
    axes[0].set_ylabel("share sociopolitical")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    _day_axis(axes[0], start, end)
    for ax, system in zip(axes[1:], systems, strict=True):
        rows = pooled[pooled["system"] == system]
        total = rows[IDEOLOGIES].sum(axis=1).where(lambda s: s > 0)
        bottom = pd.Series(0.0, index=rows.index)
        for ideology in IDEOLOGIES:
            share = (rows[ideology] / total).fillna(0.0)
            ax.bar(rows["day"], share, bottom=bottom, width=0.8, color=IDEOLOGY_COLORS[ideology], label=ideology)
            bottom = bottom + share
        ax.set_ylabel("ideology mix")
        ax.set_ylim(0, 1)
        ax.set_title(f"{system}: ideology of its sociopolitical posts", fontsize=10, loc="left")
        _day_axis(ax, start, end)
    fig.legend(*axes[1].get_legend_handles_labels(), loc="outside right center", fontsize=8, title="ideology")
    axes[-1].set_xlabel("day (UTC)")
    return fig


def _pool_prompt_versions(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (labeler/model, day), summing its prompt versions' counts."""
    counts = ["posts_labeled", "sociopolitical", *IDEOLOGIES]
    pooled = frame.groupby(["system", "day"], as_index=False)[counts].sum()
    pooled["share_sociopolitical"] = pooled["sociopolitical"] / pooled["posts_labeled"].where(lambda s: s > 0)
    return pooled


def plot_toxicity_by_ideology(frame: pd.DataFrame, start: date, end: date) -> Figure:
    """Mean toxicity of each ideology group (as each labeler assigns it), one panel per scorer, over the window."""
    scorers = sorted(frame["scorer"].unique()) if not frame.empty else []
    fig = Figure(figsize=(9, 0.5 + 3.2 * max(1, len(scorers))), dpi=DPI, layout="constrained")
    axes = fig.subplots(max(1, len(scorers)), 1, squeeze=False)[:, 0]
    fig.suptitle(f"Mean toxicity by ideology, {start} to {end}")
    if frame.empty:
        _no_data(axes[0])
        return fig
    groups = [g for g in [*IDEOLOGIES, "not_sociopolitical"] if g in set(frame["ideology"])]
    groups += sorted(set(frame["ideology"]) - set(groups))
    systems = sorted(frame["system"].unique())
    colors = _colors(systems)
    width = 0.8 / len(systems)
    for ax, scorer in zip(axes, scorers, strict=True):
        rows = frame[frame["scorer"] == scorer]
        for i, system in enumerate(systems):
            part = rows[rows["system"] == system].set_index("ideology").reindex(groups)
            xs = [g + (i - (len(systems) - 1) / 2) * width for g in range(len(groups))]
            bars = ax.bar(xs, part["mean_toxicity"].fillna(0.0), width=width, color=colors[system], label=system)
            for bar, n in zip(bars, part["n"], strict=True):
                if pd.notna(n):
                    ax.annotate(f"{int(n)}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                                va="bottom", fontsize=7, color="#444444")  # fmt: skip
        ax.set_xticks(range(len(groups)), [g.replace("_", " ") for g in groups])
        ax.set_ylabel("mean prob_toxicity")
        ax.set_title(f"scorer {scorer} (bar labels: posts)", fontsize=10, loc="left")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_audit_worst_topics(frame: pd.DataFrame | None, note: str | None = None) -> Figure:
    """Per (system, rater, task): the topics with the largest error, as MAE and the over/under-sensitive shares."""
    panels = [] if frame is None or frame.empty else list(frame.groupby(["system", "rater", "task"], sort=True))
    panels = panels[:AUDIT_MAX_PANELS]
    fig = Figure(figsize=(10, 0.6 + 3.4 * max(1, len(panels))), dpi=DPI, layout="constrained")
    axes = fig.subplots(max(1, len(panels)), 1, squeeze=False)[:, 0]
    fig.suptitle(f"Worst topics per audited system (top {AUDIT_TOP_TOPICS} by error)")
    if not panels:
        _no_data(axes[0], note or "no audit rows")
        return fig
    measures = [("mae", "MAE", "#555555"), ("over_sensitive_share", "over-sensitive (system yes, human no)", "#c8453a"),
                ("under_sensitive_share", "under-sensitive (system no, human yes)", "#3b6fb6")]  # fmt: skip
    height = 0.8 / len(measures)
    for ax, ((system, rater, task), rows) in zip(axes, panels, strict=True):
        rows = rows.sort_values("error_rank").head(AUDIT_TOP_TOPICS).iloc[::-1]
        labels = [f"{_short(label)} (n={n})" for label, n in zip(rows["topic_label"], rows["n_judged"], strict=True)]
        for i, (column, name, color) in enumerate(measures):
            ys = [y + (1 - i) * height for y in range(len(rows))]
            ax.barh(ys, rows[column].fillna(0.0), height=height, color=color, label=name)
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_title(f"{system} vs {rater} ({task})", fontsize=10, loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    axes[-1].set_xlabel("MAE on the [0, 1] scale; shares of the topic's judged posts")
    return fig


BRIDGE_COLORS = {"reference": "#222222", "local": "#9e9e9e", "mapped": "#3b6fb6"}
OVERLAP_SHADE = "#f3e3b3"


def overlap_spans(days: list[date]) -> list[tuple[date, date]]:
    """Runs of consecutive overlap days as (first, last): one shaded band per run, not one per day."""
    spans: list[tuple[date, date]] = []
    for day in sorted(days):
        if spans and day == spans[-1][1] + timedelta(days=1):
            spans[-1] = (spans[-1][0], day)
        else:
            spans.append((day, day))
    return spans


def plot_scorer_bridge(frame: pd.DataFrame, end: date) -> Figure:
    """Per local scorer: the daily mean and share ≥ 0.5 of prob_toxicity from Perspective, from the local scorer as
    scored, and from the local scorer mapped onto Perspective's scale; days both instruments scored shaded; posts
    per instrument per day below (a jump on a day with few posts is noise, not a trend)."""
    scorers = sorted(frame["local_scorer"].unique()) if not frame.empty else []
    fig = Figure(figsize=(10, 0.6 + 6.6 * max(1, len(scorers))), dpi=DPI, layout="constrained")
    axes = fig.subplots(3 * max(1, len(scorers)), 1, squeeze=False)[:, 0]
    fig.suptitle(f"Toxicity across the change of instrument, up to {end} (shaded: days scored by both)")
    if frame.empty:
        for ax in axes:
            _no_data(ax)
        return fig
    start = min(frame["day"])
    for i, scorer in enumerate(scorers):
        rows = frame[frame["local_scorer"] == scorer]
        reference = str(rows["reference_scorers"].iloc[0])
        mean_ax, share_ax, n_ax = axes[3 * i : 3 * i + 3]
        daily = _every_day(rows, start, end)
        series = [("reference", f"Perspective ({reference})", "-"), ("local", f"{scorer} as scored", "--"),
                  ("mapped", f"{scorer} on Perspective's scale", "-")]  # fmt: skip
        for ax, measure in ((mean_ax, "mean"), (share_ax, "share_ge_0_5")):
            for first, last in overlap_spans(list(rows.loc[rows["overlap_day"].astype(bool), "day"])):
                ax.axvspan(datetime.combine(first, time()) - timedelta(hours=12),
                           datetime.combine(last, time()) + timedelta(hours=12), color=OVERLAP_SHADE, lw=0)  # fmt: skip
            for kind, label, style in series:
                ax.plot(daily["day"], daily[f"{kind}_{measure}"], marker="o", markersize=3, linestyle=style,
                        color=BRIDGE_COLORS[kind], label=label)  # fmt: skip
            _day_axis(ax, start, end)
        mean_ax.set_title(f"{scorer} bridged by {rows['mapping_version'].iloc[0]}", fontsize=10, loc="left")
        mean_ax.set_ylabel("mean prob_toxicity")
        mean_ax.set_ylim(0, max(0.05, float(rows[["reference_mean", "local_mean", "mapped_mean"]].max().max()) * 1.15))
        mean_ax.legend(fontsize=8)
        share_ax.set_ylabel("share ≥ 0.5")
        shares = rows[["reference_share_ge_0_5", "local_share_ge_0_5", "mapped_share_ge_0_5"]].max().max()
        share_ax.set_ylim(0, max(0.05, float(0 if pd.isna(shares) else shares) * 1.15))
        offset = timedelta(hours=5)
        when = [datetime.combine(d, time()) for d in rows["day"]]
        n_ax.bar([w - offset for w in when], rows["n_reference"], width=0.4, color=BRIDGE_COLORS["reference"],
                 label="Perspective")  # fmt: skip
        n_ax.bar([w + offset for w in when], rows["n_local"], width=0.4, color=BRIDGE_COLORS["mapped"], label=scorer)
        n_ax.set_ylabel("posts scored")
        n_ax.legend(fontsize=8)
        _day_axis(n_ax, start, end)
    axes[-1].set_xlabel("day (UTC)")
    return fig


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def figure_png(fig: Figure) -> bytes:
    """PNG bytes with no timestamp or software tag: the same figure always gives the same bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata=PNG_METADATA)
    return buffer.getvalue()


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
            _pool_prompt_versions(data.sociopolitical).round(4) if not data.sociopolitical.empty else pd.DataFrame(),
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
