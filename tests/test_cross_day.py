"""Cross-day changes reach the marts: the days they touch are recorded with the change, rebuilt by the next dbt
step with its own window, and shown to Dagster as rebuilt (or as stale until they are)."""

from __future__ import annotations

import json
from datetime import date, timedelta

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

from bsky_warehouse import cross_day
from bsky_warehouse.assets.dbt import clears_stale_days, dbt_build_env, incremental_models
from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.partitions import DayWindow, dbt_vars_for_days, rebuild_days
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import DBT_MANIFEST
from bsky_warehouse.resources.bluesky import read_outcomes
from tests.factories import delete_event, post_event, uri, write_archive

D10, D11, D12, D13 = (date(2024, 3, 10) + timedelta(days=i) for i in range(4))


def test_contiguous_days_are_a_plain_window_and_gaps_add_the_day_list():
    assert rebuild_days(DayWindow.for_day(D11), [D13, D11, D10]) == [D10, D11, D13]
    assert dbt_vars_for_days([D11, D10]) == {"min_date": "2024-03-10", "max_date": "2024-03-12"}
    assert dbt_vars_for_days([D13, D10]) == {
        "min_date": "2024-03-10",
        "max_date": "2024-03-14",
        "days": ["2024-03-10", "2024-03-13"],
    }
    with pytest.raises(ValueError):
        dbt_vars_for_days([])


def test_build_env_widens_the_window_by_the_stale_days_only():
    assert dbt_build_env(DayWindow.for_day(D12)) == {
        "BSKY_DBT_MIN_DATE": "2024-03-12",
        "BSKY_DBT_MAX_DATE": "2024-03-13",
    }
    assert dbt_build_env(DayWindow.for_day(D12), extra_days=[D10, D12]) == {
        "BSKY_DBT_MIN_DATE": "2024-03-10",
        "BSKY_DBT_MAX_DATE": "2024-03-13",
        "BSKY_DBT_DAYS": "2024-03-10,2024-03-12",
    }


def test_only_a_build_of_every_incremental_mart_clears_the_stale_days():
    incremental = incremental_models(json.loads(DBT_MANIFEST.read_text()))
    assert {"daily_post_counts", "pipeline_coverage", "daily_toxicity_summary"} <= incremental
    assert "scorer_agreement" not in incremental
    assert clears_stale_days(incremental | {"scorer_agreement"}, incremental)
    assert not clears_stale_days(incremental - {"pipeline_coverage"}, incremental)


def load(warehouse, archive, day):
    with warehouse.connect() as con:
        replace_day(con, day, "archive", stage_lines(con, read_outcomes(archive, day)))
        return clean_day(con, day, FilterRules())


def stale(warehouse):
    with warehouse.connect() as con:
        return con.execute("SELECT DISTINCT day, cause, changed_by_day FROM stale_mart_days ORDER BY ALL").fetchall()


def test_a_delete_of_an_earlier_days_post_records_that_day_once(tmp_path, warehouse):
    archive = tmp_path / "a"
    write_archive(archive / "10.jsonl", [post_event("p1", created_at="2024-03-10T08:00:00Z"), post_event("p2")])
    write_archive(archive / "12.jsonl", [delete_event("p1", seen_at="2024-03-12T09:00:00Z")])
    load(warehouse, archive, D10)
    assert stale(warehouse) == []
    load(warehouse, archive, D12)
    assert stale(warehouse) == [(D10, "delete", D12)]
    with warehouse.connect() as con:
        cross_day.clear(con, cross_day.stale_days(con))
    load(warehouse, archive, D12)  # the same deletes again change nothing elsewhere
    assert stale(warehouse) == []


def test_a_take_over_records_the_later_day_and_a_repeat_records_nothing(tmp_path, warehouse):
    archive = tmp_path / "a"
    write_archive(archive / "x.jsonl", [
        post_event("t1", text="first", created_at="2024-03-12T08:00:00Z"),
        post_event("t1", text="backdated", created_at="2024-03-10T08:00:00Z", operation="update",
                   seen_at="2024-03-12T09:00:00Z"),
        post_event("p1", created_at="2024-03-12T10:00:00Z"),
    ])  # fmt: skip
    load(warehouse, archive, D12)
    assert stale(warehouse) == []
    stats = load(warehouse, archive, D10)
    assert stats.taken_from_days == [D12] and stats.other_days_changed == [D12]
    assert stale(warehouse) == [(D12, "owner_changed", D10)]
    with warehouse.connect() as con:
        cross_day.clear(con, [D12])
        assert con.execute("SELECT partition_date FROM cleaned_posts WHERE uri = $u", {"u": uri("t1")}).fetchall() == [
            (D10,)
        ]
    assert load(warehouse, archive, D10).other_days_changed == []
    assert load(warehouse, archive, D12).other_days_changed == []  # the later day skips it as a duplicate
    assert stale(warehouse) == []


def mart(db: str, day: date) -> tuple:
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(
            "SELECT cleaned_posts, (SELECT count(*) FROM cleaned_posts WHERE partition_date = $d) "
            "FROM marts.daily_post_counts WHERE day = $d",
            {"d": day},
        ).fetchall()[0]
    finally:
        con.close()


INGEST_AND_CLEAN = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"]
MART_ASSETS = ["stg_raw_posts", "stg_rejected_records", "stg_post_deletions", "stg_cleaned_posts",
               "stg_toxicity_scores", "stg_llm_labels", "reference_hand_labels", "daily_post_counts",
               "pipeline_coverage", "daily_toxicity_summary", "daily_sociopolitical_summary",
               "toxicity_by_ideology", "labeler_agreement"]  # fmt: skip


