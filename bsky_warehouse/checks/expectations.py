"""Great Expectations suites, declared as data per asset, run as Dagster asset checks.

Each check validates the partitions the run just wrote: the days of a daily run, the account of an author
scan (the whole table when run on its own). GX 1.x is
called directly (dagster-ge is frozen on GX < 1.0) on a frame queried from DuckDB; derived columns in the
query express row rules GX has no single expectation for (e.g. "reason is set exactly when status is not
ok"). Blocking checks stop downstream assets in the same run from materializing on bad data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd

from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.records import IDEOLOGIES, PROB_COLUMNS

SAMPLE_SIZE = 10
# Every suite's frame has this column: failing checks name the offending rows by it.
ROW_ID = "uri"


@dataclass(frozen=True)
class Check:
    """One asset check: one or more GX expectations given as (class name, kwargs)."""

    name: str
    description: str
    expectations: tuple[tuple[str, Mapping[str, Any]], ...]
    blocking: bool = True


@dataclass(frozen=True)
class Suite:
    asset: str
    query: str  # over {window}: a SQL predicate selecting the run's partitions (see scope_predicate)
    checks: tuple[Check, ...]
    partitioned_by: str = "day"  # "day" (partition_date) or "author" (an author scan's account)


@dataclass(frozen=True)
class AuthorScan:
    """The partition of an author-scan run: the normalized handle or DID the scan was asked for."""

    scan_key: str

    def label(self) -> str:
        return f"author scan {self.scan_key}"


Scope = DayWindow | AuthorScan | None


def _in_set(column: str, values: Sequence[Any]) -> tuple[str, Mapping[str, Any]]:
    return ("ExpectColumnValuesToBeInSet", {"column": column, "value_set": list(values)})


def _true(column: str) -> tuple[str, Mapping[str, Any]]:
    return _in_set(column, [True])


def non_finite_sql(columns: Sequence[str]) -> str:
    """SQL naming the columns of a row that hold NaN or ±inf (`prob_insult=nan, …`), NULL when none do.

    The frame reaches GX through pandas, where NaN and NULL are the same missing value, so a range check
    there lets NaN through as "null"; the finiteness has to be read in DuckDB, before the conversion.
    """
    parts = ", ".join(f"CASE WHEN NOT isfinite({c}) THEN '{c.split('.')[-1]}=' || {c} END" for c in columns)
    return f"nullif(concat_ws(', ', {parts}), '')"


def blank_sql(column: str) -> str:
    """SQL true when `column` is NULL, empty or only whitespace: an empty reason is no reason."""
    return rf"coalesce(regexp_full_match({column}, '[\s\pZ]*'), true)"


def reason_consistent_sql() -> str:
    """SQL for "a reason is given exactly when status is not ok": none on ok rows, a non-blank one otherwise."""
    return f"CASE WHEN status = 'ok' THEN reason IS NULL ELSE NOT {blank_sql('reason')} END"


def filter_reason_consistent_sql() -> str:
    """SQL for "filter_reason is set exactly when the post fails filters", a blank one counting as unset."""
    return f"CASE WHEN passes_filters THEN filter_reason IS NULL ELSE NOT {blank_sql('filter_reason')} END"


def answer_consistent_sql() -> str:
    """SQL for the answer rules on labels (README, "Sociopolitical labels"): an ok row has is_sociopolitical,
    and an ideology exactly when it is sociopolitical; a row that is not ok never carries an ideology without
    a sociopolitical answer. A dropped ideology (a label file's, on a post it called not sociopolitical) is
    only ever on such an ok row."""
    return """(CASE WHEN status = 'ok'
                  THEN coalesce(is_sociopolitical = (political_ideology IS NOT NULL), false)
                  ELSE political_ideology IS NULL OR coalesce(is_sociopolitical, false) END)
              AND (dropped_ideology IS NULL OR (status = 'ok' AND is_sociopolitical IS NOT DISTINCT FROM false))"""


def _with_copies(table: str, key: Sequence[str]) -> str:
    """The table with `copies_overall`: how many rows share the key across every partition."""
    return f"(SELECT *, count(*) OVER (PARTITION BY {', '.join(key)}) AS copies_overall FROM {table})"


SUITES: tuple[Suite, ...] = (
    Suite(
        asset="raw_posts",
        query="""SELECT uri, partition_date,
                        cast(timezone('UTC', created_at) AS DATE) = partition_date AS created_in_day
                 FROM raw_posts WHERE {window}""",
        checks=(
            Check("raw_uri_not_null", "Every raw post has a uri.",
                  (("ExpectColumnValuesToNotBeNull", {"column": "uri"}),)),
            Check("raw_created_at_in_partition_day", "created_at falls inside the partition's UTC day.",
                  (_true("created_in_day"),)),
        ),
    ),
    Suite(
        asset="cleaned_posts",
        query=f"""SELECT uri, partition_date, passes_filters,
                         cast(timezone('UTC', created_at) AS DATE) = partition_date AS created_in_day,
                         copies_overall, {filter_reason_consistent_sql()} AS filter_reason_consistent
                  FROM {_with_copies("cleaned_posts", ["uri"])} WHERE {{window}}""",
        checks=(
            Check("cleaned_uri_unique_in_partition", "A uri appears once in the partitions checked.",
                  (("ExpectColumnValuesToBeUnique", {"column": "uri"}),)),
            Check("cleaned_uri_unique_across_partitions", "A uri appears once in cleaned_posts overall.",
                  (("ExpectColumnValuesToBeBetween", {"column": "copies_overall", "min_value": 1, "max_value": 1}),)),
            Check("cleaned_created_at_in_partition_day", "created_at falls inside the partition's UTC day.",
                  (_true("created_in_day"),)),
            Check("cleaned_filter_reason_consistent", "filter_reason is set exactly when the post fails filters.",
                  (_true("filter_reason_consistent"),), blocking=False),
        ),
    ),
    Suite(
        asset="toxicity_scores",
        query=f"""SELECT uri, scorer, status, reason, {", ".join(PROB_COLUMNS)},
                         {non_finite_sql(PROB_COLUMNS)} AS non_finite_probs,
                         copies_overall, {reason_consistent_sql()} AS reason_consistent,
                         coalesce(inclusion_probability > 0 AND inclusion_probability <= 1, false)
                             AS inclusion_probability_valid
                  FROM {_with_copies("toxicity_scores", ["uri", "scorer"])} WHERE {{window}}""",
        checks=(
            Check("scores_prob_in_unit_interval", "Every prob_* is between 0 and 1 or null; never NaN or ±inf.",
                  (("ExpectColumnValuesToBeNull", {"column": "non_finite_probs"}),
                   *(("ExpectColumnValuesToBeBetween", {"column": c, "min_value": 0.0, "max_value": 1.0})
                     for c in PROB_COLUMNS))),
            Check("scores_status_accepted", "status is ok, failed or skipped.",
                  (_in_set("status", ["ok", "failed", "skipped"]),)),
            Check("scores_uri_scorer_unique", "(uri, scorer) is unique across all partitions.",
                  (("ExpectCompoundColumnsToBeUnique", {"column_list": ["uri", "scorer"]}),
                   ("ExpectColumnValuesToBeBetween", {"column": "copies_overall", "min_value": 1, "max_value": 1}))),
            Check("scores_reason_iff_not_ok", "reason is set (not blank) exactly when status is not ok.",
                  (_true("reason_consistent"),)),
            Check("scores_inclusion_probability_valid",
                  "inclusion_probability (the weight of a planned sample's post is its inverse) is in (0, 1]: "
                  "never null, NaN, 0 or above 1.",
                  (_true("inclusion_probability_valid"),)),
        ),
    ),
    Suite(
        asset="llm_labels",
        query=f"""SELECT uri, labeler, model, prompt_version, status, reason, political_ideology,
                         copies_overall, {reason_consistent_sql()} AS reason_consistent,
                         {answer_consistent_sql()} AS answer_consistent
                  FROM {_with_copies("llm_labels", ["uri", "labeler", "model", "prompt_version"])} WHERE {{window}}""",
        checks=(
            Check("labels_status_accepted", "status is ok, failed or skipped.",
                  (_in_set("status", ["ok", "failed", "skipped"]),)),
            Check("labels_ideology_accepted",
                  "political_ideology is left, right, moderate, unclear or null; an ok answer has one exactly "
                  "when it is sociopolitical.",
                  (_in_set("political_ideology", IDEOLOGIES),
                   _true("answer_consistent"))),
            Check("labels_key_unique", "(uri, labeler, model, prompt_version) is unique across all partitions.",
                  (("ExpectCompoundColumnsToBeUnique",
                    {"column_list": ["uri", "labeler", "model", "prompt_version"]}),
                   ("ExpectColumnValuesToBeBetween", {"column": "copies_overall", "min_value": 1, "max_value": 1}))),
            Check("labels_reason_iff_not_ok", "reason is set (not blank) exactly when status is not ok.",
                  (_true("reason_consistent"),)),
        ),
    ),
    Suite(
        asset="post_embeddings",
        query=f"""SELECT uri, embedding_model, len(embedding) AS dimensions, copies_overall,
                         abs(list_dot_product(embedding, embedding) - 1) < 1e-3 AS unit_length
                  FROM {_with_copies("post_embeddings", ["uri", "embedding_model"])} WHERE {{window}}""",
        checks=(
            Check("embeddings_key_unique", "(uri, embedding_model) is unique across all partitions.",
                  (("ExpectColumnValuesToBeBetween", {"column": "copies_overall", "min_value": 1, "max_value": 1}),)),
            Check("embeddings_unit_length", "Every embedding has 384 dimensions and unit length.",
                  (("ExpectColumnValuesToBeBetween", {"column": "dimensions", "min_value": 384, "max_value": 384}),
                   _true("unit_length"))),
        ),
    ),
    Suite(
        asset="post_topics",
        query=f"""SELECT t.uri, t.topic_model_version, t.distance, t.copies_overall,
                         m.topic_id IS NOT NULL AS known_topic,
                         {non_finite_sql(["t.distance"])} AS non_finite_distance
                  FROM {_with_copies("post_topics", ["uri", "topic_model_version"])} t
                  LEFT JOIN topic_models m USING (topic_model_version, topic_id) WHERE {{window}}""",
        checks=(
            Check("topics_key_unique", "(uri, topic_model_version) is unique across all partitions.",
                  (("ExpectColumnValuesToBeBetween", {"column": "copies_overall", "min_value": 1, "max_value": 1}),)),
            Check("topics_assigned_from_stored_model", "Every topic exists in topic_models; cosine distance in [0, 2].",
                  (_true("known_topic"),
                   ("ExpectColumnValuesToBeNull", {"column": "non_finite_distance"}),
                   ("ExpectColumnValuesToBeBetween", {"column": "distance", "min_value": 0.0, "max_value": 2.0}))),
        ),
    ),
    Suite(
        asset="author_toxicity_scores",
        partitioned_by="author",
        query=f"""SELECT uri, author_did, scorer, status, reason, {", ".join(PROB_COLUMNS)},
                         {non_finite_sql(PROB_COLUMNS)} AS non_finite_probs,
                         {reason_consistent_sql()} AS reason_consistent
                  FROM author_toxicity_scores WHERE {{window}}""",
        checks=(
            Check("author_scores_prob_in_unit_interval", "Every prob_* is between 0 and 1 or null; never NaN or ±inf.",
                  (("ExpectColumnValuesToBeNull", {"column": "non_finite_probs"}),
                   *(("ExpectColumnValuesToBeBetween", {"column": c, "min_value": 0.0, "max_value": 1.0})
                     for c in PROB_COLUMNS))),
            Check("author_scores_status_accepted", "status is ok, failed or skipped.",
                  (_in_set("status", ["ok", "failed", "skipped"]),)),
            Check("author_scores_uri_scorer_unique", "(uri, scorer) is unique in the account's scores.",
                  (("ExpectCompoundColumnsToBeUnique", {"column_list": ["uri", "scorer"]}),)),
            Check("author_scores_reason_iff_not_ok", "reason is set (not blank) exactly when status is not ok.",
                  (_true("reason_consistent"),)),
        ),
    ),
)  # fmt: skip


@dataclass
class CheckOutcome:
    """One check's verdict. `unexpected_uris` names the offending rows: a sample of values such as `False`
    (a row rule) or `2` (copies of a key) does not say where to look."""

    name: str
    passed: bool
    rows: int
    unexpected_count: int
    unexpected_sample: list[Any]
    failed_expectations: list[str]
    unexpected_uris: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "rows_validated": self.rows,
            "unexpected_count": self.unexpected_count,
            "unexpected_sample": [str(v) for v in self.unexpected_sample][:SAMPLE_SIZE],
            "unexpected_uris": self.unexpected_uris[:SAMPLE_SIZE],
            "failed_expectations": self.failed_expectations,
        }


def scope_predicate(scope: Scope) -> tuple[str, dict[str, date | str]]:
    """The SQL predicate (and its parameters) selecting the rows a run wrote: its days, or its account."""
    if scope is None:
        return "true", {}
    if isinstance(scope, AuthorScan):
        return (
            "author_did IN (SELECT author_did FROM author_scans WHERE scan_key = $scan_key)",
            {"scan_key": scope.scan_key},
        )
    return "partition_date >= $start AND partition_date < $end", {"start": scope.start, "end": scope.end}


def suite_frame(con: Any, suite: Suite, scope: Scope) -> pd.DataFrame:
    predicate, params = scope_predicate(scope)
    return con.execute(suite.query.format(window=predicate), params).df()


def _gx_batch(frame: pd.DataFrame) -> Any:
    import logging

    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas("warehouse")
    asset = source.add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame})


def unexpected_row_ids(result: Mapping[str, Any], row_id: str = ROW_ID) -> list[str]:
    """The distinct `row_id` values of the rows GX reported unexpected, in its order."""
    ids: list[str] = []
    for row in result.get("partial_unexpected_index_list") or []:
        value = row.get(row_id) if isinstance(row, Mapping) else None
        if value is not None and str(value) not in ids:
            ids.append(str(value))
    return ids


def validate(frame: pd.DataFrame, checks: Sequence[Check]) -> list[CheckOutcome]:
    """Run every check's expectations with GX on one frame; report GX's unexpected counts, samples and the
    uris of the rows that broke them (GX's index columns)."""
    import great_expectations as gx

    batch = _gx_batch(frame)
    result_format = {"result_format": "SUMMARY", "unexpected_index_column_names": [ROW_ID]}
    outcomes = []
    for check in checks:
        unexpected = 0
        sample: list[Any] = []
        uris: list[str] = []
        failed: list[str] = []
        for class_name, kwargs in check.expectations:
            expectation = getattr(gx.expectations, class_name)(**kwargs)
            result = batch.validate(expectation, result_format=result_format)
            if not result.success:
                failed.append(f"{class_name}({', '.join(f'{k}={v}' for k, v in kwargs.items())})")
            unexpected += int(result.result.get("unexpected_count") or 0)
            sample.extend(result.result.get("partial_unexpected_list") or [])
            uris.extend(u for u in unexpected_row_ids(result.result) if u not in uris)
        outcomes.append(
            CheckOutcome(
                check.name, not failed, len(frame), unexpected, sample[:SAMPLE_SIZE], failed, uris[:SAMPLE_SIZE]
            )
        )
    return outcomes
