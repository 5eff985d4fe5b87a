"""End to end through Dagster: real materializations of the sample into a temporary DuckDB, dbt included."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from datetime import date

import pytest
from dagster import AssetKey, DagsterInstance

from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import REFERENCE_DIR, REPO_ROOT, SAMPLE_DIR
from bsky_warehouse.resources.warehouse import WarehouseResource

pytestmark = pytest.mark.integration
WINDOW = DayWindow(date(2024, 3, 14), date(2024, 3, 17))


def reference_posts_per_day() -> Counter[str]:
    with (REFERENCE_DIR / "pilot_posts_perspective.csv").open(newline="", encoding="utf-8") as fh:
        return Counter(row["created_at"][:10] for row in csv.DictReader(fh))


def sample_deleted_uris() -> set[str]:
    deleted = set()
    for path in SAMPLE_DIR.glob("*.jsonl"):
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if event.get("kind") == "commit" and event["commit"].get("operation") == "delete":
                deleted.add(f"at://{event['did']}/app.bsky.feed.post/{event['commit']['rkey']}")
    return deleted


def snapshot(warehouse: WarehouseResource) -> dict[str, object]:
    with warehouse.read_only() as con:
        return {
            "raw": con.execute(
                "SELECT partition_date::VARCHAR, count(*) FROM raw_posts GROUP BY 1 ORDER BY 1"
            ).fetchall(),
            "cleaned": con.execute("SELECT count(*), count(DISTINCT uri) FROM cleaned_posts").fetchall(),
            "deletions": con.execute("SELECT count(*) FROM post_deletions").fetchall(),
            "rejected": con.execute("SELECT count(*) FROM rejected_records").fetchall(),
            "mart": con.execute("SELECT * FROM marts.daily_post_counts ORDER BY day").fetchall(),
            "cleaned_uris": {r[0] for r in con.execute("SELECT uri FROM cleaned_posts").fetchall()},
            "raw_uris": {r[0] for r in con.execute("SELECT uri FROM raw_posts").fetchall()},
        }


@pytest.fixture(params=["file", pytest.param("ducklake", marks=pytest.mark.ducklake)])
def backend(request: pytest.FixtureRequest, tmp_path) -> WarehouseResource:
    """The same pipeline on the DuckDB file and on a DuckLake (`lake` sets the catalog in the environment, as a
    user would: every resource, run and dbt process then finds it)."""
    if request.param == "ducklake":
        request.getfixturevalue("lake")
    return WarehouseResource(path=str(tmp_path / "wh.duckdb"))


def test_three_sample_partitions_materialize_through_dagster_and_dbt(backend):
    db = backend.path
    instance = DagsterInstance.ephemeral()
    result = run_window(WINDOW, instance=instance, db_path=db, archive_dir=str(SAMPLE_DIR))
    assert result["success"]
    assert {"raw_posts", "cleaned_posts", "daily_post_counts"} <= set(result["assets_materialized"])
    assert result["checks"] and all(check["passed"] for check in result["checks"])
    # The whole-history marts are built once for the three days, unpartitioned, as the run's last step.
    for name in ("scorer_agreement", "audit_by_topic"):
        records = instance.fetch_materializations(AssetKey(name), limit=10).records
        assert [r.partition_key for r in records] == [None], name

    first = snapshot(backend)
    expected = reference_posts_per_day()
    assert first["raw"] == [(d.isoformat(), expected[d.isoformat()]) for d in WINDOW.days()]
    raw_total = sum(n for _, n in first["raw"])
    cleaned, distinct = first["cleaned"][0]
    assert cleaned == distinct
    assert not first["cleaned_uris"] & sample_deleted_uris()
    assert cleaned == raw_total - len(sample_deleted_uris() & first["raw_uris"])
    mart = {row[0]: row for row in first["mart"]}
    assert sorted(mart) == WINDOW.days()
    assert sum(row[1] for row in mart.values()) == raw_total
    assert sum(row[4] for row in mart.values()) == cleaned

    # Re-running the same partitions one at a time changes no count.
    for day in WINDOW.days():
        assert run_window(DayWindow.for_day(day), instance=instance, db_path=db, archive_dir=str(SAMPLE_DIR))["success"]
    assert snapshot(backend) == first


def test_definitions_validate():
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "bsky_warehouse.definitions"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# Fitted or indexed on demand over all days: a rater's calibration, the distilled scorer, the archive index.
UNPARTITIONED = {
    "rater_calibrations",
    "distilled_models",
    "distilled_oof_predictions",
    "archive_files",
    "scorer_mappings",
}


def test_every_partitioned_asset_shares_one_partitions_definition():
    """Daily assets share one definition; only the author scan family is partitioned otherwise (by account); the
    whole-history marts (dbt tag `global`) are not partitioned."""
    from bsky_warehouse.assets.authors import author_partitions
    from bsky_warehouse.assets.dbt import dbt_global_models
    from bsky_warehouse.assets.feeds import snapshot_partitions
    from bsky_warehouse.definitions import defs
    from bsky_warehouse.partitions import daily_partitions

    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert {k.to_user_string() for k in keys} >= {
        "raw_posts",
        "post_deletions",
        "rejected_records",
        "cleaned_posts",
        "daily_post_counts",
    }
    assert {k.to_user_string() for k in dbt_global_models.keys} >= {
        "scorer_agreement",
        "author_profiles",
        "labeler_agreement_total",
        "audit_by_topic",
        "audit_judged_posts",
    }
    for key in keys:
        node = graph.get(key)
        if node.is_materializable:
            assert node.group_name, key
            if node.group_name in ("authors", "dbt_authors"):
                assert node.partitions_def in (author_partitions, None), key
            elif key.to_user_string() in UNPARTITIONED or key in dbt_global_models.keys:
                assert node.partitions_def is None, key
            elif key.to_user_string() == "feed_snapshots":  # the day a snapshot is taken, today included
                assert node.partitions_def == snapshot_partitions, key
            else:
                assert node.partitions_def == daily_partitions, key
