"""The Dagster code location: every asset, check and resource of the warehouse."""

from dagster import AssetSelection, Definitions, define_asset_job

from bsky_warehouse.assets.clean import cleaned_posts
from bsky_warehouse.assets.dbt import dbt_models, dbt_resource
from bsky_warehouse.assets.ingest import archive_ingest
from bsky_warehouse.partitions import daily_partitions
from bsky_warehouse.resources.bluesky import ArchiveSource
from bsky_warehouse.resources.warehouse import WarehouseResource

warehouse_job = define_asset_job("warehouse_daily", selection=AssetSelection.all(), partitions_def=daily_partitions)


def build_definitions(warehouse: WarehouseResource | None = None, archive: ArchiveSource | None = None) -> Definitions:
    """Definitions with overridable resources (tests point them at temporary files)."""
    return Definitions(
        assets=[archive_ingest, cleaned_posts, dbt_models],
        jobs=[warehouse_job],
        resources={
            "warehouse": warehouse or WarehouseResource(),
            "archive": archive or ArchiveSource(),
            "dbt": dbt_resource(),
        },
    )


defs = build_definitions()
