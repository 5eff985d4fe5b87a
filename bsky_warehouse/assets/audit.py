"""Human judgements: written by `bsky-warehouse import judgements`, not by an asset, yet the audit marts and
rater calibrations read them, so the table is declared here for lineage in the Dagster UI."""

from dagster import AssetSpec

human_judgements = AssetSpec(
    "human_judgements",
    group_name="audit",
    description="People's judgements of posts, one row per (uri, rater, task); loaded from CSV/Parquet by "
    "`bsky-warehouse import judgements FILE --rater R --task T` (bad rows go to rejected_records with reasons).",
    kinds={"duckdb"},
)
