"""The bridge across the change of instrument: the quantile map (monotone, local quantiles onto the reference's),
its version, the overlap it is fitted on, the mart recomputed in pandas on a warehouse built through the real
Dagster assets (a local scorer on every day, the reference on the first days only: a switch), and the report's
bridged plot."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance

from bsky_warehouse.assets.bridge import BridgeConfig, chosen_attributes, load_overlaps, run_bridge
from bsky_warehouse.bridge import (
    BridgeError,
    Knots,
    Overlap,
    apply_map,
    fit_quantile_map,
    mapping_version,
    overlap_figures,
)
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_job, run_window
from bsky_warehouse.project import DBT_PROJECT_DIR, SAMPLE_DIR
from bsky_warehouse.reference import REFERENCE_SCORER
from bsky_warehouse.report import BRIDGE_SQL, load_report_data, render_report
from bsky_warehouse.report_figures import overlap_spans, plot_scorer_bridge
from tests.test_report import FILES, fill_tiny_warehouse

LOCAL = "profanity-check"
# Ingest and the local scorer on five days; the reference on the first three: days 16 and 17 come after the switch.
WINDOW = DayWindow(date(2024, 3, 13), date(2024, 3, 18))
REFERENCE_WINDOW = DayWindow(date(2024, 3, 13), date(2024, 3, 16))
INGEST = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"]
MART_COLUMNS = [
    "n_reference", "n_local", "n_local_out_of_fold", "n_both", "overlap_day", "reference_mean", "reference_median",
    "reference_share_ge_0_5",
    "local_mean", "local_median", "local_share_ge_0_5", "mapped_mean", "mapped_median", "mapped_share_ge_0_5",
]  # fmt: skip


def skewed_pair(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A local scorer that ranks posts like the reference but squeezes them toward 0.2 (a different scale)."""
    rng = np.random.default_rng(seed)
    reference = rng.beta(0.6, 3.0, n)
    local = 0.2 + 0.3 * (reference - 0.2) ** 3 + rng.normal(0, 0.002, n)
    return local, reference


# Pure pieces -------------------------------------------------------------------------------------------------


def test_the_map_is_monotone_and_sends_the_local_quantiles_onto_the_reference_ones():
    local, reference = skewed_pair()
    knots = fit_quantile_map(local, reference, n_knots=51)
    assert np.all(np.diff(knots.local) > 0) and np.all(np.diff(knots.reference) >= 0)
    grid = np.linspace(local.min() - 0.1, local.max() + 0.1, 2001)
    assert np.all(np.diff(apply_map(grid, knots)) >= 0)
    at_knots = np.linspace(0, 1, 51)
    np.testing.assert_allclose(apply_map(np.quantile(local, at_knots), knots), np.quantile(reference, at_knots))
    # Between the knots too: the mapped overlap has the reference's distribution (up to the knots' spacing).
    between = np.linspace(0.05, 0.95, 19)
    mapped = apply_map(local, knots)
    np.testing.assert_allclose(np.quantile(mapped, between), np.quantile(reference, between), atol=0.01)
    assert abs(np.mean(mapped >= 0.5) - np.mean(reference >= 0.5)) < 0.005
    assert np.mean(local >= 0.5) < 0.01 < np.mean(reference >= 0.5)  # the raw scale would have missed them


def test_the_map_is_linear_between_knots_and_holds_the_end_values_beyond():
    knots = Knots(np.array([0.1, 0.3, 0.5]), np.array([0.0, 0.4, 0.6]))
    np.testing.assert_allclose(apply_map(np.array([0.0, 0.1, 0.2, 0.4, 0.5, 0.9]), knots),
                               [0.0, 0.0, 0.2, 0.5, 0.6, 0.6])  # fmt: skip


def test_tied_local_quantiles_collapse_into_one_knot():
    local = np.array([0.0] * 6 + [0.2, 0.4, 0.6, 0.8])
    reference = np.linspace(0.0, 0.9, 10)
    knots = fit_quantile_map(local, reference, n_knots=10)
    assert np.all(np.diff(knots.local) > 0)
    assert knots.local[0] == 0.0
    # Probabilities 0..5/9 all have local quantile 0: their reference quantiles (0.0 .. 0.5) average to 0.25.
    assert knots.reference[0] == pytest.approx(0.25)
    constant = fit_quantile_map(np.full(30, 0.3), np.linspace(0, 1, 30))
    assert constant.local.tolist() == [0.3] and apply_map(np.array([0.0, 1.0]), constant).tolist() == [0.5, 0.5]


