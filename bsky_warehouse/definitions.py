"""The Dagster code location: every asset, check and resource of the warehouse."""

import os
from typing import Any

from dagster import (
    AssetSelection,
    Definitions,
    EnvVar,
    define_asset_job,
)

from bsky_warehouse.assets.audit import human_judgements
from bsky_warehouse.assets.authors import author_posts, author_scan_job, author_selection, author_toxicity_scores
from bsky_warehouse.assets.calibration import calibration_job, calibration_selection, rater_calibrations
from bsky_warehouse.assets.clean import cleaned_posts
from bsky_warehouse.assets.dbt import dbt_author_models, dbt_models, dbt_resource
from bsky_warehouse.assets.distill import distill_job, distill_selection, distilled_models
from bsky_warehouse.assets.feeds import (
    FEED_FOLLOWUP_JOB,
    feed_followup_sensor,
    feed_job,
    feed_snapshot_sensor,
    feed_snapshots,
)
from bsky_warehouse.assets.ingest import archive_files_asset, archive_followup_sensor, archive_ingest
from bsky_warehouse.assets.llm_labels import llm_labels
from bsky_warehouse.assets.operations import (
    build_daily_schedule,
    freshness_checks,
    freshness_sensor,
    record_failed_runs,
    resolve_incidents_on_success,
)
from bsky_warehouse.assets.report import daily_report
from bsky_warehouse.assets.topics import post_embeddings, post_topics
from bsky_warehouse.assets.toxicity import toxicity_scores
from bsky_warehouse.checks.assets import build_asset_checks
from bsky_warehouse.resources.appview import APPVIEW_URL_ENV, DEFAULT_HOST, AppViewResource
from bsky_warehouse.resources.bluesky import ArchiveSource
from bsky_warehouse.resources.jetstream import DEFAULT_HOST as JETSTREAM_HOST
from bsky_warehouse.resources.jetstream import JetstreamSource
from bsky_warehouse.resources.llm import OpenAILabelerResource, VLLMLabelerResource
from bsky_warehouse.resources.perspective import PerspectiveResource
from bsky_warehouse.resources.warehouse import WarehouseResource

ASSETS = [archive_files_asset, archive_ingest, feed_snapshots, cleaned_posts, toxicity_scores, llm_labels, dbt_models]
ASSETS += [author_posts, author_toxicity_scores, dbt_author_models]
ASSETS += [post_embeddings, post_topics]
ASSETS += [rater_calibrations, daily_report]
ASSETS += [distilled_models]
PYTHON_TABLES = {key.to_user_string() for a in ASSETS if a not in (dbt_models, dbt_author_models) for key in a.keys}

# Author scans have their own partitions (one per account) and their own job.
# A calibration is asked for by a rater (run config names who), so it has its own job too.
# A distilled scorer is fitted when asked for (each fit is a stored version), in its own job.
# Feed snapshots are partitioned by the day they are taken (today included) and run from their own sensor.
# Freshness checks are evaluated by their own sensor against the clock, never as a step of a run.
freshness_selection = AssetSelection.checks(*freshness_checks)
warehouse_job = define_asset_job(
    "warehouse_daily",
    selection=AssetSelection.all()
    - author_selection
    - calibration_selection
    - distill_selection
    - AssetSelection.assets(feed_snapshots)
    - freshness_selection,
)
# What the daily schedule runs: everything that needs no extra configuration (labels need an LLM; feed
# snapshots have their own sensor).
scheduled_job = define_asset_job(
    "warehouse_yesterday",
    selection=AssetSelection.all()
    - author_selection
    - calibration_selection
    - distill_selection
    - AssetSelection.assets("llm_labels", "feed_snapshots")
    - freshness_selection,
)
daily_schedule = build_daily_schedule(scheduled_job)
# Feed posts land in raw_posts under their own createdAt day: cleaning and everything the daily schedule builds
# after it must follow, for exactly those days (labels are paid work, asked for separately).
feed_followup_job = define_asset_job(
    FEED_FOLLOWUP_JOB,
    selection=(AssetSelection.assets(cleaned_posts).downstream() - AssetSelection.assets(llm_labels))
    & scheduled_job.selection,
)


def perspective_resource() -> PerspectiveResource:
    """The key comes only from the environment, via EnvVar, so it is never stored in run config or logs."""
    key = EnvVar("PERSPECTIVE_API_KEY") if os.environ.get("PERSPECTIVE_API_KEY") else ""
    return PerspectiveResource(
        api_key=key,
        base_url=os.environ.get("PERSPECTIVE_BASE_URL", "https://commentanalyzer.googleapis.com"),
        qps=float(os.environ.get("PERSPECTIVE_QPS", "1")),
    )


def openai_labeler_resource() -> OpenAILabelerResource:
    """Any OpenAI-compatible server (`vllm serve`, Groq, OpenAI); the key only through EnvVar."""
    return OpenAILabelerResource(
        base_url=os.environ.get("LLM_BASE_URL", "http://127.0.0.1:8000/v1"),
        model=os.environ.get("LLM_MODEL", ""),
        api_key=EnvVar("LLM_API_KEY") if os.environ.get("LLM_API_KEY") else None,
        max_concurrency=int(os.environ.get("LLM_MAX_CONCURRENCY", "64")),
    )


def default_resources() -> dict[str, Any]:
    return {
        "warehouse": WarehouseResource(),
        "archive": ArchiveSource(),
        "jetstream": JetstreamSource.from_host(
            os.environ.get("BSKY_JETSTREAM_HOST", JETSTREAM_HOST),
            retention_hours=float(os.environ.get("BSKY_JETSTREAM_RETENTION_HOURS", "36")),
        ),
        "perspective": perspective_resource(),
        "llm_openai": openai_labeler_resource(),
        "llm_vllm": VLLMLabelerResource(model=os.environ.get("VLLM_MODEL", "")),
        "dbt": dbt_resource(),
        "appview": AppViewResource.from_url(os.environ.get(APPVIEW_URL_ENV, f"https://{DEFAULT_HOST}")),
    }


def build_definitions(**overrides: Any) -> Definitions:
    """Definitions with overridable resources (tests point them at temporary files and local servers)."""
    return Definitions(
        assets=[*ASSETS, human_judgements],
        asset_checks=[*build_asset_checks(PYTHON_TABLES), *freshness_checks],
        jobs=[warehouse_job, scheduled_job, feed_job, feed_followup_job, author_scan_job, calibration_job, distill_job],
        schedules=[daily_schedule],
        sensors=[
            feed_snapshot_sensor,
            feed_followup_sensor,
            archive_followup_sensor,
            freshness_sensor,
            record_failed_runs,
            resolve_incidents_on_success,
        ],
        resources={**default_resources(), **overrides},
    )


defs = build_definitions()
