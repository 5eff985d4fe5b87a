"""The daily report's figures (report.py): the marts' rows drawn as matplotlib Figures, and their PNG bytes.

Plotting uses matplotlib's object API (no pyplot: no global figure state, no GUI backend), and PNGs are saved
without the Software tag, so the same data gives byte-identical files. Missing data is drawn as a "no data"
panel, never an exception: an empty day still gets a report that says so. Kept apart from report.py because
matplotlib costs about 0.7 s to import, which every Dagster step process would otherwise pay.
"""

from __future__ import annotations

import io
import textwrap
from datetime import date, datetime, time, timedelta

import matplotlib
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Rendering only to files, never to a screen (Figure objects draw with Agg regardless; this pins any pyplot use).
matplotlib.use("Agg")

AUDIT_TOP_TOPICS = 8
AUDIT_MAX_PANELS = 6
IDEOLOGIES = ["left", "right", "moderate", "unclear"]
IDEOLOGY_COLORS = {"left": "#3b6fb6", "right": "#c8453a", "moderate": "#8c6bb1", "unclear": "#9e9e9e",
                   "not_sociopolitical": "#d9d9d9"}  # fmt: skip
DPI = 100
PNG_METADATA = {"Software": None}


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
    """Per scorer and day: median and 90th percentile of prob_toxicity, the share at or above 0.5, and the posts
    scored (a day of 1 post is not read like a day of 177)."""
    fig = Figure(figsize=(9, 8), dpi=DPI, layout="constrained")
    top, bottom, n_ax = fig.subplots(3, 1, sharex=True, height_ratios=[3, 3, 2])
    fig.suptitle(f"Toxicity per scorer, {start} to {end}")
    if frame.empty:
        for ax in (top, bottom, n_ax):
            _no_data(ax)
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
    _posts_per_day(n_ax, frame, "scorer", "n", colors, "posts scored")
    for ax in (top, bottom, n_ax):
        _day_axis(ax, start, end)
    n_ax.set_xlabel("day (UTC)")
    return fig


def _posts_per_day(ax: Axes, frame: pd.DataFrame, key: str, n_column: str, colors: dict[str, str], label: str) -> None:
    """Posts per day of each series as side-by-side bars under the day, so a share is read with its n."""
    names = sorted(frame[key].unique())
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        rows = frame[frame[key] == name].groupby("day", as_index=False)[n_column].sum()
        offset = timedelta(days=(i - (len(names) - 1) / 2) * width)
        when = [datetime.combine(d, time()) + offset for d in rows["day"]]
        ax.bar(when, rows[n_column].astype(int), width=width, color=colors[name], label=name)
    ax.set_ylabel(label)
    ax.legend(fontsize=8)


def plot_sociopolitical_over_days(frame: pd.DataFrame, start: date, end: date) -> Figure:
    """Share of posts each labeler calls sociopolitical per day, then each labeler's ideology mix per day."""
    systems = sorted(frame["system"].unique()) if not frame.empty else []
    fig = Figure(figsize=(9, 5 + 2.2 * max(1, len(systems))), dpi=DPI, layout="constrained")
    axes = fig.subplots(2 + max(1, len(systems)), 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(f"Sociopolitical labels per labeler, {start} to {end}")
    if frame.empty:
        for ax in axes:
            _no_data(ax)
        return fig
    pooled = pool_prompt_versions(frame)
    colors = _colors(systems)
    for system, rows in pooled.groupby("system", sort=True):
        rows = _every_day(rows, start, end)
        axes[0].plot(rows["day"], rows["share_sociopolitical"], marker="o", color=colors[system], label=system)
    axes[0].set_ylabel("share sociopolitical")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    _posts_per_day(axes[1], pooled, "system", "posts_labeled", colors, "posts labelled")
    for ax in axes[:2]:
        _day_axis(ax, start, end)
    for ax, system in zip(axes[2:], systems, strict=True):
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
    fig.legend(*axes[2].get_legend_handles_labels(), loc="outside right center", fontsize=8, title="ideology")
    axes[-1].set_xlabel("day (UTC)")
    return fig


def pool_prompt_versions(frame: pd.DataFrame) -> pd.DataFrame:
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
