"""The GX suites as Dagster asset checks: one multi-check per asset, one check per rule."""

from collections.abc import Iterator, Mapping

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, multi_asset_check

from bsky_warehouse.checks.expectations import SUITES, AuthorScan, Scope, Suite, suite_frame, validate
from bsky_warehouse.partitions import PARTITION_TAG, window_from_tags
from bsky_warehouse.resources.warehouse import WarehouseResource


def run_scope(suite: Suite, tags: Mapping[str, str]) -> Scope:
    """What the run wrote, from its tags: days for a daily suite, the scanned account for an author suite."""
    if suite.partitioned_by == "author":
        from bsky_warehouse.authors import normalize_actor

        return AuthorScan(normalize_actor(tags[PARTITION_TAG])) if PARTITION_TAG in tags else None
    return window_from_tags(tags)


def build_suite_check(suite: Suite):
    specs = [
        AssetCheckSpec(check.name, asset=suite.asset, description=check.description, blocking=check.blocking)
        for check in suite.checks
    ]

    @multi_asset_check(name=f"gx_{suite.asset}", specs=specs, can_subset=True)
    def _check(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> Iterator[AssetCheckResult]:
        scope = run_scope(suite, context.run.tags)
        with warehouse.connect() as con:
            frame = suite_frame(con, suite, scope)
        selected = {key.name for key in context.op_execution_context.selected_asset_check_keys}
        checks = [c for c in suite.checks if c.name in selected]
        for check, outcome in zip(checks, validate(frame, checks), strict=True):
            yield AssetCheckResult(
                asset_key=suite.asset,
                check_name=check.name,
                passed=outcome.passed,
                severity=AssetCheckSeverity.ERROR if check.blocking else AssetCheckSeverity.WARN,
                metadata={**outcome.metadata(), "window": scope.label() if scope else "all partitions"},
            )

    return _check


def build_asset_checks(assets: set[str]) -> list:
    """Checks for the suites whose asset is defined here."""
    return [build_suite_check(suite) for suite in SUITES if suite.asset in assets]
