"""DDL for every table the Python assets own, declared explicitly.

Explicit DDL plus `INSERT ... BY NAME` keeps column types stable: a `CREATE TABLE AS SELECT` from a pandas
frame would silently turn DATE columns into TIMESTAMPs (see STACK-NOTES).
"""

from __future__ import annotations

from bsky_warehouse.records import PROB_COLUMNS

POST_COLUMNS = """
    uri VARCHAR NOT NULL,
    cid VARCHAR,
    author_did VARCHAR NOT NULL,
    text VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    langs VARCHAR[],
    reply_parent_uri VARCHAR,
    reply_root_uri VARCHAR,
    embed_type VARCHAR,
    facets JSON,
    labels JSON,
    source VARCHAR NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    partition_date DATE NOT NULL
"""

_PROBS = ",\n    ".join(f"{column} DOUBLE" for column in PROB_COLUMNS)

TABLES: dict[str, str] = {
    "raw_posts": f"CREATE TABLE IF NOT EXISTS raw_posts ({POST_COLUMNS})",
    "rejected_records": """
        CREATE TABLE IF NOT EXISTS rejected_records (
            source VARCHAR NOT NULL,
            raw VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            file VARCHAR,
            line_no BIGINT,
            partition_date DATE,
            ingested_at TIMESTAMPTZ NOT NULL
        )""",
    "post_deletions": """
        CREATE TABLE IF NOT EXISTS post_deletions (
            uri VARCHAR NOT NULL,
            deleted_at TIMESTAMPTZ NOT NULL,
            source VARCHAR NOT NULL,
            partition_date DATE NOT NULL
        )""",
    "cleaned_posts": f"""
        CREATE TABLE IF NOT EXISTS cleaned_posts (
            {POST_COLUMNS},
            text_length INTEGER NOT NULL,
            is_reply BOOLEAN NOT NULL,
            has_link BOOLEAN NOT NULL,
            lang_primary VARCHAR,
            passes_filters BOOLEAN NOT NULL,
            filter_reason VARCHAR
        )""",
    "toxicity_scores": f"""
        CREATE TABLE IF NOT EXISTS toxicity_scores (
            uri VARCHAR NOT NULL,
            scorer VARCHAR NOT NULL,
            scorer_version VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            reason VARCHAR,
            scored_at TIMESTAMPTZ NOT NULL,
            partition_date DATE NOT NULL,
            {_PROBS}
        )""",
    "feed_snapshots": """
        CREATE TABLE IF NOT EXISTS feed_snapshots (
            feed_uri VARCHAR NOT NULL,
            rank INTEGER NOT NULL,
            post_uri VARCHAR NOT NULL,
            like_count BIGINT,
            repost_count BIGINT,
            reply_count BIGINT,
            snapshot_at TIMESTAMPTZ NOT NULL,
            partition_date DATE NOT NULL
        )""",
    "llm_labels": """
        CREATE TABLE IF NOT EXISTS llm_labels (
            uri VARCHAR NOT NULL,
            labeler VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            prompt_version VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            reason VARCHAR,
            is_sociopolitical BOOLEAN,
            political_ideology VARCHAR,
            rationale VARCHAR,
            labeled_at TIMESTAMPTZ NOT NULL,
            partition_date DATE NOT NULL
        )""",
}

# Tables whose rows describe a post by uri and must disappear with it (deletes, cross-partition duplicates).
POST_DERIVED_TABLES = ("cleaned_posts", "toxicity_scores", "llm_labels")
