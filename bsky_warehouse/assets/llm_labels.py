"""Sociopolitical labels: one row per (post, labeler, model, prompt_version), checkpointed as they arrive.

Like the toxicity scores, labeling holds no writer lock while the model works: a day's answers go to a
checkpoint and are merged in one short transaction, and a re-run never re-asks for finished posts.
"""

from datetime import UTC, datetime
from typing import Any

from dagster import AssetExecutionContext, BackfillPolicy, Config, MaterializeResult, asset
from pydantic import Field

from bsky_warehouse.assets.toxicity import summarize
from bsky_warehouse.checkpoint import run_partition
from bsky_warehouse.partitions import DayWindow, daily_partitions
from bsky_warehouse.records import Labeler, LabelResult
from bsky_warehouse.resources.llm import ImportLabeler, OpenAILabelerResource, VLLMLabelerResource
from bsky_warehouse.resources.reference_labels import handle_map_from_csv, reference_handle_to_did
from bsky_warehouse.resources.warehouse import WarehouseResource


class LabelsConfig(Config):
    labeler: str = Field(default="openai", description="`openai` (any OpenAI-compatible server), `vllm`, `import`.")
    import_path: str | None = Field(default=None, description="import: CSV or Parquet of labels made elsewhere.")
    import_model: str = Field(default="external", description="import: the model name to record.")
    import_prompt_version: str = Field(default="external", description="import: the prompt version to record.")
    import_label_column: str | None = Field(default=None, description="import: sociopolitical label column.")
    import_ideology_column: str | None = Field(default=None, description="import: ideology column.")
    import_handle_map: str | None = Field(
        default=None,
        description="import: CSV (handle,did or link,uri) resolving handles in bsky.app links; "
        "default: the reference posts' handles.",
    )
    import_drop_ideology_on_non_sociopolitical: bool = Field(
        default=False, description="import: treat an ideology given for a non-sociopolitical post as a placeholder."
    )
    retry_failed: bool = Field(default=True, description="Re-ask rows that failed with `api_error`.")


def unconfigured_reason(config: LabelsConfig, openai: OpenAILabelerResource, vllm: VLLMLabelerResource) -> str | None:
    """Why an LLM labeler cannot run here, or None. The daily job includes labels, but a warehouse without an LLM
    is a normal setup: a backfill of that job must build everything else, and say why labels were skipped."""
    if config.labeler == "openai" and not openai.model:
        return "no LLM configured: set LLM_MODEL (and LLM_BASE_URL for your server), or choose labeler vllm/import"
    if config.labeler == "vllm" and not vllm.model:
        return "no local model configured for labeler 'vllm': set VLLM_MODEL"
    return None


def resolve_labeler(config: LabelsConfig, openai: OpenAILabelerResource, vllm: VLLMLabelerResource) -> Labeler:
    if config.labeler == "openai":
        if not openai.model:
            raise ValueError("labeler 'openai' needs a model: set LLM_MODEL (and LLM_BASE_URL for your server)")
        return openai
    if config.labeler == "vllm":
        if not vllm.model:
            raise ValueError("labeler 'vllm' needs a local model path: set VLLM_MODEL")
        return vllm
    if config.labeler == "import":
        if not config.import_path:
            raise ValueError("labeler 'import' needs import_path")
        handles = (
            handle_map_from_csv(config.import_handle_map) if config.import_handle_map else reference_handle_to_did()
        )
        options: dict[str, Any] = {
            "label_column": config.import_label_column,
            "ideology_column": config.import_ideology_column,
            "handle_to_did": handles,
            "drop_ideology_on_non_sociopolitical": config.import_drop_ideology_on_non_sociopolitical,
        }
        return ImportLabeler(
            path=config.import_path, model=config.import_model, prompt_version=config.import_prompt_version,
            options=options,
        )  # fmt: skip
    raise ValueError(f"unknown labeler {config.labeler!r}: use openai, vllm or import")


def label_columns(result: LabelResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "reason": result.reason,
        "is_sociopolitical": result.is_sociopolitical,
        "political_ideology": result.political_ideology,
        "rationale": result.rationale,
        "labeled_at": datetime.now(UTC),
    }


@asset(
    deps=["cleaned_posts"],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="labels",
    description="Sociopolitical label and US ideology per post; unique on (uri, labeler, model, prompt_version).",
)
def llm_labels(
    context: AssetExecutionContext,
    config: LabelsConfig,
    warehouse: WarehouseResource,
    llm_openai: OpenAILabelerResource,
    llm_vllm: VLLMLabelerResource,
) -> MaterializeResult:
    skipped = unconfigured_reason(config, llm_openai, llm_vllm)
    if skipped:
        context.log.warning(f"llm_labels skipped: {skipped}")
        return MaterializeResult(metadata={"skipped": skipped, "labeler": config.labeler, "labeled": 0})
    labeler = resolve_labeler(config, llm_openai, llm_vllm)

    def work(posts, emit):
        return labeler.label(posts, lambda result: emit(result.uri, label_columns(result)))

    producer = {"labeler": labeler.name, "model": labeler.model, "prompt_version": labeler.prompt_version}
    per_day = {}
    for day in DayWindow.from_time_window(context.partition_time_window).days():
        per_day[day.isoformat()] = run_partition(
            warehouse, "llm_labels", day, producer=producer, version={}, work=work, retry_failed=config.retry_failed
        )
        context.log.info(f"{day} {producer}: {per_day[day.isoformat()]}")
    return MaterializeResult(metadata={**summarize(labeler.name, per_day), **producer})
