"""What a run did, in a few lines a person reads at the end of `materialize`: rows in and out per asset, what was
rejected and why, what failed, and where the details are.

Dagster keeps every figure as materialization metadata; this module only picks the counting ones (so the JSON a
run returns stays small) and lays them out. The dbt models are one line, not one each: their rows are in the marts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The metadata keys that count something: what `summarize_run` keeps of each materialization.
COUNT_KEYS = (
    "dagster/row_count",
    "lines_read",
    "lines_by_outcome",
    "raw_posts_in",
    "rejected",
    "rejected_by_reason",
    "filtered_by_reason",
    "deletes",
    "requested",
    "resumed_from_checkpoint",
    "by_status",
    "skipped",
    "without_embedding",
)
TOP_REASONS = 5


@dataclass
class AssetCounts:
    asset: str
    partitions: int = 0
    rows_in: int | None = None
    rows_out: int | None = None
    rejected: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    note: str = ""


def _add(counter: dict[str, int], more: Mapping[str, Any] | None) -> None:
    for key, n in (more or {}).items():
        if isinstance(n, int):
            counter[key] = counter.get(key, 0) + n


def _plus(total: int | None, value: Any) -> int | None:
    return (total or 0) + value if isinstance(value, int) else total


def asset_counts(materializations: Iterable[tuple[str, Mapping[str, Any]]]) -> list[AssetCounts]:
    """Per asset, the counts of every materialization the run recorded (a window's run may record an asset more
    than once, e.g. the extra days a dbt build rebuilt), summed."""
    by_asset: dict[str, AssetCounts] = {}
    for asset, metadata in materializations:
        row = by_asset.setdefault(asset, AssetCounts(asset))
        row.partitions += 1
        row.rows_out = _plus(row.rows_out, metadata.get("dagster/row_count"))
        row.rows_in = _plus(row.rows_in, metadata.get("lines_read", metadata.get("raw_posts_in")))
        rejected = metadata.get("rejected")
        if isinstance(rejected, int):
            row.rejected += rejected
        _add(row.reasons, metadata.get("rejected_by_reason"))
        filtered = metadata.get("filtered_by_reason") or {}
        _add(row.reasons, filtered)
        row.rejected += sum(n for n in filtered.values() if isinstance(n, int))
        statuses = metadata.get("by_status") or {}
        row.failed += sum(n for status, n in statuses.items() if status != "ok" and isinstance(n, int))
        _add(row.reasons, {f"status:{s}": n for s, n in statuses.items() if s != "ok"})
        _add(row.outcomes, metadata.get("lines_by_outcome"))
        if metadata.get("skipped"):
            row.note = f"skipped: {metadata['skipped']}"
        elif isinstance(metadata.get("without_embedding"), int) and metadata["without_embedding"]:
            row.note = f"{metadata['without_embedding']} without embedding"
    return sorted(by_asset.values(), key=lambda r: r.asset)


def _cell(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def format_counts(
    counts: list[AssetCounts], dbt_models: Iterable[str] = (), checks: Iterable[Mapping[str, Any]] = ()
) -> list[str]:
    """The table of counts, the dbt models on one line and the checks as passed/failed with the failing named."""
    lines = [f"{'asset':<22} {'in':>10} {'out':>10} {'rejected':>9} {'failed':>7}  note"]
    for row in counts:
        top = sorted(row.reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in top)
        lines_seen = ", ".join(f"{kind} {n:,}" for kind, n in sorted(row.outcomes.items(), key=lambda kv: -kv[1]))
        note = "; ".join(part for part in (row.note, f"lines: {lines_seen}" if lines_seen else "", reasons) if part)
        lines.append(
            f"{row.asset:<22} {_cell(row.rows_in):>10} {_cell(row.rows_out):>10} {row.rejected:>9,} "
            f"{row.failed:>7,}  {note}".rstrip()
        )
    models = sorted(set(dbt_models))
    if models:
        lines.append(f"dbt: {len(models)} models built ({', '.join(models[:6])}{', ...' if len(models) > 6 else ''})")
    checks = list(checks)
    if checks:
        failed = [f"{c['asset']}:{c['check']}" for c in checks if not c["passed"]]
        lines.append(f"checks: {len(checks) - len(failed)} passed, {len(failed)} failed")
        lines.extend(f"  failed: {name}" for name in failed[:10])
        if len(failed) > 10:
            lines.append(f"  ... and {len(failed) - 10} more (see the run in the Dagster UI)")
    return lines
