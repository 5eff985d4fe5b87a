"""`bsky-warehouse`: the small command line over the warehouse (demo, prepare, …)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.project import SAMPLE_DIR, prepare_manifest

SAMPLE_WINDOW = DayWindow(date(2024, 3, 8), date(2024, 3, 20))


def _instance():
    from dagster import DagsterInstance

    if os.environ.get("DAGSTER_HOME"):
        Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
        return DagsterInstance.get()
    return DagsterInstance.ephemeral()


def materialize_window(window: DayWindow, db_path: str | None = None, archive_dir: str | None = None) -> dict:
    """Materialize the Python assets day by day, then dbt once over the whole window (single-run backfill)."""
    from bsky_warehouse.pipeline import run_window

    return run_window(window, instance=_instance(), db_path=db_path, archive_dir=archive_dir)


def cmd_prepare(_: argparse.Namespace) -> int:
    print(f"dbt manifest: {prepare_manifest()}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    prepare_manifest()
    window = DayWindow(date.fromisoformat(args.start), date.fromisoformat(args.end))
    summary = materialize_window(window, archive_dir=args.archive)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    prepare_manifest()
    start = date.fromisoformat(args.start)
    end = date.fromisoformat(args.end) if args.end else start + timedelta(days=1)
    summary = materialize_window(DayWindow(start, end), archive_dir=args.archive)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bsky-warehouse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="parse the dbt project (needed before the definitions load)").set_defaults(
        func=cmd_prepare
    )
    demo = sub.add_parser("demo", help="load the shipped sample end to end into the warehouse")
    demo.add_argument("--start", default=SAMPLE_WINDOW.start.isoformat())
    demo.add_argument("--end", default=SAMPLE_WINDOW.end.isoformat(), help="exclusive")
    demo.add_argument("--archive", default=str(SAMPLE_DIR))
    demo.set_defaults(func=cmd_demo)
    mat = sub.add_parser("materialize", help="materialize a day or a range of days from an archive directory")
    mat.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    mat.add_argument("--end", help="day after the last (exclusive); default: one day")
    mat.add_argument("--archive", default=str(SAMPLE_DIR))
    mat.set_defaults(func=cmd_materialize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
