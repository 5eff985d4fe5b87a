"""Sociopolitical labels: one row per (post, labeler, model, prompt_version), checkpointed as they arrive.

Like the toxicity scores, labeling holds no writer lock while the model works: a day's answers go to a
checkpoint and are merged in one short transaction, and a re-run never re-asks for finished posts.

Labels imported from a file are the exception: reading the file again costs nothing and the file may have been
corrected since, so an import looks up every post of the day and replaces the stored rows whose outcome the
file now gives differently (`import_partition`); rows it gives the same stay exactly as stored.
"""

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from dagster import AssetExecutionContext, BackfillPolicy, Config, MaterializeResult, asset
from pydantic import Field

from bsky_warehouse.assets.toxicity import summarize
from bsky_warehouse.checkpoint import (
    ELIGIBLE_SQL,
    Checkpoint,
    claim,
    describe_partition,
    merge_partition,
    run_partition,
)
from bsky_warehouse.label_files import ImportLabeler
from bsky_warehouse.partitions import DayWindow, daily_partitions
from bsky_warehouse.progress import Progress
from bsky_warehouse.records import Labeler, LabelResult, PostText
from bsky_warehouse.reference_labels import handle_map_from_csv, reference_handle_to_did
from bsky_warehouse.resources.llm import OpenAILabelerResource
from bsky_warehouse.resources.vllm import VLLMLabelerResource
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
    retry_failed: bool = Field(
        default=True, description="Re-ask rows that failed with `api_error` (an import re-reads every row anyway)."
    )


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


# What a label says about its post; a stored row is replaced by an import only when one of these differs.
ANSWER_COLUMNS = ("status", "reason", "is_sociopolitical", "political_ideology", "rationale", "dropped_ideology")


def label_columns(result: LabelResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "reason": result.reason,
        "is_sociopolitical": result.is_sociopolitical,
        "political_ideology": result.political_ideology,
        "rationale": result.rationale,
        "dropped_ideology": result.dropped_ideology,
        "labeled_at": datetime.now(UTC),
    }


def import_partition(
    warehouse: WarehouseResource, day: date, labeler: ImportLabeler, producer: Mapping[str, str]
) -> dict[str, Any]:
    """Bring a day's imported labels in line with the label file, touching only what the file changes.

    Every eligible post of the day is looked up in the file (not only those without a row, as for paid
    answers), so a corrected answer, a post the file used to lack (`not_in_label_file`) and a row that was
    `invalid_row` and is now valid all replace the stored row. A row whose answer is unchanged is left
    byte-identical, `labeled_at` and `source_digest` included: a re-run of the same file writes nothing.
    Only a row stored without a digest (imported before digests were recorded) is rewritten to get one.

    Runs under the partition's checkpoint claim, so two imports of the same producer and day cannot compare
    against a table the other is changing. Returns the same summary as `run_partition`, plus `replaced`.
    """
    what = describe_partition("llm_labels", day, producer)
    checkpoint = Checkpoint(warehouse.staging_dir, "llm_labels", producer.values(), day)
    where = " AND ".join(f"{column} = ${column}" for column in producer)
    with claim(checkpoint.lock_path, what, warehouse.lock_timeout_s):
        with warehouse.connect() as con:
            eligible = con.execute(
                "SELECT uri, text, coalesce(langs, []) FROM cleaned_posts"
                " WHERE partition_date = $day AND passes_filters ORDER BY uri",
                {"day": day},
            ).fetchall()
            stored = {
                uri: (tuple(answer), digest)
                for uri, digest, *answer in con.execute(
                    f"""SELECT uri, source_digest, {", ".join(ANSWER_COLUMNS)} FROM llm_labels
                        WHERE {where} AND partition_date = $day""",
                    {"day": day, **producer},
                ).fetchall()
            }
        digest = labeler.digest()
        results: list[LabelResult] = []
        stats = labeler.label([PostText(uri, text, tuple(langs)) for uri, text, langs in eligible], results.append)
        if labeler.digest() != digest:
            raise RuntimeError(f"{labeler.path} changed while it was being imported: run the import again")
        fixed = {**producer, "partition_date": day, "source_digest": digest}
        rows = []
        for result in results:
            columns = label_columns(result)
            answer = tuple(columns[c] for c in ANSWER_COLUMNS)
            previous = stored.get(result.uri)
            if previous is None or previous[0] != answer or previous[1] is None:
                rows.append({**columns, **fixed, "uri": result.uri})
        with warehouse.connect() as con:
            total = merge_partition(con, "llm_labels", day, producer, rows, ELIGIBLE_SQL)
            by_status = dict(
                con.execute(
                    f"""SELECT status || coalesce(':' || reason, ''), count(*) FROM llm_labels
                        WHERE partition_date = $day AND {where} GROUP BY 1 ORDER BY 1""",
                    {"day": day, **producer},
                ).fetchall()
            )
        # A checkpoint left by an import that ran through run_partition is of an older reading of the file.
        checkpoint.discard()
    return {
        "eligible_to_do": len(eligible),
        "resumed_from_checkpoint": 0,
        "requested": len(eligible),
        "replaced": len(rows),
        "rows": total,
        "by_status": by_status,
        "backend_stats": stats,
        "source_digest": digest,
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
    window = DayWindow.from_time_window(context.partition_time_window)
    # An LLM takes minutes for a day: the run's log says how far it got, over the whole window (the total grows
    # as each day is claimed, see Progress.add_total). An import reads a file in seconds and reports nothing.
    progress = Progress(f"labelling {labeler.name} {window.label()}", 0, log=context.log.info)
    per_day = {}
    try:
        for day in window.days():
            if isinstance(labeler, ImportLabeler):
                per_day[day.isoformat()] = import_partition(warehouse, day, labeler, producer)
            else:
                per_day[day.isoformat()] = run_partition(
                    warehouse, "llm_labels", day, producer=producer, version={}, work=work,
                    retry_failed=config.retry_failed, progress=progress,
                )  # fmt: skip
            context.log.info(f"{day} {producer}: {per_day[day.isoformat()]}")
    finally:
        progress.close()
    metadata = {**summarize(labeler.name, per_day), **producer}
    if isinstance(labeler, ImportLabeler):
        metadata["replaced"] = sum(stats["replaced"] for stats in per_day.values())
        metadata["source_digests"] = sorted({stats["source_digest"] for stats in per_day.values()})
    return MaterializeResult(metadata=metadata)
