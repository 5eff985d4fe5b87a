"""The daily report: PNGs and index.html from a tiny warehouse and from an empty one, byte-stable figures, and the
Markdown images on the Dagster materialization."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import materialize

from bsky_warehouse.project import DBT_PROJECT_DIR
from bsky_warehouse.report import load_report_data, render_report
from bsky_warehouse.report_figures import figure_png, plot_toxicity_over_days

END = date(2024, 3, 12)
FILES = {
    "index.html",
    "toxicity_over_days.png",
    "sociopolitical_over_days.png",
    "toxicity_by_ideology.png",
    "audit_worst_topics.png",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The mart columns the report reads, with the types dbt gives them; checked against _marts.yml below.
MARTS = {
    "daily_toxicity_summary": "day DATE, scorer VARCHAR, attribute VARCHAR, n BIGINT, mean DOUBLE, median DOUBLE, "
    "p90 DOUBLE, share_ge_0_5 DOUBLE",
    "daily_sociopolitical_summary": "day DATE, labeler VARCHAR, model VARCHAR, prompt_version VARCHAR, "
    "posts_labeled BIGINT, sociopolitical BIGINT, share_sociopolitical DOUBLE, ideology_left BIGINT, "
    "ideology_right BIGINT, ideology_moderate BIGINT, ideology_unclear BIGINT",
    "toxicity_by_ideology": "day DATE, scorer VARCHAR, labeler VARCHAR, model VARCHAR, prompt_version VARCHAR, "
    "ideology VARCHAR, n BIGINT, mean_toxicity DOUBLE, share_toxic DOUBLE",
}
AUDIT = (
    "system VARCHAR, rater VARCHAR, task VARCHAR, topic_model_version VARCHAR, topic_id INTEGER, topic_label VARCHAR, "
    "n_judged BIGINT, system_mean DOUBLE, human_mean DOUBLE, mae DOUBLE, over_sensitive_share DOUBLE, "
    "under_sensitive_share DOUBLE, error_rank BIGINT"
)


def test_the_report_reads_only_columns_the_marts_document():
    documented = {
        model["name"]: {c["name"] for c in model.get("columns", [])}
        for model in yaml.safe_load((DBT_PROJECT_DIR / "models" / "marts" / "_marts.yml").read_text())["models"]
    }
    for mart, columns in MARTS.items():
        assert {c.split()[0] for c in columns.split(", ")} <= documented[mart], mart


def fill_tiny_warehouse(con, with_audit: bool = True) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")
    for mart, columns in MARTS.items():
        con.execute(f"CREATE TABLE marts.{mart} ({columns})")
    for i in range(4):
        day = END - timedelta(days=i)
        for scorer, level in (("profanity-check", 0.05), ("perspective-2024-reference", 0.15)):
            con.execute(
                "INSERT INTO marts.daily_toxicity_summary VALUES (?, ?, 'toxicity', 20, ?, ?, ?, ?)",
                [day, scorer, level + 0.05, level + 0.01 * i, level + 0.4, 0.05 * i],
            )
            con.execute(
                "INSERT INTO marts.daily_toxicity_summary VALUES (?, ?, 'insult', 20, 0.9, 0.9, 0.9, 0.9)",
                [day, scorer],
            )
            for ideology, n in (("left", 8), ("right", 2), ("not_sociopolitical", 10)):
                con.execute(
                    "INSERT INTO marts.toxicity_by_ideology VALUES (?, ?, 'import', 'gpt-4', 'v1', ?, ?, ?, ?)",
                    [day, scorer, ideology, n, level + 0.1 * (ideology == "right"), 0.1],
                )
        con.execute(
            "INSERT INTO marts.daily_sociopolitical_summary VALUES (?, 'import', 'gpt-4', 'v1', 20, ?, ?, ?, 2, 1, 1)",
            [day, 10 + i, (10 + i) / 20, 6 + i],
        )
    # Before the window: must not show.
    con.execute(
        "INSERT INTO marts.daily_toxicity_summary VALUES (?, 'profanity-check', 'toxicity', 20, 1, 1, 1, 1)",
        [END - timedelta(days=40)],
    )
    if not with_audit:
        return
    con.execute(f"CREATE TABLE marts.audit_by_topic ({AUDIT})")
    now = datetime(2024, 3, 20, tzinfo=UTC)
    for version, fitted in (("old", now - timedelta(days=1)), ("new", now)):
        con.execute(
            """INSERT INTO topic_models VALUES (?, 0, 'x', ['x'], 1, list_transform(range(384), lambda i: 0.0),
                   'm', '{}', ?)""",
            [version, fitted],
        )
        for system in ("labeler:import/gpt-4", "labeler:import/llama-3-8b"):
            for topic in range(10):
                mae = 0.05 * (10 - topic)
                con.execute(
                    "INSERT INTO marts.audit_by_topic VALUES (?, 'hand', 'sociopolitical', ?, ?, ?, ?, 0.5, 0.5, ?, "
                    "?, ?, ?)",
                    [system, version, topic, f"{version} topic {topic} / election vote", 12, mae, mae * 0.6,
                     mae * 0.4, topic + 1],
                )  # fmt: skip


def test_report_on_a_tiny_warehouse(warehouse, tmp_path):
    with warehouse.connect() as con:
        fill_tiny_warehouse(con)
        data = load_report_data(con, END, lookback_days=30, earliest=date(2024, 3, 8))
    assert (data.start, data.end) == (date(2024, 3, 8), END)
    assert data.notes == {}
    assert set(data.toxicity["scorer"]) == {"profanity-check", "perspective-2024-reference"}
    assert len(data.toxicity) == 8  # 4 days x 2 scorers, the toxicity attribute only, none before the window
    assert set(data.audit["topic_model_version"]) == {"new"}  # the current topic model only

    report = render_report(data, tmp_path / "2024-03-12", generated_at=datetime(2024, 3, 13, tzinfo=UTC))
    assert {p.name for p in report.directory.iterdir()} == FILES
    for name in FILES - {"index.html"}:
        assert (report.directory / name).read_bytes().startswith(PNG_SIGNATURE)
    page = report.index.read_text(encoding="utf-8")
    for name in FILES - {"index.html"}:
        assert f"src='{name}'" in page
    assert "2024-03-08 to 2024-03-12" in page and "2024-03-13T00:00:00+00:00" in page
    assert "new topic 0 / election vote" in page and "old topic" not in page
    assert "not in the warehouse yet" not in page

    markdown = report.markdown()
    assert markdown.count("![") == 4
    first = markdown.split("data:image/png;base64,")[1].split(")")[0]
    assert base64.b64decode(first) == (report.directory / "toxicity_over_days.png").read_bytes()


def test_figures_are_byte_stable_and_carry_no_software_tag(warehouse):
    with warehouse.connect() as con:
        fill_tiny_warehouse(con, with_audit=False)
        data = load_report_data(con, END, lookback_days=5)
    first = figure_png(plot_toxicity_over_days(data.toxicity, data.start, data.end))
    again = figure_png(plot_toxicity_over_days(data.toxicity, data.start, data.end))
    assert first == again
    assert b"Software" not in first and b"matplotlib" not in first
    assert "audit" in data.notes


def test_report_on_an_empty_warehouse_says_what_is_missing(warehouse, tmp_path):
    with warehouse.connect() as con:
        data = load_report_data(con, END, lookback_days=30)
    assert set(data.notes) == {"toxicity", "sociopolitical", "by_ideology", "audit"}
    report = render_report(data, tmp_path / "empty")
    assert {p.name for p in report.directory.iterdir()} == FILES
    page = report.index.read_text(encoding="utf-8")
    assert "marts.audit_by_topic is not in the warehouse yet" in page
    assert page.count("no rows") == 4


def test_lookback_must_be_positive(warehouse):
    with warehouse.connect() as con, pytest.raises(ValueError, match="lookback_days"):
        load_report_data(con, END, lookback_days=0)


@pytest.mark.integration
def test_daily_report_asset_writes_one_report_per_day_and_embeds_the_figures(warehouse, tmp_path):
    from bsky_warehouse.assets.report import daily_report
    from bsky_warehouse.partitions import RANGE_END_TAG, RANGE_START_TAG

    with warehouse.connect() as con:
        fill_tiny_warehouse(con)
    root = tmp_path / "reports"
    result = materialize(
        [daily_report],
        resources={"warehouse": warehouse},
        run_config={"ops": {"daily_report": {"config": {"reports_dir": str(root), "lookback_days": 7}}}},
        tags={RANGE_START_TAG: "2024-03-11", RANGE_END_TAG: "2024-03-12"},
    )
    assert sorted(p.name for p in root.iterdir()) == ["2024-03-11", "2024-03-12"]
    assert all({p.name for p in (root / day).iterdir()} == FILES for day in ("2024-03-11", "2024-03-12"))
    materializations = result.asset_materializations_for_node("daily_report")
    assert sorted(m.partition for m in materializations) == ["2024-03-11", "2024-03-12"]
    metadata = materializations[-1].metadata
    assert metadata["report"].value.count("](data:image/png;base64,") == 4
    assert Path(metadata["index_html"].value) == root / "2024-03-12" / "index.html"
    assert metadata["window"].value == "2024-03-08 to 2024-03-12"