def test_fewer_posts_than_knots_give_one_knot_per_post():
    knots = fit_quantile_map(np.array([0.3, 0.1, 0.2]), np.array([0.9, 0.5, 0.7]), n_knots=101)
    assert knots.local.tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert knots.reference.tolist() == pytest.approx([0.5, 0.7, 0.9])


@pytest.mark.parametrize(
    ("local", "reference", "n_knots", "message"),
    [
        ([], [], 10, "non-empty"),
        ([0.1, 0.2], [0.1], 10, "same non-empty"),
        ([0.1, float("nan")], [0.1, 0.2], 10, "finite"),
        ([0.1, 0.2], [0.1, 0.2], 1, "at least 2"),
    ],
)
def test_a_map_that_cannot_be_fitted_says_why(local, reference, n_knots, message):
    with pytest.raises(BridgeError, match=message):
        fit_quantile_map(np.array(local), np.array(reference), n_knots)


def test_weighting_a_biased_sample_recovers_the_population_map_and_equal_weights_change_nothing():
    # A population whose local scores relate to the reference with noise, and a sample that over-draws the posts
    # whose local score sits where the model is least sure (as a plan does): unweighted, the sample's quantiles
    # are not the population's, and neither is the map.
    rng = np.random.default_rng(3)
    reference = rng.beta(0.6, 3.0, 20000)
    local = np.clip(0.5 * reference + rng.normal(0, 0.08, 20000), 0, 1)
    probabilities = 0.05 + 0.95 * np.exp(-(((local - 0.25) / 0.1) ** 2))
    drawn = rng.random(len(local)) < probabilities
    population = fit_quantile_map(local, reference, n_knots=21)
    unweighted = fit_quantile_map(local[drawn], reference[drawn], n_knots=21)
    weighted = fit_quantile_map(local[drawn], reference[drawn], n_knots=21, weights=1 / probabilities[drawn])
    grid = np.quantile(local, np.linspace(0.05, 0.95, 19))

    def error(knots: Knots) -> float:
        return float(np.max(np.abs(apply_map(grid, knots) - apply_map(grid, population))))

    # Measured: about 0.015 weighted against 0.09 unweighted, whatever the seed.
    assert error(weighted) < error(unweighted) / 3, (error(weighted), error(unweighted))
    same = fit_quantile_map(local[:500], reference[:500], 21, weights=np.full(500, 3.0))
    plain = fit_quantile_map(local[:500], reference[:500], 21)
    assert np.array_equal(same.local, plain.local) and np.array_equal(same.reference, plain.reference)
    with pytest.raises(BridgeError, match="positive weight"):
        fit_quantile_map(local[:3], reference[:3], 10, weights=np.array([1.0, 0.0, 2.0]))
    with pytest.raises(BridgeError, match="positive weight"):  # equal weights are checked too
        fit_quantile_map(local[:3], reference[:3], 10, weights=np.ones(2))


def test_knots_must_make_a_monotone_function():
    with pytest.raises(BridgeError, match="increase"):
        Knots(np.array([0.1, 0.1]), np.array([0.0, 0.2]))
    with pytest.raises(BridgeError, match="increase"):
        Knots(np.array([0.1, 0.2]), np.array([0.3, 0.2]))


def overlap(attribute: str = "prob_toxicity", shift: float = 0.0) -> Overlap:
    local, reference = skewed_pair(200)
    uris = [f"at://did:plc:test/app.bsky.feed.post/{i:04d}" for i in range(200)]
    return Overlap(attribute, uris, local + shift, reference, np.arange(200) % 2 == 0)


def test_version_digests_the_data_the_parameters_and_the_scorer_versions():
    spec = {"local_scorer": "perspective-distilled", "reference_scorers": ["perspective"], "n_knots": 101}
    first = mapping_version(spec, [overlap(), overlap("prob_nuance")], ["distilled-a"])
    assert first.startswith("bridge-")
    assert mapping_version(spec, [overlap("prob_nuance"), overlap()], ["distilled-a"]) == first
    assert mapping_version(spec, [overlap(shift=1e-9), overlap("prob_nuance")], ["distilled-a"]) != first
    assert mapping_version({**spec, "n_knots": 51}, [overlap(), overlap("prob_nuance")], ["distilled-a"]) != first
    assert mapping_version(spec, [overlap(), overlap("prob_nuance")], ["distilled-b"]) != first
    assert mapping_version(spec, [overlap()], ["distilled-a"]) != first


