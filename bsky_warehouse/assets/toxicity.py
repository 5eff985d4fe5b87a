"""Toxicity scores: one row per (post, scorer) for posts that pass the filters, checkpointed as they arrive.

The asset holds no writer lock while a scorer works (Perspective can take hours at a low quota): it reads
the day's posts, scores them into a checkpoint, and merges in a short transaction.
"""

from datetime import UTC, datetime
from typing import Any

from dagster import AssetExecutionContext, BackfillPolicy, Config, MaterializeResult, asset
from pydantic import Field

from bsky_warehouse.checkpoint import run_partition
from bsky_warehouse.partitions import DayWindow, daily_partitions
from bsky_warehouse.records import Scorer, ScoreResult
from bsky_warehouse.resources.perspective import PerspectiveResource
from bsky_warehouse.resources.reference import REFERENCE_SCORER, ReferenceScorer
from bsky_warehouse.resources.warehouse import WarehouseResource


class ToxicityConfig(Config):
    scorer: str = Field(
        default="profanity-check",
        description=f"`profanity-check` (offline default), `perspective`, `{REFERENCE_SCORER}`, `detoxify`.",
    )
    retry_failed: bool = Field(default=True, description="Re-attempt rows that failed with `api_error`.")


def resolve_scorer(name: str, perspective: PerspectiveResource) -> Scorer:
    if name == "perspective":
        if not perspective.api_key:
            raise ValueError("scorer 'perspective' needs the PERSPECTIVE_API_KEY environment variable")
        return perspective
    if name == REFERENCE_SCORER:
        return ReferenceScorer()
    from bsky_warehouse.resources.scorers import make_scorer  # loads model files: only when chosen

    return make_scorer(name)


def score_columns(result: ScoreResult) -> dict[str, Any]:
    return {"status": result.status, "reason": result.reason, "scored_at": datetime.now(UTC), **result.probs}


@asset(
    deps=["cleaned_posts"],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="scores",
    description="Toxicity and bridging/persuasion probabilities per post and scorer; unique on (uri, scorer).",
)
def toxicity_scores(
    context: AssetExecutionContext,
    config: ToxicityConfig,
    warehouse: WarehouseResource,
    perspective: PerspectiveResource,
) -> MaterializeResult:
    scorer = resolve_scorer(config.scorer, perspective)

    def work(posts, emit):
        return scorer.score(posts, lambda result: emit(result.uri, score_columns(result)))

    per_day = {}
    for day in DayWindow.from_time_window(context.partition_time_window).days():
        per_day[day.isoformat()] = run_partition(
            warehouse,
            "toxicity_scores",
            day,
            producer={"scorer": scorer.name},
            version={"scorer_version": scorer.version},
            work=work,
            retry_failed=config.retry_failed,
        )
        context.log.info(f"{day} {scorer.name}: {per_day[day.isoformat()]}")
    return MaterializeResult(metadata=summarize(scorer.name, per_day))


def summarize(producer: str, per_day: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Run metadata: rows, requests made, resumed work and outcomes by status, summed over the window."""
    by_status: dict[str, int] = {}
    for stats in per_day.values():
        for key, n in stats["by_status"].items():
            by_status[key] = by_status.get(key, 0) + n
    return {
        "producer": producer,
        "dagster/row_count": sum(s["rows"] for s in per_day.values()),
        "requested": sum(s["requested"] for s in per_day.values()),
        "resumed_from_checkpoint": sum(s["resumed_from_checkpoint"] for s in per_day.values()),
        "by_status": by_status,
    }