def stale_status(instance: DagsterInstance, asset: str, day: date) -> StaleStatus:
    """What the Dagster UI shows for the partition (the same resolver, over the definitions' asset graph)."""
    from bsky_warehouse.definitions import defs

    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    return resolver.get_status(AssetKey(asset), day.isoformat())


def latest_run(instance: DagsterInstance, asset: str, day: date) -> str:
    """The run that last materialized the asset's partition (newest records come first)."""
    for record in instance.fetch_materializations(AssetKey(asset), limit=1000).records:
        if record.partition_key == day.isoformat():
            return record.run_id
    raise AssertionError(f"no materialization of {asset} for {day}")


@pytest.mark.integration
def test_cross_day_changes_reach_the_marts_and_dagster_through_real_runs(tmp_path):
    archive = tmp_path / "a"
    write_archive(archive / "x.jsonl", [
        post_event("p1", created_at="2024-03-10T08:00:00Z"), post_event("p2", created_at="2024-03-10T09:00:00Z"),
        post_event("t1", created_at="2024-03-12T08:00:00Z"), post_event("p3", created_at="2024-03-12T09:00:00Z"),
        post_event("t1", text="backdated", created_at="2024-03-11T08:00:00Z", operation="update",
                   seen_at="2024-03-12T10:00:00Z"),
        post_event("p4", created_at="2024-03-11T09:00:00Z"),
        delete_event("p1", seen_at="2024-03-13T09:00:00Z"), post_event("p5", created_at="2024-03-13T10:00:00Z"),
    ])  # fmt: skip
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()

    def run(day: date, assets: list[str]) -> dict:
        result = run_window(
            DayWindow.for_day(day), instance, db_path=db, archive_dir=str(archive), assets=assets, checks=False
        )
        assert result["success"], result["failures"]
        return result

    run(D10, INGEST_AND_CLEAN + MART_ASSETS)
    assert mart(db, D10) == (2, 2)
    # The 13th's delete purges the 10th's post: the run for the 13th rebuilds the 10th's marts too.
    second = run(D13, INGEST_AND_CLEAN + MART_ASSETS)
    assert mart(db, D10) == (1, 1)
    assert latest_run(instance, "daily_post_counts", D10) == second["run_id"]
    assert stale_status(instance, "daily_post_counts", D10) == StaleStatus.FRESH

    # A take-over by a run without dbt: the 12th's marts are stale until a dbt build. Dagster sees the 12th's
    # cleaned_posts change (staleness is per direct dependency: the staging view over it shows stale).
    run(D12, INGEST_AND_CLEAN + MART_ASSETS)
    assert mart(db, D12) == (2, 2)
    assert stale_status(instance, "stg_cleaned_posts", D12) == StaleStatus.FRESH
    run(D11, INGEST_AND_CLEAN)
    assert stale_status(instance, "stg_cleaned_posts", D12) == StaleStatus.STALE
    assert mart(db, D12) == (2, 1)
    run(D13, MART_ASSETS)  # any window's dbt build rebuilds the recorded days, then forgets them
    assert mart(db, D12) == (1, 1)
    for asset in ("stg_cleaned_posts", "daily_post_counts", "pipeline_coverage"):
        assert stale_status(instance, asset, D12) == StaleStatus.FRESH, asset
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM stale_mart_days").fetchall() == [(0,)]


@pytest.mark.integration
def test_a_stale_day_another_run_has_not_cleaned_yet_waits_for_a_later_build(tmp_path):
    archive = tmp_path / "a"
    write_archive(archive / "x.jsonl", [
        post_event("p1", created_at="2024-03-10T08:00:00Z"),
        post_event("p3", created_at="2024-03-12T08:00:00Z"), post_event("p6", created_at="2024-03-12T09:00:00Z"),
        delete_event("p3", seen_at="2024-03-13T09:00:00Z"),
    ])  # fmt: skip
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()

    def run(day: date, assets: list[str], checks: bool = False) -> None:
        result = run_window(
            DayWindow.for_day(day), instance, db_path=db, archive_dir=str(archive), assets=assets, checks=checks
        )
        assert result["success"], result["failures"]

    ingest_only = [a for a in INGEST_AND_CLEAN if a != "cleaned_posts"]
    run(D10, INGEST_AND_CLEAN + MART_ASSETS)
    # Another run ingested the 12th and has not cleaned it yet; the 13th's delete of p3 makes the 12th stale.
    run(D12, ingest_only)
    run(D13, ingest_only)
    with duckdb.connect(db, read_only=True) as con:
        assert cross_day.unsettled(con, [D10, D12, D13]) == [D12]
        assert D12 in cross_day.stale_days(con)
    # Rebuilding the 12th now would count p6 as unaccounted and fail the build's tests: it waits, still recorded.
    run(D10, MART_ASSETS, checks=True)
    with duckdb.connect(db, read_only=True) as con:
        assert D12 in cross_day.stale_days(con)
        assert con.execute("SELECT count(*) FROM marts.pipeline_coverage WHERE day = $d", {"d": D12}).fetchall() == [
            (0,)
        ]
    run(D12, ["cleaned_posts", *MART_ASSETS])
    with duckdb.connect(db, read_only=True) as con:
        assert D12 not in cross_day.stale_days(con)
        assert con.execute(
            "SELECT raw_posts, cleaned, deleted, unaccounted_posts FROM marts.pipeline_coverage WHERE day = $d",
            {"d": D12},
        ).fetchall() == [(2, 1, 1, 0)]
