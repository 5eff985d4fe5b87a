"""The `daily_report` asset: plots of the marts under `reports/<day>/`, and inline in the Dagster UI.

Partition D's report covers the `lookback_days` ending at D. A range of partitions (a single-run backfill)
writes one report per day, each its own folder; the materialization's Markdown shows the last day's figures.
The warehouse is read in one short connection per day and the drawing happens after it is closed.
"""

from dagster import AssetExecutionContext, BackfillPolicy, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from bsky_warehouse.partitions import DayWindow, daily_partitions, partition_start_date
from bsky_warehouse.report import DEFAULT_LOOKBACK_DAYS, REPORTS_ENV, load_report_data, render_report, reports_root
from bsky_warehouse.resources.warehouse import WarehouseResource

REPORT_MARTS = [
    "daily_toxicity_summary",
    "daily_sociopolitical_summary",
    "toxicity_by_ideology",
    "audit_by_topic",
    "scorer_bridge",
]


class ReportConfig(Config):
    lookback_days: int = Field(
        default=DEFAULT_LOOKBACK_DAYS, ge=1, description="Days each report covers, ending at its partition."
    )
    reports_dir: str | None = Field(
        default=None, description=f"Root folder of the reports (default: ${REPORTS_ENV}, else `reports/` in the cwd)."
    )


@asset(
    deps=REPORT_MARTS,
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="reports",
    description=(
        "PNG plots and an index.html under reports/<day>/: toxicity per scorer over days, share sociopolitical and "
        "ideology mix per labeler, toxicity by ideology, the audit's worst topics."
    ),
)
def daily_report(
    context: AssetExecutionContext, config: ReportConfig, warehouse: WarehouseResource
) -> MaterializeResult:
    root = reports_root(config.reports_dir)
    written = []
    for day in DayWindow.from_time_window(context.partition_time_window).days():
        with warehouse.connect() as con:
            data = load_report_data(con, day, config.lookback_days, earliest=partition_start_date())
        report = render_report(data, root / day.isoformat())
        context.log.info(f"{day}: report {report.index} ({data.start} to {data.end})")
        written.append((data, report))
    data, report = written[-1]
    return MaterializeResult(
        metadata={
            "report": MetadataValue.md(report.markdown()),
            "index_html": MetadataValue.path(str(report.index)),
            "window": f"{data.start} to {data.end}",
            "reports_written": len(written),
            "figures": [s.filename for s in report.sections],
            "missing": MetadataValue.json(data.notes),
        }
    )
