"""The counts table `materialize` prints: sums per asset, reasons ranked, failures named (issues #13, #19)."""

from __future__ import annotations

from bsky_warehouse.run_summary import asset_counts, format_counts


def test_counts_sum_over_materializations_and_rank_reasons():
    counts = asset_counts([
        ("raw_posts", {"dagster/row_count": 20, "lines_read": 25, "lines_by_outcome": {"post": 20, "rejected": 5}}),
        ("rejected_records", {"rejected": 5, "rejected_by_reason": {"invalid_json": 3, "invalid_did": 2}}),
        ("cleaned_posts", {"dagster/row_count": 15, "raw_posts_in": 20, "filtered_by_reason": {"too_short": 5}}),
        ("toxicity_scores", {"dagster/row_count": 15, "by_status": {"ok": 13, "failed": 2}}),
        ("toxicity_scores", {"dagster/row_count": 1, "by_status": {"ok": 1}}),
        ("llm_labels", {"skipped": "no LLM configured", "labeled": 0}),
        ("daily_post_counts", {}),
    ])  # fmt: skip
    by = {c.asset: c for c in counts}
    assert [c.asset for c in counts] == sorted(by)
    assert (by["raw_posts"].rows_in, by["raw_posts"].rows_out) == (25, 20)
    assert by["rejected_records"].rejected == 5
    assert list(by["rejected_records"].reasons) == ["invalid_json", "invalid_did"]
    assert (by["cleaned_posts"].rows_in, by["cleaned_posts"].rows_out, by["cleaned_posts"].rejected) == (20, 15, 5)
    scores = by["toxicity_scores"]
    assert (scores.partitions, scores.rows_out, scores.failed, scores.reasons) == (2, 16, 2, {"status:failed": 2})
    assert by["llm_labels"].note == "skipped: no LLM configured" and by["llm_labels"].rows_out is None
    assert by["daily_post_counts"].rows_out is None


def test_the_table_is_short_and_names_what_failed():
    counts = asset_counts([
        ("rejected_records", {"rejected": 7, "rejected_by_reason": {f"reason_{i}": 7 - i for i in range(7)}}),
        ("toxicity_scores", {"dagster/row_count": 3, "by_status": {"ok": 3}}),
    ])  # fmt: skip
    checks = [{"asset": "toxicity_scores", "check": f"c{i}", "passed": i != 3} for i in range(40)]
    lines = format_counts(counts, dbt_models=[f"m{i}" for i in range(12)], checks=checks)
    assert len(lines) < 12
    assert "reason_0 7" in lines[1] and "reason_6" not in lines[1]  # the five most frequent reasons only
    assert any(line.startswith("dbt: 12 models built") for line in lines)
    assert "checks: 39 passed, 1 failed" in lines and "  failed: toxicity_scores:c3" in lines
    assert "-" in lines[1].split()[1]  # rejected_records has no rows in: shown as -, not 0


def test_windows_and_scans_read_as_a_person_writes_them():
    from datetime import date

    from bsky_warehouse.checks.expectations import AuthorScan
    from bsky_warehouse.partitions import DayWindow

    assert DayWindow.for_day("2024-03-13").label() == "2024-03-13"
    assert DayWindow(date(2024, 3, 10), date(2024, 3, 13)).label() == "2024-03-10..2024-03-12 (3 days)"
    assert AuthorScan("alice.bsky.social").label() == "author scan alice.bsky.social"