def test_overlap_figures_show_the_mapped_scale_matching_the_reference():
    o = overlap()
    figures = overlap_figures(o, fit_quantile_map(o.local, o.reference))
    assert figures["n"] == 200 and figures["n_out_of_fold"] == 100 and figures["n_weighted"] == 0
    assert figures["mapped_mean"] == pytest.approx(figures["reference_mean"], abs=0.01)
    assert figures["mapped_share_ge_0_5"] == pytest.approx(figures["reference_share_ge_0_5"], abs=0.01)


def test_overlap_days_shade_as_runs_of_consecutive_days():
    d = date(2024, 3, 10)
    days = [d, d + timedelta(days=1), d + timedelta(days=2), d + timedelta(days=5)]
    assert overlap_spans(days) == [(d, d + timedelta(days=2)), (d + timedelta(days=5), d + timedelta(days=5))]
    assert overlap_spans([]) == []


# The overlap as the asset reads it -----------------------------------------------------------------------------


def insert_score(con, uri: str, scorer: str, version: str, prob: float | None, status: str = "ok") -> None:
    con.execute(
        """INSERT INTO toxicity_scores (uri, scorer, scorer_version, status, scored_at, partition_date, prob_toxicity)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        [uri, scorer, version, status, datetime(2026, 12, 1, tzinfo=UTC), date(2026, 11, 30), prob],
    )


def test_overlap_reads_out_of_fold_predictions_and_the_first_listed_reference(warehouse):
    with warehouse.connect() as con:
        for uri, local in (("a", 0.2), ("b", 0.3), ("c", 0.4), ("d", 0.5)):
            insert_score(con, uri, "perspective-distilled", "distilled-x", local)
        insert_score(con, "a", "perspective", "live", 0.8)
        insert_score(con, "a", REFERENCE_SCORER, "ref", 0.1)
        insert_score(con, "b", REFERENCE_SCORER, "ref", 0.6)
        insert_score(con, "c", "perspective", "live", None, status="failed")
        con.execute(
            """INSERT INTO distilled_oof_predictions VALUES
               ('distilled-x', 'a', 'prob_toxicity', 'ref', 0.1, 0.25, 0),
               ('distilled-other', 'b', 'prob_toxicity', 'ref', 0.6, 0.99, 0)"""
        )
        overlaps, versions = load_overlaps(con, "perspective-distilled", ["perspective", REFERENCE_SCORER])
    assert list(overlaps) == ["prob_toxicity"] and versions == ["distilled-x"]
    o = overlaps["prob_toxicity"]
    assert o.uris == ["a", "b"]  # c: the reference failed; d: no reference
    assert o.local.tolist() == [0.25, 0.3]  # a: the out-of-fold prediction of the version that scored it
    assert o.reference.tolist() == [0.8, 0.6]  # a: the live score, listed first
    assert o.out_of_fold.tolist() == [True, False]


def test_attributes_need_enough_overlap_and_a_scorer_is_never_its_own_reference(warehouse):
    o = overlap()
    assert chosen_attributes({"prob_toxicity": o}, None, 200) == ["prob_toxicity"]
    assert chosen_attributes({"prob_toxicity": o}, ["TOXICITY"], 10) == ["prob_toxicity"]
    with pytest.raises(BridgeError, match="no attribute has 201 posts"):
        chosen_attributes({"prob_toxicity": o}, None, 201)
    with pytest.raises(BridgeError, match="prob_nuance"):
        chosen_attributes({"prob_toxicity": o}, ["NUANCE"], 10)
    with warehouse.connect() as con, pytest.raises(BridgeError, match="onto itself"):
        load_overlaps(con, "perspective", ["perspective"])


def test_refitting_the_same_data_writes_nothing_and_a_refit_of_an_older_version_makes_it_current(warehouse):
    with warehouse.connect() as con:
        for i in range(30):
            insert_score(con, f"u{i:02d}", LOCAL, "v1", i / 100)
            insert_score(con, f"u{i:02d}", REFERENCE_SCORER, "ref", i / 30)
    config = BridgeConfig(local_scorer=LOCAL, reference_scorers=[REFERENCE_SCORER])
    other = BridgeConfig(local_scorer=LOCAL, reference_scorers=[REFERENCE_SCORER], n_knots=5)

    def table() -> list[tuple]:
        with warehouse.connect() as con:
            return con.execute("SELECT * FROM scorer_mappings ORDER BY ALL").fetchall()

    version, outcome, _ = run_bridge(warehouse, config)
    assert outcome == "fitted"
    first = table()
    assert run_bridge(warehouse, config)[:2] == (version, "unchanged")
    assert table() == first
    other_version, outcome, _ = run_bridge(warehouse, other)
    assert outcome == "fitted" and other_version != version
    assert run_bridge(warehouse, config)[:2] == (version, "made_current")
    with warehouse.connect() as con:
        current = con.execute(
            "SELECT mapping_version FROM scorer_mappings ORDER BY fitted_at DESC, mapping_version DESC LIMIT 1"
        ).fetchall()[0][0]
    assert current == version


# The report's figure on hand-made mart rows -------------------------------------------------------------------


def documented_columns(model: str) -> set[str]:
    models = yaml.safe_load((DBT_PROJECT_DIR / "models" / "marts" / "_marts.yml").read_text())["models"]
    return {c["name"] for m in models if m["name"] == model for c in m["columns"]}


def test_the_report_reads_only_documented_bridge_columns():
    selected = BRIDGE_SQL.split("SELECT", 1)[1].split("FROM", 1)[0]
    assert {c.strip() for c in selected.split(",")} <= documented_columns("scorer_bridge")


def fill_bridge(con, end: date) -> None:
    con.execute(
        """CREATE TABLE marts.scorer_bridge (day DATE, local_scorer VARCHAR, reference_scorers VARCHAR,
           mapping_version VARCHAR, attribute VARCHAR, n_reference BIGINT, n_local BIGINT, n_both BIGINT,
           overlap_day BOOLEAN, reference_mean DOUBLE, local_mean DOUBLE, mapped_mean DOUBLE,
           reference_share_ge_0_5 DOUBLE, local_share_ge_0_5 DOUBLE, mapped_share_ge_0_5 DOUBLE)"""
    )
    for i in range(60):  # 60 days up to `end`: Perspective stops after day 40, the local scorer starts at day 30
        day = end - timedelta(days=59 - i)
        ref = (20, 0.15, 0.08) if i < 40 else (0, None, None)
        local = (25, 0.1, 0.02, 0.16, 0.09) if i >= 30 else (0, None, None, None, None)
        con.execute(
            "INSERT INTO marts.scorer_bridge VALUES (?, 'perspective-distilled', 'perspective', 'bridge-x', "
            "'toxicity', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [day, ref[0], local[0], min(ref[0], local[0]), ref[0] > 0 and local[0] > 0, ref[1], local[1], local[3],
             ref[2], local[2], local[4]],
        )  # fmt: skip


def test_report_shows_the_bridged_series_only_where_a_mapping_exists(warehouse, tmp_path):
    end = date(2024, 3, 12)
    with warehouse.connect() as con:
        fill_tiny_warehouse(con)
        without = load_report_data(con, end, lookback_days=30, earliest=date(2024, 3, 8))
        fill_bridge(con, end)
        data = load_report_data(con, end, lookback_days=5)
    assert without.bridge.empty and "bridge" not in without.notes
    assert len(data.bridge) == 60 and data.bridge["day"].min() == end - timedelta(days=59)  # all history
    report = render_report(data, tmp_path / "bridged")
    assert {p.name for p in report.directory.iterdir()} == FILES | {"scorer_bridge.png"}
    page = report.index.read_text(encoding="utf-8")
    assert "src='scorer_bridge.png'" in page and "Toxicity across the change of instrument" in page
    assert "bridge-x" in page and "shaded days were scored by both instruments" in page
    assert report.markdown().count("![") == 5
    assert len(plot_scorer_bridge(data.bridge, end).axes) == 3  # mean, share >= 0.5, posts per day


# Through the real assets ----------------------------------------------------------------------------------------


def rows(db: str, sql: str) -> pd.DataFrame:
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def mapping_metadata(instance: DagsterInstance, run_id: str) -> dict[str, Any]:
    (entry,) = instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    return {key: value.value for key, value in entry.asset_materialization.metadata.items()}


def add_out_of_fold(db: str) -> int:
    """Out-of-fold predictions for every third local post, as if its scorer version were a distilled model trained
    on them: the fit and the mart must read these in place of the stored score."""
    con = duckdb.connect(db)
    try:
        con.execute(
            """INSERT INTO distilled_oof_predictions
               SELECT scorer_version, uri, 'prob_toxicity', $ref, prob_toxicity, prob_toxicity / 2, 0
               FROM toxicity_scores WHERE scorer = $local AND status = 'ok' AND hash(uri) % 3 = 0""",
            {"local": LOCAL, "ref": REFERENCE_SCORER},
        )
        return con.execute("SELECT count(*) FROM distilled_oof_predictions").fetchall()[0][0]
    finally:
        con.close()


@pytest.fixture(scope="module")
def bridged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("bridge")
    db = str(folder / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    out: dict[str, Any] = {"db": db}

    def window(days: DayWindow, assets: list[str], ops: dict[str, Any] | None = None) -> dict[str, Any]:
        result = run_window(days, instance, db_path=db, archive_dir=str(SAMPLE_DIR), assets=assets,
                            run_config={"ops": ops or {}}, raise_on_error=False, log_level="WARNING")  # fmt: skip
        assert result["success"], result["failures"]
        return result

    def fit() -> dict[str, Any]:
        config = {"local_scorer": LOCAL, "reference_scorers": ["perspective", REFERENCE_SCORER]}
        result = run_job("bridge_scorers", instance, db_path=db, raise_on_error=False, log_level="WARNING",
                         run_config={"ops": {"scorer_mappings": {"config": config}}})  # fmt: skip
        assert result["success"], result["failures"]
        return mapping_metadata(instance, result["run_id"])

    window(WINDOW, [*INGEST, "toxicity_scores"])
    window(REFERENCE_WINDOW, ["toxicity_scores"], {"toxicity_scores": {"config": {"scorer": REFERENCE_SCORER}}})
    out["out_of_fold"] = add_out_of_fold(db)
    out["fit"] = fit()
    out["mappings"] = rows(db, "SELECT * FROM scorer_mappings ORDER BY ALL")
    window(WINDOW, ["stg_toxicity_scores", "scorer_bridge"])
    out["refit"] = fit()
    out["mappings_again"] = rows(db, "SELECT * FROM scorer_mappings ORDER BY ALL")
    out["mart"] = rows(db, "SELECT * FROM marts.scorer_bridge ORDER BY day, attribute")
    out["scores"] = rows(db, "SELECT * FROM toxicity_scores WHERE status = 'ok'")
    out["oof"] = rows(db, "SELECT * FROM distilled_oof_predictions")
    reports = folder / "reports"
    window(DayWindow.for_day(date(2024, 3, 17)), ["daily_report"],
           {"daily_report": {"config": {"reports_dir": str(reports), "lookback_days": 7}}})  # fmt: skip
    out["report"] = reports / "2024-03-17"
    return out


@pytest.mark.integration
def test_the_fit_maps_every_attribute_both_scored_and_records_it(bridged):
    mappings = bridged["mappings"]
    assert mappings["attribute"].tolist() == ["prob_toxicity"]  # profanity-check scores toxicity alone
    row = mappings.iloc[0]
    assert row["local_scorer"] == LOCAL and list(row["reference_scorers"]) == ["perspective", REFERENCE_SCORER]
    knots_local, knots_reference = np.array(row["knots_local"]), np.array(row["knots_reference"])
    assert np.all(np.diff(knots_local) > 0) and np.all(np.diff(knots_reference) >= 0)
    scores = bridged["scores"]
    overlap = set(scores.loc[scores["scorer"] == REFERENCE_SCORER, "uri"]) & set(
        scores.loc[scores["scorer"] == LOCAL, "uri"]
    )
    oof = bridged["oof"]
    assert row["n_overlap"] == len(overlap) > 20
    assert 0 < row["n_out_of_fold"] == len(set(oof["uri"]) & overlap) < len(overlap)
    assert bridged["fit"]["mapping"] == "fitted" and bridged["fit"]["mapping_version"] == row["mapping_version"]
    assert bridged["fit"]["overlap"]["toxicity"]["n"] == len(overlap)


@pytest.mark.integration
def test_rerunning_the_fit_on_the_same_data_changes_nothing(bridged):
    assert bridged["refit"]["mapping"] == "unchanged"
    assert bridged["refit"]["mapping_version"] == bridged["fit"]["mapping_version"]
    pd.testing.assert_frame_equal(bridged["mappings_again"], bridged["mappings"])


def expected_mart(scores: pd.DataFrame, oof: pd.DataFrame, mapping: pd.Series) -> pd.DataFrame:
    """marts.scorer_bridge recomputed from toxicity_scores, the out-of-fold predictions and the stored knots, in
    pandas and numpy."""
    column = mapping["attribute"]
    references = list(mapping["reference_scorers"])
    local = scores[(scores["scorer"] == mapping["local_scorer"]) & scores[column].notna()].copy()
    predictions = oof[oof["attribute"] == column].set_index(["model_version", "uri"])["prediction"]
    substitute = pd.Series(list(zip(local["scorer_version"], local["uri"], strict=True)), index=local.index).map(
        predictions
    )
    local["out_of_fold"] = substitute.notna()
    local[column] = substitute.fillna(local[column])
    local["mapped"] = np.interp(local[column], mapping["knots_local"], mapping["knots_reference"])
    reference = scores[scores["scorer"].isin(references) & scores[column].notna()].copy()
    reference["priority"] = reference["scorer"].map(references.index)
    reference = reference.sort_values("priority").drop_duplicates("uri")

    def daily(frame: pd.DataFrame, value: str, prefix: str) -> pd.DataFrame:
        grouped = frame.groupby("partition_date")[value]
        return pd.DataFrame({
            f"{prefix}_mean": grouped.mean(),
            f"{prefix}_median": grouped.median(),
            f"{prefix}_share_ge_0_5": grouped.apply(lambda s: float((s >= 0.5).mean())),
        })  # fmt: skip

    both = local[local["uri"].isin(reference["uri"])].groupby("partition_date").size().rename("n_both")
    out = pd.concat(
        [local.groupby("partition_date").size().rename("n_local"),
         local.groupby("partition_date")["out_of_fold"].sum().rename("n_local_out_of_fold"),
         reference.groupby("partition_date").size().rename("n_reference"), both,
         daily(local, column, "local"), daily(local, "mapped", "mapped"), daily(reference, column, "reference")],
        axis=1,
    )  # fmt: skip
    for n in ("n_local", "n_local_out_of_fold", "n_reference", "n_both"):
        out[n] = out[n].fillna(0).astype(int)
    out["overlap_day"] = (out["n_local"] > 0) & (out["n_reference"] > 0)
    out.index = pd.to_datetime(out.index).date
    return out.sort_index()


@pytest.mark.integration
def test_the_mart_matches_an_independent_recomputation(bridged):
    mart = bridged["mart"]
    mapping = bridged["mappings"].iloc[0]
    assert set(mart["attribute"]) == {"toxicity"} and set(mart["mapping_version"]) == {mapping["mapping_version"]}
    assert set(mart["reference_scorers"]) == {f"perspective,{REFERENCE_SCORER}"}
    expected = expected_mart(bridged["scores"], bridged["oof"], mapping)
    assert expected["n_local_out_of_fold"].sum() > 0
    got = mart.assign(day=pd.to_datetime(mart["day"]).dt.date).set_index("day")[MART_COLUMNS]
    assert list(got.index) == list(expected.index)
    for column in MART_COLUMNS:
        want, have = expected[column].to_numpy(), got[column].to_numpy()
        if column.startswith("n_") or column == "overlap_day":
            assert have.tolist() == want.tolist(), column
        else:
            np.testing.assert_allclose(have.astype(float), want.astype(float), rtol=1e-9, atol=1e-12, err_msg=column)


@pytest.mark.integration
def test_the_series_runs_across_the_switch_with_the_overlap_marked(bridged):
    mart = bridged["mart"].assign(day=lambda f: pd.to_datetime(f["day"]).dt.date)
    overlap_days = set(mart.loc[mart["overlap_day"], "day"])
    after = mart[mart["day"] >= REFERENCE_WINDOW.end]
    assert overlap_days and overlap_days <= set(REFERENCE_WINDOW.days())
    assert len(after) > 0 and (after["n_reference"] == 0).all() and after["reference_mean"].isna().all()
    assert after["mapped_mean"].notna().all() and (after["n_local"] > 0).all()


@pytest.mark.integration
def test_the_daily_report_shows_the_bridged_series(bridged):
    report: Path = bridged["report"]
    assert (report / "scorer_bridge.png").read_bytes().startswith(b"\x89PNG")
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "Toxicity across the change of instrument" in page
    assert bridged["fit"]["mapping_version"] in page
