"""DDL for every table the Python assets own, declared explicitly.

Explicit DDL plus `INSERT ... BY NAME` keeps column types stable: a `CREATE TABLE AS SELECT` from a pandas
frame would silently turn DATE columns into TIMESTAMPs (see STACK-NOTES).
"""

from __future__ import annotations

from bsky_warehouse.records import PROB_COLUMNS

# all-MiniLM-L6-v2 sentence embeddings (the `[topics]` extra).
EMBEDDING_DIM = 384

# What a post record says (events.py parses these), then where and when the warehouse got it.
POST_RECORD_COLUMNS = """
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
    labels JSON"""
POST_COLUMNS = f"""{POST_RECORD_COLUMNS},
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
            {_PROBS},
            inclusion_probability DOUBLE DEFAULT 1.0
        )""",
    # Days whose marts a write to another day made stale (a delete purging an earlier day's post, a take-over,
    # a uri changing owner), recorded in the same transaction as the change; the dbt step rebuilds them with its
    # own window and then clears them (cross_day.py).
    "stale_mart_days": """
        CREATE TABLE IF NOT EXISTS stale_mart_days (
            day DATE NOT NULL,
            cause VARCHAR NOT NULL,
            changed_by_day DATE NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL
        )""",
    # One row per indexed archive file: its fingerprint and what its lines became; the lines themselves are in
    # the per-day Parquet spool under `<db>.staging/archive_index/` (archive_index.py).
    "archive_files": """
        CREATE TABLE IF NOT EXISTS archive_files (
            source VARCHAR NOT NULL,
            archive VARCHAR NOT NULL,
            file VARCHAR NOT NULL,
            file_key VARCHAR NOT NULL,
            size BIGINT,
            mtime_ns BIGINT,
            fingerprint VARCHAR NOT NULL,
            lines BIGINT NOT NULL,
            posts BIGINT NOT NULL,
            deletes BIGINT NOT NULL,
            rejects BIGINT NOT NULL,
            ignored BIGINT NOT NULL,
            undated BIGINT NOT NULL,
            days DATE[] NOT NULL,
            pruned BOOLEAN NOT NULL,
            indexed_at TIMESTAMPTZ NOT NULL
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
            partition_date DATE NOT NULL,
            source_digest VARCHAR,
            dropped_ideology VARCHAR
        )""",
    # Author history scans (#6): their own sampling frame, so their own tables (see authors.py).
    "author_scans": """
        CREATE TABLE IF NOT EXISTS author_scans (
            scan_key VARCHAR NOT NULL,
            author_did VARCHAR NOT NULL,
            author_handle VARCHAR,
            scanned_at TIMESTAMPTZ NOT NULL,
            items BIGINT NOT NULL,
            posts BIGINT NOT NULL,
            rejected BIGINT NOT NULL,
            reposts_skipped BIGINT NOT NULL,
            requests BIGINT NOT NULL
        )""",
    "author_posts": f"""
        CREATE TABLE IF NOT EXISTS author_posts (
            {POST_RECORD_COLUMNS},
            author_handle VARCHAR,
            like_count BIGINT,
            repost_count BIGINT,
            reply_count BIGINT,
            scanned_at TIMESTAMPTZ NOT NULL
        )""",
    "author_toxicity_scores": f"""
        CREATE TABLE IF NOT EXISTS author_toxicity_scores (
            uri VARCHAR NOT NULL,
            author_did VARCHAR NOT NULL,
            scorer VARCHAR NOT NULL,
            scorer_version VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            reason VARCHAR,
            scored_at TIMESTAMPTZ NOT NULL,
            {_PROBS}
        )""",
    # Audits (#8): human judgements, embeddings and topics. Judgements are keyed by uri and may name posts the
    # warehouse does not hold (yet); audits join them to the posts it does.
    "human_judgements": """
        CREATE TABLE IF NOT EXISTS human_judgements (
            uri VARCHAR NOT NULL,
            rater VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            value DOUBLE,
            label VARCHAR,
            source_file VARCHAR NOT NULL,
            line_no BIGINT,
            imported_at TIMESTAMPTZ NOT NULL
        )""",
    "post_embeddings": f"""
        CREATE TABLE IF NOT EXISTS post_embeddings (
            uri VARCHAR NOT NULL,
            embedding_model VARCHAR NOT NULL,
            embedding FLOAT[{EMBEDDING_DIM}] NOT NULL,
            embedded_at TIMESTAMPTZ NOT NULL,
            partition_date DATE NOT NULL
        )""",
    "topic_models": f"""
        CREATE TABLE IF NOT EXISTS topic_models (
            topic_model_version VARCHAR NOT NULL,
            topic_id INTEGER NOT NULL,
            label VARCHAR NOT NULL,
            top_terms VARCHAR[] NOT NULL,
            size INTEGER NOT NULL,
            centroid FLOAT[{EMBEDDING_DIM}] NOT NULL,
            embedding_model VARCHAR NOT NULL,
            params JSON NOT NULL,
            fitted_at TIMESTAMPTZ NOT NULL
        )""",
    "post_topics": """
        CREATE TABLE IF NOT EXISTS post_topics (
            uri VARCHAR NOT NULL,
            topic_model_version VARCHAR NOT NULL,
            topic_id INTEGER NOT NULL,
            topic_label VARCHAR NOT NULL,
            distance DOUBLE NOT NULL,
            assigned_at TIMESTAMPTZ NOT NULL,
            partition_date DATE NOT NULL
        )""",
    # Personal calibration (#8, calibration.py): per (rater, task, system) one row per feature set fitted, and
    # the projection of the model marked `projected` over every post the system covers.
    "rater_calibrations": """
        CREATE TABLE IF NOT EXISTS rater_calibrations (
            rater VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            system VARCHAR NOT NULL,
            features VARCHAR NOT NULL,
            embedding_model VARCHAR,
            n_judgements INTEGER NOT NULL,
            folds INTEGER NOT NULL,
            metric VARCHAR NOT NULL,
            cv_error_system DOUBLE NOT NULL,
            cv_error_calibrated DOUBLE NOT NULL,
            cv_error_baseline DOUBLE NOT NULL,
            cv_brier_system DOUBLE NOT NULL,
            cv_brier_calibrated DOUBLE NOT NULL,
            flag_threshold DOUBLE NOT NULL,
            projected BOOLEAN NOT NULL,
            model_version VARCHAR NOT NULL,
            fitted_at TIMESTAMPTZ NOT NULL
        )""",
    "calibrated_predictions": """
        CREATE TABLE IF NOT EXISTS calibrated_predictions (
            uri VARCHAR NOT NULL,
            rater VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            system VARCHAR NOT NULL,
            model_version VARCHAR NOT NULL,
            prediction DOUBLE NOT NULL,
            flagged BOOLEAN NOT NULL,
            partition_date DATE NOT NULL
        )""",
    # Operations (#16, incidents.py): one row per failed step of a failed run, closed by a later success.
    "pipeline_incidents": """
        CREATE TABLE IF NOT EXISTS pipeline_incidents (
            run_id VARCHAR NOT NULL,
            job_name VARCHAR NOT NULL,
            range_start DATE,
            range_end DATE,
            step_key VARCHAR,
            error VARCHAR NOT NULL,
            failed_at TIMESTAMPTZ NOT NULL,
            resolved_by_run_id VARCHAR,
            resolved_at TIMESTAMPTZ
        )""",
    # The distilled Perspective scorer (distill.py): one row per (model version, attribute) with the folded
    # linear head and its cross-validated figures, and the out-of-fold prediction of every training post, which
    # agreement reads in place of the refitted model's score (see evaluation.py).
    "distilled_models": f"""
        CREATE TABLE IF NOT EXISTS distilled_models (
            model_version VARCHAR NOT NULL,
            attribute VARCHAR NOT NULL,
            embedding_model VARCHAR NOT NULL,
            training_scorers VARCHAR[] NOT NULL,
            params JSON NOT NULL,
            text_features VARCHAR[] NOT NULL,
            embedding_coef DOUBLE[{EMBEDDING_DIM}] NOT NULL,
            text_coef DOUBLE[] NOT NULL,
            intercept DOUBLE NOT NULL,
            text_weight DOUBLE NOT NULL,
            alpha DOUBLE NOT NULL,
            n_train INTEGER NOT NULL,
            n_positive INTEGER NOT NULL,
            cv_folds INTEGER NOT NULL,
            cv_spearman DOUBLE,
            cv_pearson DOUBLE,
            cv_auc DOUBLE,
            fitted_at TIMESTAMPTZ NOT NULL
        )""",
    "distilled_oof_predictions": """
        CREATE TABLE IF NOT EXISTS distilled_oof_predictions (
            model_version VARCHAR NOT NULL,
            uri VARCHAR NOT NULL,
            attribute VARCHAR NOT NULL,
            training_scorer VARCHAR NOT NULL,
            target DOUBLE NOT NULL,
            prediction DOUBLE NOT NULL,
            fold INTEGER NOT NULL
        )""",
    # The bridge across the change of instrument (bridge.py): per (mapping version, attribute) the knots of a
    # monotone map putting a local scorer on the reference scorers' scale, fitted on the posts both scored.
    "scorer_mappings": """
        CREATE TABLE IF NOT EXISTS scorer_mappings (
            mapping_version VARCHAR NOT NULL,
            local_scorer VARCHAR NOT NULL,
            local_scorer_versions VARCHAR[] NOT NULL,
            reference_scorers VARCHAR[] NOT NULL,
            attribute VARCHAR NOT NULL,
            method VARCHAR NOT NULL,
            knots_local DOUBLE[] NOT NULL,
            knots_reference DOUBLE[] NOT NULL,
            n_overlap INTEGER NOT NULL,
            n_out_of_fold INTEGER NOT NULL,
            params JSON NOT NULL,
            fitted_at TIMESTAMPTZ NOT NULL
        )""",
    # The sample the last of the Perspective quota goes to (perspective_plan.py): one row per (plan, planned
    # post); `toxicity_scores` with `sample: planned` scores only these.
    "perspective_plan": """
        CREATE TABLE IF NOT EXISTS perspective_plan (
            plan_id VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            uri VARCHAR NOT NULL,
            partition_date DATE NOT NULL,
            lang VARCHAR NOT NULL,
            weight DOUBLE NOT NULL,
            inclusion_probability DOUBLE NOT NULL,
            prediction DOUBLE,
            reason VARCHAR NOT NULL,
            distilled_version VARCHAR,
            params JSON NOT NULL
        )""",
}

# Columns added after a table's first release: CREATE TABLE IF NOT EXISTS leaves an older file's table as it
# was, so every writing connection adds them (a no-op once present). At the end of the table, as in CREATE.
COLUMNS_ADDED: tuple[str, ...] = (
    "ALTER TABLE llm_labels ADD COLUMN IF NOT EXISTS source_digest VARCHAR",
    "ALTER TABLE llm_labels ADD COLUMN IF NOT EXISTS dropped_ideology VARCHAR",
    "ALTER TABLE toxicity_scores ADD COLUMN IF NOT EXISTS inclusion_probability DOUBLE DEFAULT 1.0",
)

# Tables whose rows describe a post by uri and must disappear with it (deletes, cross-partition duplicates).
POST_DERIVED_TABLES = (
    "cleaned_posts",
    "toxicity_scores",
    "llm_labels",
    "post_embeddings",
    "post_topics",
    "calibrated_predictions",
    "perspective_plan",
)
