"""The audit: audit_by_topic's arithmetic on a case small enough to compute by hand, per-system thresholds,
what-ifs that stay in their own tables, and the `audit` command's report with example posts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest

from bsky_warehouse.assets.dbt import AuditWhatIf, build_audit_whatif
from bsky_warehouse.audit import OVER, UNDER, Audit, Example, TopicAudit, render_markdown, report_path, sensitive_topics
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.project import DBT_ENV, DBT_PROJECT_DIR, dbt_executable
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.factories import uri

DAY = date(2024, 3, 10)
AT = datetime(2024, 3, 10, 12, tzinfo=UTC)
VERSION = "topics-test"
SCORER = "scorer:s"
LABELER = "labeler:import/m"
# post -> (topic, prob_toxicity, toxicity judgement 0-4 or -1 unsure or None, latest is_sociopolitical,
#          sociopolitical judgement or None)
POSTS = {
    "p1": (0, 0.9, 1, False, 0),
    "p2": (0, 0.2, 0, False, 1),
    "p3": (0, 0.6, 4, None, None),
    "p4": (1, 0.1, 3, True, 1),
    "p5": (1, 0.4, -1, None, None),
    "p6": (1, 0.8, 2, True, 0),
    "p7": (None, 0.9, 0, True, 0),  # judged and answered, but no topic: not in the audit
    "p8": (1, None, 4, None, None),  # judged, in a topic, but the scorer has no answer: not in the audit
}
LABELS = {0: "cats · dogs · naps", 1: "senate · vote · bill"}


def dbt(db: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, **DBT_ENV, "BSKY_WAREHOUSE_DB": db}
    proc = subprocess.run(
        [dbt_executable(), *args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
        env=env, cwd=DBT_PROJECT_DIR, capture_output=True, text=True,
    )  # fmt: skip
    assert (proc.returncode == 0) == ok, proc.stdout[-4000:]
    return proc


def build(db: str, **dbt_vars: object) -> None:
    dbt(db, "build", "--select", "+audit_by_topic", "--vars", json.dumps({"audit_min_judged": 2, **dbt_vars}))


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("audit") / "wh.duckdb")
    with WarehouseResource(path=path).connect() as con:
        for name, (topic, prob, toxicity, social, social_judged) in POSTS.items():
            con.execute(
                """INSERT INTO cleaned_posts (uri, author_did, text, created_at, source, ingested_at, partition_date,
                       text_length, is_reply, has_link, passes_filters)
                   VALUES ($uri, 'did:plc:author1', $text, $at, 'archive', $at, $day, 10, false, false, true)""",
                {"uri": uri(name), "text": f"post {name}", "at": AT, "day": DAY},
            )
            if topic is not None:
                con.execute(
                    "INSERT INTO post_topics VALUES ($uri, $v, $topic, $label, 0.1, $at, $day)",
                    {"uri": uri(name), "v": VERSION, "topic": topic, "label": LABELS[topic], "at": AT, "day": DAY},
                )
            if prob is not None:
                con.execute(
                    """INSERT INTO toxicity_scores (uri, scorer, scorer_version, status, scored_at, partition_date,
                           prob_toxicity) VALUES ($uri, 's', '1', 'ok', $at, $day, $p)""",
                    {"uri": uri(name), "at": AT, "day": DAY, "p": prob},
                )
            if social is not None:
                con.execute(
                    """INSERT INTO llm_labels (uri, labeler, model, prompt_version, status, is_sociopolitical,
                           labeled_at, partition_date) VALUES ($uri, 'import', 'm', 'v2', 'ok', $s, $at, $day)""",
                    {"uri": uri(name), "s": social, "at": AT, "day": DAY},
                )
            judgements = [("toxicity", toxicity), ("sociopolitical", social_judged)]
            for task, value in judgements:
                if value is not None:
                    con.execute(
                        "INSERT INTO human_judgements VALUES ($uri, 'alice', $task, $value, NULL, 'f.csv', 2, $at)",
                        {"uri": uri(name), "task": task, "value": value, "at": AT},
                    )
        # An older prompt version said yes to p1; the latest (v2, labeled later) says no and is the one audited.
        con.execute(
            """INSERT INTO llm_labels (uri, labeler, model, prompt_version, status, is_sociopolitical, labeled_at,
                   partition_date)
               VALUES ($uri, 'import', 'm', 'v1', 'ok', true, TIMESTAMPTZ '2024-03-09 00:00:00+00', $day)""",
            {"uri": uri("p1"), "day": DAY},
        )
        # Another rater's judgement never mixes into alice's audit.
        con.execute(
            "INSERT INTO human_judgements VALUES ($uri, 'bob', 'toxicity', 4, NULL, 'g.csv', 2, $at)",
            {"uri": uri("p2"), "at": AT},
        )
    build(path)
    return path


def audit_rows(db: str, system: str, rater: str = "alice", relation: str = "audit_by_topic") -> dict[int, dict]:
    con = duckdb.connect(db, read_only=True)
    try:
        cursor = con.execute(
            f'SELECT * FROM marts."{relation}" WHERE system = $s AND rater = $r ORDER BY topic_id',
            {"s": system, "r": rater},
        )
        columns = [d[0] for d in cursor.description]
        return {row[columns.index("topic_id")]: dict(zip(columns, row, strict=True)) for row in cursor.fetchall()}
    finally:
        con.close()


def test_scorer_audit_matches_the_hand_computation(db):
    rows = audit_rows(db, SCORER)
    assert set(rows) == {0, 1}
    cats, politics = rows[0], rows[1]
    # cats: p1 .9 vs 1/4, p2 .2 vs 0, p3 .6 vs 4/4; the system flags p1 and p3 (>= .5), alice only p3 (>= 2).
    assert cats["n_judged"] == 3
    assert cats["system_mean"] == pytest.approx((0.9 + 0.2 + 0.6) / 3)
    assert cats["human_mean"] == pytest.approx((0.25 + 0 + 1) / 3)
    assert cats["mae"] == pytest.approx((0.65 + 0.2 + 0.4) / 3)
    assert (cats["n_over_sensitive"], cats["n_under_sensitive"]) == (1, 0)
    assert cats["over_sensitive_share"] == pytest.approx(1 / 3)
    assert cats["under_sensitive_share"] == 0
    # politics: p4 .1 vs 3/4, p6 .8 vs 2/4 (p5 is "unsure", p8 has no score); alice flags both, the system p6.
    assert politics["n_judged"] == 2
    assert politics["system_mean"] == pytest.approx(0.45)
    assert politics["human_mean"] == pytest.approx(0.625)
    assert politics["mae"] == pytest.approx((0.65 + 0.3) / 2)
    assert (politics["n_over_sensitive"], politics["n_under_sensitive"]) == (0, 1)
    assert politics["under_sensitive_share"] == pytest.approx(0.5)
    assert politics["mean_difference"] == pytest.approx(0.45 - 0.625)
    # Ranked by MAE: politics (.475) before cats (.4167).
    assert (politics["error_rank"], cats["error_rank"]) == (1, 2)
    assert {r["threshold"] for r in rows.values()} == {0.5}
    assert rows[0]["topic_label"] == LABELS[0]


def test_labeler_audit_uses_the_latest_prompt_version(db):
    rows = audit_rows(db, LABELER)
    assert {r["task"] for r in rows.values()} == {"sociopolitical"}
    # cats: p1 no vs no (v2, not v1's yes), p2 no vs yes -> one under-sensitive; politics: p4 yes vs yes, p6 yes vs no.
    assert (rows[0]["n_judged"], rows[0]["mae"], rows[0]["n_under_sensitive"], rows[0]["n_over_sensitive"]) == (
        2, 0.5, 1, 0)  # fmt: skip
    assert (rows[1]["n_judged"], rows[1]["mae"], rows[1]["n_under_sensitive"], rows[1]["n_over_sensitive"]) == (
        2, 0.5, 0, 1)  # fmt: skip


def test_raters_do_not_mix_and_posts_without_a_topic_or_answer_are_left_out(db):
    bob = audit_rows(db, SCORER, rater="bob")
    assert list(bob) == [0] and bob[0]["n_judged"] == 1 and bob[0]["human_mean"] == 1.0
    con = duckdb.connect(db, read_only=True)
    try:
        audited = {r[0] for r in con.execute("SELECT DISTINCT uri FROM marts.audit_judged_posts").fetchall()}
    finally:
        con.close()
    assert uri("p7") not in audited and uri("p8") not in audited and uri("p5") not in audited


def test_a_per_system_threshold_moves_only_that_system(tmp_path, db):
    copy = str(tmp_path / "wh.duckdb")
    Path(copy).write_bytes(Path(db).read_bytes())
    build(copy, audit_thresholds={SCORER: 0.85})
    rows = audit_rows(copy, SCORER)
    # At .85 the system flags only p1: cats over p1, under p3; politics under p4 and p6.
    assert (rows[0]["n_over_sensitive"], rows[0]["n_under_sensitive"]) == (1, 1)
    assert (rows[1]["n_over_sensitive"], rows[1]["n_under_sensitive"]) == (0, 2)
    assert {r["threshold"] for r in rows.values()} == {0.85}
    assert {r["threshold"] for r in audit_rows(copy, LABELER).values()} == {0.5}
    # The error does not depend on the threshold.
    assert rows[1]["mae"] == pytest.approx(audit_rows(db, SCORER)[1]["mae"])


def test_a_threshold_that_is_not_a_probability_stops_the_build(tmp_path, db):
    proc = dbt(db, "compile", "--select", "audit_judged_posts", "--vars", '{"audit_threshold": 2}', ok=False)
    assert "audit_threshold must be a number in [0, 1]" in proc.stdout
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AuditWhatIf(SCORER, 1.5)
    assert AuditWhatIf(LABELER, 0.7).relation("audit_by_topic") == "audit_by_topic__whatif_labeler_import_m_0_7"
    # The suffix becomes a table name: only [a-z0-9_] passes.
    bad = {"audit_whatif": {"system": SCORER, "threshold": 0.7, "suffix": "x; drop table cleaned_posts"}}
    proc = dbt(db, "compile", "--select", "audit_by_topic", "--vars", json.dumps(bad), ok=False)
    assert "audit_whatif.suffix must match" in proc.stdout


def test_a_what_if_stays_in_its_own_tables_and_a_later_build_leaves_it(tmp_path, db):
    copy = str(tmp_path / "wh.duckdb")
    Path(copy).write_bytes(Path(db).read_bytes())
    whatif = AuditWhatIf(SCORER, 0.85)
    build_audit_whatif(WarehouseResource(path=copy), whatif, {"audit_min_judged": 2})
    assert audit_rows(copy, SCORER) == audit_rows(db, SCORER), "the what-if leaked into the shared mart"
    build(copy)  # the next normal build
    configured = audit_rows(copy, SCORER)
    assert configured == audit_rows(db, SCORER) and {r["threshold"] for r in configured.values()} == {0.5}
    rows = audit_rows(copy, SCORER, relation=whatif.relation("audit_by_topic"))
    # The per-system test's figures at .85: cats over p1, under p3; politics under p4 and p6.
    assert (rows[0]["n_over_sensitive"], rows[0]["n_under_sensitive"]) == (1, 1)
    assert (rows[1]["n_over_sensitive"], rows[1]["n_under_sensitive"]) == (0, 2)
    assert {r["threshold"] for r in rows.values()} == {0.85}
    others = audit_rows(copy, LABELER, relation=whatif.relation("audit_by_topic"))
    assert {r["threshold"] for r in others.values()} == {0.5}


def test_audit_command_prints_worst_topics_and_writes_the_report(tmp_path, db):
    out = tmp_path / "report.md"
    env = {**os.environ, "BSKY_WAREHOUSE_DB": db}
    proc = subprocess.run(
        [sys.executable, "-m", "bsky_warehouse.cli", "audit", "--system", SCORER, "--rater", "alice",
         "--task", "toxicity", "--out", str(out), "--json"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["topic_model_version"] == VERSION
    assert [t["topic_id"] for t in summary["worst_topics"]] == [1, 0]
    assert summary["n_judged"] == 5 and summary["n_over_sensitive"] == 1 and summary["n_under_sensitive"] == 1
    assert summary["mae"] == pytest.approx((0.65 + 0.2 + 0.4 + 0.65 + 0.3) / 5)
    politics = summary["worst_topics"][0]
    assert [e["uri"] for e in politics["under_sensitive_examples"]] == [uri("p4")]
    assert politics["under_sensitive_examples"][0]["link"] == "https://bsky.app/profile/did:plc:author1/post/p4"
    report = out.read_text()
    assert "## Where the system is over-sensitive" in report and "cats · dogs · naps (topic 0)" in report
    assert "https://bsky.app/profile/did:plc:author1/post/p1" in report

    missing = subprocess.run(
        [sys.executable, "-m", "bsky_warehouse.cli", "audit", "--system", "scorer:nope", "--rater", "alice",
         "--task", "toxicity", "--out", str(out)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2
    assert (
        "no rows for scorer:nope / alice / toxicity" in missing.stderr
        and "scorer:s / alice / toxicity" in missing.stderr
    )


def topic(topic_id: int, n: int, over: int, under: int, enough: bool = True) -> TopicAudit:
    return TopicAudit(
        topic_id, f"t{topic_id}", n, 0.5, 0.5, 0.2, over, under, over / n, under / n, enough, topic_id + 1
    )


def test_sensitive_topics_rank_by_share_and_skip_thin_topics():
    topics = [topic(0, 10, 2, 0), topic(1, 4, 2, 1), topic(2, 2, 2, 2, enough=False), topic(3, 10, 0, 5)]
    assert [t.topic_id for t in sensitive_topics(topics, OVER, 5)] == [1, 0]
    assert [t.topic_id for t in sensitive_topics(topics, UNDER, 5)] == [3, 1]
    assert [t.topic_id for t in sensitive_topics(topics, OVER, 1)] == [1]


def test_markdown_report_lists_evidence_and_escapes_tables(tmp_path):
    audit = Audit(SCORER, "alice", "toxicity", VERSION, 0.5, [topic(0, 4, 1, 0)])
    audit.topics[0] = TopicAudit(0, "a | b", 4, 0.6, 0.2, 0.4, 1, 0, 0.25, 0.0, True, 1)
    audit.examples[(0, OVER)] = [Example(uri("p1"), "https://bsky.app/x", "line one\nline two", 0.91, 1.0)]
    text = render_markdown(audit)
    assert "a \\| b (topic 0)" in text
    assert "- system 0.910, person 1/4: [post](https://bsky.app/x) line one line two" in text
    assert "No topic judged often enough has posts the person flags" in text
    assert report_path(tmp_path, "labeler:import/gpt-4", "a b", "sociopolitical") == (
        tmp_path / "audits" / "labeler_import_gpt-4__a_b__sociopolitical.md"
    )


@pytest.mark.integration
def test_audit_threshold_option_is_a_what_if_the_daily_build_leaves_alone(tmp_path, db):
    from dagster import DagsterInstance

    from bsky_warehouse.pipeline import run_window

    copy = str(tmp_path / "wh.duckdb")
    Path(copy).write_bytes(Path(db).read_bytes())
    env = {**os.environ, "BSKY_WAREHOUSE_DB": copy, "DAGSTER_HOME": str(tmp_path / "dagster_home")}

    def audit(*extra: str) -> dict:
        proc = subprocess.run(
            [sys.executable, "-m", "bsky_warehouse.cli", "audit", "--system", SCORER, "--rater", "alice",
             "--task", "toxicity", "--out", str(tmp_path / "r.md"), "--json", *extra],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    summary = audit("--threshold", "0.85")
    assert summary["threshold"] == 0.85
    assert (summary["n_over_sensitive"], summary["n_under_sensitive"]) == (1, 3)  # see the per-system test
    assert {r["threshold"] for r in audit_rows(copy, SCORER).values()} == {0.5}
    # A build of the audit marts through Dagster (the unpartitioned asset) keeps the configured threshold and
    # leaves the what-if's tables as they were.
    result = run_window(DayWindow.for_day(DAY), DagsterInstance.ephemeral(), db_path=copy,
                        assets=["audit_judged_posts", "audit_by_topic"], checks=False)  # fmt: skip
    assert result["success"] and set(result["assets_materialized"]) == {"audit_judged_posts", "audit_by_topic"}
    assert audit()["threshold"] == 0.5
    relation = AuditWhatIf(SCORER, 0.85).relation("audit_by_topic")
    assert {r["threshold"] for r in audit_rows(copy, SCORER, relation=relation).values()} == {0.85}
