"""Personal calibration as an asset: fitted on demand for one (rater, task, system), not per day.

A calibration is asked for by a person (a rater who has judged enough posts), so it is unpartitioned, has its
own job (`rater_calibration`), and the daily jobs leave it out: they could not know whom to calibrate for.
The asset writes `rater_calibrations` and `calibrated_predictions` together (see calibration.py).
"""

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)
from pydantic import Field

from bsky_warehouse.calibration import run_calibration
from bsky_warehouse.resources.warehouse import WarehouseResource


class CalibrationConfig(Config):
    rater: str = Field(description="The rater, as in human_judgements.rater.")
    task: str = Field(description="`toxicity` (calibrates a scorer) or `sociopolitical` (calibrates a labeler).")
    system: str = Field(description="`scorer:<scorer>` (e.g. scorer:profanity-check) or `labeler:<labeler>/<model>`.")
    use_embeddings: bool = Field(
        default=False, description="Also fit on the post embeddings (every judged post needs one)."
    )
    embedding_model: str | None = Field(
        default=None, description="Which post_embeddings model; default: the only one in the table."
    )


def fits_markdown(summary: dict) -> str:
    """The cross-validated errors as a table, the system's own beside the calibrated model's."""
    lines = [
        f"Cross-validated {summary['metric']} over {summary['n_judgements']} judgements ({summary['folds']} folds), "
        "lower is better:",
        "",
        "| features | system alone | calibrated | constant baseline | model_version | projected |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fit in summary["fits"]:
        lines.append(
            f"| {fit['features']} | {fit['cv_error_system']:.4f} | {fit['cv_error_calibrated']:.4f} | "
            f"{fit['cv_error_baseline']:.4f} | `{fit['model_version']}` | {'yes' if fit['projected'] else ''} |"
        )
    return "\n".join(lines)


@asset(
    deps=["toxicity_scores", "llm_labels", "post_embeddings"],
    group_name="audit",
    description=(
        "A per-rater model of one rater's judgements fitted on a system's output (and optionally embeddings), "
        "its cross-validated error beside the system's, and its projection over every post the system covers "
        "(table calibrated_predictions)."
    ),
)
def rater_calibrations(
    context: AssetExecutionContext, config: CalibrationConfig, warehouse: WarehouseResource
) -> MaterializeResult:
    summary = run_calibration(
        warehouse, config.rater, config.task, config.system, config.use_embeddings, config.embedding_model
    )
    projected = next(fit for fit in summary["fits"] if fit["projected"])
    context.log.info(
        f"{config.rater} / {config.task} / {config.system}: cv {summary['metric']} system "
        f"{projected['cv_error_system']:.4f} → calibrated {projected['cv_error_calibrated']:.4f}"
    )
    return MaterializeResult(
        metadata={
            "rater": config.rater,
            "task": config.task,
            "system": summary["system"],
            "n_judgements": summary["n_judgements"],
            "metric": summary["metric"],
            "cv_error_system": projected["cv_error_system"],
            "cv_error_calibrated": projected["cv_error_calibrated"],
            "cv_error_baseline": projected["cv_error_baseline"],
            "model_version": summary["model_version"],
            "projected_features": summary["projected_features"],
            "projected_posts": summary["projected_posts"],
            "flagged_posts": summary["flagged_posts"],
            "fits": MetadataValue.md(fits_markdown(summary)),
            "summary": MetadataValue.json(summary),
        }
    )


calibration_selection = AssetSelection.assets(rater_calibrations)
calibration_job = define_asset_job(
    "rater_calibration",
    selection=calibration_selection,
    description="Fit one rater's personal calibration of a scorer or labeler (cross-validated).",
)
