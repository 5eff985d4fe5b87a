"""The Dagster code location: every asset, check and resource of the warehouse."""

from typing import Any

from dagster import (
    AssetSelection,
    Definitions,
    EnvVar,
    define_asset_job,
    multiprocess_executor,
)

from bsky_warehouse import settings
from bsky_warehouse.assets.audit import human_judgements
from bsky_warehouse.assets.authors import author_posts, author_scan_job, author_selection, author_toxicity_scores
from bsky_warehouse.assets.bridge import bridge_job, bridge_selection, scorer_mappings
from bsky_warehouse.assets.calibration import calibration_job, calibration_selection, rater_calibrations
from bsky_warehouse.assets.clean import cleaned_posts
from bsky_warehouse.assets.dbt import dbt_author_models, dbt_global_models, dbt_models, dbt_resource
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
from bsky_warehouse.resources.appview import AppViewResource
from bsky_warehouse.resources.bluesky import ArchiveSource
from bsky_warehouse.resources.jetstream import JetstreamSource
from bsky_warehouse.resources.llm import OpenAILabelerResource
from bsky_warehouse.resources.perspective import PerspectiveResource
from bsky_warehouse.resources.vllm import VLLMLabelerResource
from bsky_warehouse.resources.warehouse import WarehouseResource

ASSETS = [archive_files_asset, archive_ingest, feed_snapshots, cleaned_posts, toxicity_scores, llm_labels, dbt_models]
ASSETS += [dbt_global_models]
ASSETS += [author_posts, author_toxicity_scores, dbt_author_models]
ASSETS += [post_embeddings, post_topics]
ASSETS += [rater_calibrations, daily_report]
ASSETS += [distilled_models]
ASSETS += [scorer_mappings]
DBT_ASSETS = (dbt_models, dbt_global_models, dbt_author_models)
PYTHON_TABLES = {key.to_user_string() for a in ASSETS if a not in DBT_ASSETS for key in a.keys}

# Author scans have their own partitions (one per account) and their own job.
# A calibration is asked for by a rater (run config names who), so it has its own job too.
# A distilled scorer is fitted when asked for (each fit is a stored version), in its own job.
# So is the bridge between two scorers' series (a mapping fitted over all history).
# Feed snapshots are partitioned by the day they are taken (today included) and run from their own sensor.
# Freshness checks are evaluated by their own sensor against the clock, never as a step of a run.
# The whole-history marts (dbt_global_models, unpartitioned) stay in the daily jobs: they depend on the daily
# models with Dagster's all-partitions mapping, so a run of any days (or a single-run backfill) builds them
# once, as its last step, instead of once per day.
freshness_selection = AssetSelection.checks(*freshness_checks)
warehouse_job = define_asset_job(
    "warehouse_daily",
    description="Every daily asset for the chosen days: ingest, clean, score, label (when an LLM is configured), "
    "embed and assign topics, the daily dbt marts, the report; then the whole-history marts once. Backfill it "
    "from its Partitions tab.",
    selection=AssetSelection.all()
    - author_selection
    - calibration_selection
    - distill_selection
    - bridge_selection
    - AssetSelection.assets(feed_snapshots)
    - freshness_selection,
)
# What the daily schedule runs: everything that needs no extra configuration (labels need an LLM; feed
# snapshots have their own sensor).
scheduled_job = define_asset_job(
    "warehouse_yesterday",
    description="What the daily schedule runs for yesterday: the daily job without labels (paid, asked for "
    "separately) and without feed snapshots (their own sensor).",
    selection=AssetSelection.all()
    - author_selection
    - calibration_selection
    - distill_selection
    - bridge_selection
    - AssetSelection.assets("llm_labels", "feed_snapshots")
    - freshness_selection,
)
daily_schedule = build_daily_schedule(scheduled_job)
# Feed posts land in raw_posts under their own createdAt day: cleaning and everything the daily schedule builds
# after it must follow, for exactly those days (labels are paid work, asked for separately). The dbt models and
# seeds those marts read come too (views and small seeds, cheap to rebuild): on a new warehouse, a follow-up can
# run before any daily run has created them.
followup_selection = (
    AssetSelection.assets(cleaned_posts).downstream() - AssetSelection.assets(llm_labels)
) & scheduled_job.selection
feed_followup_job = define_asset_job(
    FEED_FOLLOWUP_JOB,
    description="Cleaning and everything after it, for the days a feed snapshot added posts to.",
    selection=followup_selection | (followup_selection.upstream() & AssetSelection.assets(dbt_models)),
)

# Every step of a launched run (a UI backfill, the daemon's schedule and sensors, `dagster asset materialize`)
# runs in its own process. Spawned, each step imported this code location and Great Expectations again (about
# 10 s on 2 cores, longer than most steps take); forked from a server that imported them once per run, a step
# starts at once. A fork server is started clean, before any DuckDB connection or thread exists.
STEP_EXECUTOR = multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["bsky_warehouse.definitions", "great_expectations"]}}}
)


def secret(setting: settings.Secret) -> EnvVar | None:
    """A credential as Dagster's `EnvVar`, resolved inside the resource, so it never lands in run config or
    logs; None when it is unset (the resource then refuses the work that needs it)."""
    return EnvVar(setting.name) if setting.is_set() else None


def perspective_resource() -> PerspectiveResource:
    return PerspectiveResource(
        api_key=secret(settings.PERSPECTIVE_API_KEY) or "",
        base_url=settings.PERSPECTIVE_BASE_URL.get(),
        qps=settings.PERSPECTIVE_QPS.get(),
    )


def openai_labeler_resource() -> OpenAILabelerResource:
    """Any OpenAI-compatible server (`vllm serve`, Groq, OpenAI)."""
    return OpenAILabelerResource(
        base_url=settings.LLM_BASE_URL.get(),
        model=settings.LLM_MODEL.get(),
        api_key=secret(settings.LLM_API_KEY),
        max_concurrency=settings.LLM_MAX_CONCURRENCY.get(),
    )


def default_resources() -> dict[str, Any]:
    """The resources as the environment configures them (bsky_warehouse/settings.py lists every variable)."""
    retention_hours = settings.JETSTREAM_RETENTION_HOURS.get()
    return {
        "warehouse": WarehouseResource(),
        "archive": ArchiveSource(),
        "jetstream": settings.JETSTREAM_HOST.get_as(
            lambda host: JetstreamSource.from_host(host, retention_hours=retention_hours)
        ),
        "perspective": perspective_resource(),
        "llm_openai": openai_labeler_resource(),
        "llm_vllm": VLLMLabelerResource(model=settings.VLLM_MODEL.get()),
        "dbt": dbt_resource(),
        "appview": settings.APPVIEW_URL.get_as(AppViewResource.from_url),
    }


def build_definitions(**overrides: Any) -> Definitions:
    """Definitions with overridable resources (tests point them at temporary files and local servers)."""
    return Definitions(
        assets=[*ASSETS, human_judgements],
        asset_checks=[*build_asset_checks(PYTHON_TABLES), *freshness_checks],
        jobs=[
            warehouse_job,
            scheduled_job,
            feed_job,
            feed_followup_job,
            author_scan_job,
            calibration_job,
            distill_job,
            bridge_job,
        ],
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
        executor=STEP_EXECUTOR,
    )


defs = build_definitions()
