"""Toxicity scores: one row per (post, scorer) for posts that pass the filters, checkpointed as they arrive.

The asset holds no writer lock while a scorer works (Perspective can take hours at a low quota): it reads
the day's posts, scores them into a checkpoint, and merges in a short transaction.

With `sample: planned` the `perspective` scorer sends only the day's posts of a stored plan
(`bsky-warehouse perspective plan`, perspective_plan.py). The others get no row from this run: they are not
failed or skipped, they are simply not scored by Perspective (their rows from earlier runs stay), and a later
plan or an `all` run can still score them. Each row records the probability with which its post entered the
day's sample (`inclusion_probability`, 1 for a day scored in full), so the daily marts weight a planned day back
to the day it samples (perspective_plan.record_inclusion).
"""

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from dagster import AssetExecutionContext, BackfillPolicy, Config, Failure, MaterializeResult, asset
from pydantic import Field

from bsky_warehouse.checkpoint import run_partitions
from bsky_warehouse.distill import SCORER_NAME
from bsky_warehouse.partitions import DayWindow, daily_partitions
from bsky_warehouse.perspective_plan import latest_plan_id, planned_uris, record_inclusion, stored_plan_ids
from bsky_warehouse.progress import Progress
from bsky_warehouse.records import PostText, Scorer, ScoreResult
from bsky_warehouse.reference import REFERENCE_SCORER, ReferenceScorer
from bsky_warehouse.resources.perspective import PerspectiveResource
from bsky_warehouse.resources.warehouse import WarehouseResource


class ToxicityConfig(Config):
    scorer: str = Field(
        default="profanity-check",
        description=f"`profanity-check` (offline default), `perspective`, `{REFERENCE_SCORER}`, `detoxify`, "
        f"`{SCORER_NAME}`.",
    )
    retry_failed: bool = Field(default=True, description="Re-attempt rows that failed with `api_error`.")
    distilled_version: str | None = Field(
        default=None,
        description=f"`{SCORER_NAME}` only: the stored model version to score with; default: the latest fitted.",
    )
    sample: str = Field(
        default="all",
        description="`all`: every eligible post; `planned` (`perspective` only): only the day's posts of a stored "
        "plan (`bsky-warehouse perspective plan`), leaving the rest unscored, not failed.",
    )
    plan_id: str | None = Field(default=None, description="`sample: planned`: the stored plan; default: the latest.")


SAMPLES = ("all", "planned")


def resolve_plan(warehouse: WarehouseResource, config: ToxicityConfig) -> str | None:
    """The plan a `planned` run scores (None for `all`); a clear error for a sample, scorer or plan that cannot
    work, before anything is sent."""
    if config.sample not in SAMPLES:
        raise Failure(f"sample {config.sample!r} is not one of {list(SAMPLES)}")
    if config.sample == "all":
        return None
    if config.scorer != "perspective":
        raise Failure(f"sample 'planned' rations the Perspective quota: scorer {config.scorer!r} scores every post")
    with warehouse.connect() as con:
        chosen = config.plan_id or latest_plan_id(con)
        known = stored_plan_ids(con)
    if chosen is None:
        raise Failure("sample 'planned' needs a stored plan: run `bsky-warehouse perspective plan` first")
    if chosen not in known:
        raise Failure(f"no plan {chosen!r} in perspective_plan (stored: {known or 'none'})")
    return chosen


def planned_by_day(warehouse: WarehouseResource, plan: str | None, days: list[date]) -> dict[date, set[str]]:
    """Each day's planned uris (none for an `all` run), read in one connection for the window."""
    if plan is None:
        return {}
    with warehouse.connect() as con:
        return {day: set(planned_uris(con, plan, day)) for day in days}


def only_planned(posts: list[PostText], planned: set[str] | None) -> tuple[list[PostText], int]:
    """The posts to send and how many were left out because the plan does not name them."""
    if planned is None:
        return posts, 0
    chosen = [post for post in posts if post.uri in planned]
    return chosen, len(posts) - len(chosen)


def distilled_scorer(warehouse: WarehouseResource, version: str | None) -> Scorer:
    """The stored distilled model, reading each batch's embeddings in a short connection of its own."""
    from bsky_warehouse.assets.distill import fetch_embeddings, resolve_distilled
    from bsky_warehouse.scorers import DistilledScorer

    with warehouse.connect() as con:
        model = resolve_distilled(con, version)

    def embeddings(uris: list[str]) -> dict:
        with warehouse.connect() as con:
            return fetch_embeddings(con, model.embedding_model, uris)

    return DistilledScorer(model, embeddings)


