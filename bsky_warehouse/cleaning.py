"""Cleaning one day: `raw_posts` → `cleaned_posts`, one row per uri across all partitions.

The earliest partition that holds a uri owns it, whatever order partitions are run in: a day skips uris an
earlier day already holds and takes over uris a later day held (their downstream rows go with them). Deleted
posts never enter. Filters are recorded in `passes_filters` / `filter_reason`, never applied by dropping rows.
A take-over, or any uri the day gains or loses, changes other days' marts: those days are recorded in
`stale_mart_days` in the same transaction (cross_day.py), for the dbt step to rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb

from bsky_warehouse import cross_day
from bsky_warehouse.resources.warehouse import transaction
from bsky_warehouse.schema import POST_DERIVED_TABLES

# Order matters: the first matching rule is the recorded reason.
FILTER_REASON_SQL = """
    CASE
        WHEN text IS NULL OR trim(text) = '' THEN 'empty_text'
        WHEN langs IS NOT NULL AND len(langs) > 0 AND NOT list_has_any(
            list_transform(langs, lambda l: lower(split_part(l, '-', 1))), $languages::VARCHAR[])
            THEN 'language_excluded'
        WHEN length(trim(text)) < $min_text_length THEN 'text_too_short'
    END
"""

HAS_LINK_SQL = """
    coalesce(embed_type = 'app.bsky.embed.external', false)
    OR regexp_matches(coalesce(text, ''), 'https?://')
    OR coalesce(contains(facets::VARCHAR, 'app.bsky.richtext.facet#link'), false)
"""


@dataclass(frozen=True)
class FilterRules:
    """What a post must satisfy to be scored and labeled downstream."""

    min_text_length: int = 3
    languages: tuple[str, ...] = ("en",)

    def params(self) -> dict[str, Any]:
        return {"min_text_length": self.min_text_length, "languages": [x.lower() for x in self.languages]}


@dataclass
class CleanStats:
    candidates: int
    duplicates_of_earlier: int
    deleted: int
    taken_from_later: int
    cleaned: int
    passing: int
    filtered: dict[str, int]
    taken_from_days: list[date] = field(default_factory=list)
    other_days_changed: list[date] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "raw_posts_in": self.candidates,
            "duplicates_of_earlier_partitions": self.duplicates_of_earlier,
            "deleted": self.deleted,
            "taken_over_from_later_partitions": self.taken_from_later,
            "cleaned_posts_out": self.cleaned,
            "passing_filters": self.passing,
            "filtered_by_reason": self.filtered,
            "taken_over_from_days": [d.isoformat() for d in self.taken_from_days],
            "other_days_changed": [d.isoformat() for d in self.other_days_changed],
        }


def clean_day(con: duckdb.DuckDBPyConnection, day: date, rules: FilterRules) -> CleanStats:
    """Replace `cleaned_posts` for `day` in one transaction and report where every raw post went."""
    key = {"day": day}
    with transaction(con):
        cross_day.snapshot_owned(con, day)
        con.execute("DELETE FROM cleaned_posts WHERE partition_date = $day", key)
        # One row per uri for the day even when several sources delivered it.
        con.execute(
            """CREATE OR REPLACE TEMP TABLE clean_candidates AS
               SELECT r.*,
                      r.uri IN (SELECT uri FROM post_deletions) AS is_deleted,
                      r.uri IN (SELECT uri FROM cleaned_posts WHERE partition_date < $day) AS is_duplicate
               FROM raw_posts r
               WHERE r.partition_date = $day
               QUALIFY row_number() OVER (PARTITION BY r.uri ORDER BY r.ingested_at DESC, r.source) = 1""",
            key,
        )
        taken = con.execute(
            """SELECT count(*) FROM cleaned_posts WHERE partition_date > $day AND uri IN
               (SELECT uri FROM clean_candidates WHERE NOT is_deleted AND NOT is_duplicate)""",
            key,
        ).fetchall()[0][0]
        taken_from: list[date] = []
        if taken:
            owned = "SELECT uri FROM clean_candidates WHERE NOT is_deleted AND NOT is_duplicate"
            taken_from = cross_day.record_take_overs(con, day, owned)
            for table in POST_DERIVED_TABLES:
                con.execute(f"DELETE FROM {table} WHERE partition_date > $day AND uri IN ({owned})", key)
        con.execute(
            f"""INSERT INTO cleaned_posts BY NAME
                SELECT * EXCLUDE (is_deleted, is_duplicate, filter_reason),
                       coalesce(length(text), 0) AS text_length,
                       reply_parent_uri IS NOT NULL AS is_reply,
                       {HAS_LINK_SQL} AS has_link,
                       langs[1] AS lang_primary,
                       filter_reason IS NULL AS passes_filters,
                       filter_reason
                FROM (SELECT *, {FILTER_REASON_SQL} AS filter_reason FROM clean_candidates)
                WHERE NOT is_deleted AND NOT is_duplicate""",
            rules.params(),
        )
        changed = sorted(set(taken_from) | set(cross_day.record_owner_changes(con, day)))
    candidates, duplicates, deleted = con.execute(
        """SELECT count(*), count(*) FILTER (WHERE is_duplicate AND NOT is_deleted), count(*) FILTER (WHERE is_deleted)
           FROM clean_candidates"""
    ).fetchall()[0]
    # One pass over the day's rows for every count (a statement costs more than a tiny day's rows).
    outcomes = con.execute(
        """SELECT passes_filters, filter_reason, count(*) FROM cleaned_posts
           WHERE partition_date = $day GROUP BY ALL ORDER BY filter_reason""",
        key,
    ).fetchall()
    cleaned = sum(n for _, _, n in outcomes)
    passing = sum(n for passes, _, n in outcomes if passes is True)
    filtered: dict[str, int] = {}
    for passes, reason, n in outcomes:
        if passes is False:
            filtered[reason] = filtered.get(reason, 0) + n
    return CleanStats(candidates, duplicates, deleted, taken, cleaned, passing, filtered, taken_from, changed)
