"""Author history scans: one dynamic partition per account (handle or DID), its posts and their scores.

`bsky-warehouse scan-author HANDLE` adds the partition and runs `author_scan_job`; in the UI, add a partition to
`authors` and materialize the group. The report is the dbt mart `author_toxicity_report`.
"""

from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    Config,
    DynamicPartitionsDefinition,
    MaterializeResult,
    asset,
    define_asset_job,
)
from pydantic import Field

from bsky_warehouse.assets.dbt import dbt_author_models
from bsky_warehouse.assets.toxicity import ToxicityConfig, resolve_scorer, score_columns
from bsky_warehouse.authors import (
    DEFAULT_FILTER,
    load_scan,
    normalize_actor,
    scan_summary,
    score_author,
    spool_author_feed,
    spool_path,
)
from bsky_warehouse.resources.appview import AppViewResource
from bsky_warehouse.resources.perspective import PerspectiveResource
from bsky_warehouse.resources.warehouse import WarehouseResource

author_partitions = DynamicPartitionsDefinition(name="authors")


class AuthorScanConfig(Config):
    max_pages: int | None = Field(default=None, description="Pages of 100 to read; default: the whole history.")
    filter: str = Field(default=DEFAULT_FILTER, description="getAuthorFeed filter (replies included by default).")


@asset(
    partitions_def=author_partitions,
    group_name="authors",
    description="Every post of a scanned account (its whole history, newest first from getAuthorFeed).",
)
def author_posts(
    context: AssetExecutionContext, config: AuthorScanConfig, warehouse: WarehouseResource, appview: AppViewResource
) -> MaterializeResult:
    scan_key = normalize_actor(context.partition_key)
    scanned_at = datetime.now(UTC)
    spool = spool_path(warehouse.staging_dir, scan_key, scanned_at)
    # Network first, with no lock held; then one short transaction.
    with appview.client() as client:
        scan = spool_author_feed(client, scan_key, spool, config.filter, config.max_pages, log=context.log.info)
    with warehouse.connect() as con:
        stats = load_scan(con, scan, scanned_at)
    context.log.info(f"{scan_key} -> {scan.author_did}: {stats}")
    return MaterializeResult(metadata={**scan_summary(scan, stats), "dagster/row_count": stats.posts})


@asset(
    deps=[author_posts],
    partitions_def=author_partitions,
    group_name="authors",
    description="Toxicity of every scanned post, per scorer; scores the daily pipeline already has are copied.",
)
def author_toxicity_scores(
    context: AssetExecutionContext,
    config: ToxicityConfig,
    warehouse: WarehouseResource,
    perspective: PerspectiveResource,
) -> MaterializeResult:
    scorer = resolve_scorer(config.scorer, perspective)
    stats = score_author(
        warehouse, normalize_actor(context.partition_key), scorer, score_columns, retry_failed=config.retry_failed
    )
    context.log.info(f"{context.partition_key} {scorer.name}: {stats}")
    return MaterializeResult(metadata={"producer": scorer.name, **stats})


author_selection = AssetSelection.assets(author_posts, author_toxicity_scores, *dbt_author_models.keys)
author_scan_job = define_asset_job(
    "author_scan",
    selection=author_selection,
    description="One account's whole history: posts, their toxicity, the dbt report (one partition per account).",
)