def resolve_scorer(
    name: str,
    perspective: PerspectiveResource,
    warehouse: WarehouseResource | None = None,
    distilled_version: str | None = None,
) -> Scorer:
    if name == "perspective":
        if not perspective.api_key:
            raise ValueError("scorer 'perspective' needs the PERSPECTIVE_API_KEY environment variable")
        return perspective
    if name == REFERENCE_SCORER:
        return ReferenceScorer()
    if name == SCORER_NAME:
        if warehouse is None:
            raise ValueError(f"scorer {SCORER_NAME!r} reads stored embeddings: it needs the warehouse")
        return distilled_scorer(warehouse, distilled_version)
    from bsky_warehouse.preflight import scorer_names
    from bsky_warehouse.scorers import make_scorer  # loads model files: only when chosen

    if name not in scorer_names():
        raise ValueError(f"unknown scorer {name!r}: choose one of {', '.join(scorer_names())}")
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
    plan = resolve_plan(warehouse, config)
    scorer = resolve_scorer(config.scorer, perspective, warehouse, config.distilled_version)

    window = DayWindow.from_time_window(context.partition_time_window)
    days = window.days()
    planned = planned_by_day(warehouse, plan, days)
    sent: dict[date, dict[str, int]] = {}
    # Perspective at 1 QPS takes hours for a day: the run's log says how far it got (see Progress.add_total).
    progress = Progress(f"scoring {scorer.name} {window.label()}", 0, log=context.log.info)

    def work(day: date, posts: list[PostText], emit: Callable[[str, dict[str, Any]], None]) -> Any:
        chosen, unplanned = only_planned(posts, planned.get(day))
        sent[day] = {"posts": len(chosen), "unplanned": unplanned}
        progress.add_total(-unplanned)  # claimed as to do, but the plan leaves them unscored: no work
        return scorer.score(chosen, lambda result: emit(result.uri, score_columns(result)))

    per_day = {}
    try:
        for day, stats in run_partitions(
            warehouse,
            "toxicity_scores",
            days,
            producer={"scorer": scorer.name},
            version={"scorer_version": scorer.version},
            work=work,
            retry_failed=config.retry_failed,
            progress=progress,
            finish=lambda con, day: record_inclusion(con, scorer.name, plan, day),
        ):
            if plan is not None:
                done = sent.get(day, {"posts": 0, "unplanned": 0})
                stats = {
                    **stats,
                    "requested": done["posts"],
                    "planned": len(planned[day]),
                    "unplanned": done["unplanned"],
                }
            per_day[day.isoformat()] = stats
            context.log.info(f"{day} {scorer.name}: {stats}")
            # Only the distilled scorer reports posts it could not score yet; other scorers' stats are objects.
            backend = stats["backend_stats"]
            without = backend.get("without_embedding") if isinstance(backend, dict) else None
            if without:
                context.log.warning(
                    f"{day}: {without} eligible posts have no embedding and got no {scorer.name} score; "
                    "materialize post_embeddings for the day, then this asset again"
                )
    finally:
        progress.close()
    metadata = {**summarize(scorer.name, per_day), **version_metadata(scorer, per_day)}
    if plan is not None:
        metadata.update(plan_metadata(plan, per_day))
    return MaterializeResult(metadata=metadata)


def plan_metadata(plan: str, per_day: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A planned run's sample: the plan, its posts in the window, and the eligible posts it left unscored."""
    return {
        "sample": "planned",
        "plan_id": plan,
        "planned": sum(s["planned"] for s in per_day.values()),
        "unplanned_not_scored": sum(s["unplanned"] for s in per_day.values()),
    }


def version_metadata(scorer: Scorer, per_day: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The scorer_version the rows carry and, for scorers that read stored embeddings, the posts left for later."""
    out: dict[str, Any] = {"scorer_version": scorer.version}
    stats = [s["backend_stats"] for s in per_day.values() if isinstance(s.get("backend_stats"), dict)]
    if any("without_embedding" in s for s in stats):
        out["without_embedding"] = sum(s.get("without_embedding", 0) for s in stats)
    return out


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
