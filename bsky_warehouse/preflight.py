"""Checks of a run's inputs before any step writes anything.

A run that re-ingests and re-cleans a day and only then finds that the scorer's name is misspelt (or that its
key is missing) wastes the user's time and rewrites tables for nothing. Every problem found here is one line
that names the problem and the fix; the CLI prints them and exits 2 before it starts a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path

from bsky_warehouse.partitions import START_ENV

PERSPECTIVE_SCORER = "perspective"
LABELERS = ("openai", "vllm", "import")


def scorer_names() -> list[str]:
    """Every scorer the toxicity asset accepts (offline models, Perspective, the vendored and distilled ones)."""
    from bsky_warehouse.distill import SCORER_NAME as DISTILLED
    from bsky_warehouse.reference import REFERENCE_SCORER
    from bsky_warehouse.scorers import OFFLINE_SCORERS

    return sorted({*OFFLINE_SCORERS, PERSPECTIVE_SCORER, REFERENCE_SCORER, DISTILLED})


def parse_day(value: str, option: str) -> tuple[date | None, str | None]:
    try:
        return date.fromisoformat(value), None
    except ValueError:
        return None, f"{option} {value!r} is not a date: use YYYY-MM-DD"


def window_problems(start: date, end: date, first_day: date, today: date) -> list[str]:
    """A half-open window [start, end) must hold at least one day, all within the daily partitions (from the
    first partition to yesterday: a day's partition exists once the day has ended)."""
    problems = []
    if end <= start:
        problems.append(f"--end {end} must be after --start {start} (--end is exclusive: the day after the last)")
    if start < first_day:
        problems.append(f"--start {start} is before the first partition {first_day}: set {START_ENV} earlier")
    last_partition = today - timedelta(days=1)
    if end - timedelta(days=1) > last_partition:
        problems.append(
            f"the window reaches {end - timedelta(days=1)}, past the last complete day {last_partition}: "
            "a day's partition exists once the day has ended"
        )
    return problems


def materialize_problems(
    *,
    start: str,
    end: str | None,
    archive: str | None,
    scorer: str | None,
    labeler: str | None,
    env: Mapping[str, str],
    first_day: date,
    today: date,
    sample: str = "all",
) -> list[str]:
    """Everything wrong with a `materialize` request, each as one line; empty when it may run."""
    problems: list[str] = []
    if sample != "all" and scorer != PERSPECTIVE_SCORER:
        problems.append(f"--sample {sample} applies to --scorer perspective only (run `perspective plan` first)")
    start_day, problem = parse_day(start, "--start")
    problems += [problem] if problem else []
    end_day: date | None = None
    if end is not None:
        end_day, problem = parse_day(end, "--end")
        problems += [problem] if problem else []
    elif start_day is not None:
        end_day = start_day + timedelta(days=1)
    if start_day is not None and end_day is not None:
        problems += window_problems(start_day, end_day, first_day, today)
    if archive is not None and not Path(archive).expanduser().is_dir():
        problems.append(f"--archive {archive}: no such directory (give the folder that holds the .jsonl dumps)")
    if scorer is not None:
        names = scorer_names()
        if scorer not in names:
            problems.append(f"unknown scorer {scorer!r}: choose one of {', '.join(names)}")
        elif scorer == PERSPECTIVE_SCORER and not env.get("PERSPECTIVE_API_KEY"):
            problems.append("scorer 'perspective' needs a key: export PERSPECTIVE_API_KEY=...")
    if labeler is not None:
        if labeler not in LABELERS:
            problems.append(f"unknown labeler {labeler!r}: choose one of {', '.join(LABELERS)}")
        elif labeler == "openai" and not env.get("LLM_MODEL"):
            problems.append("labeler 'openai' needs a model: export LLM_MODEL=... (and LLM_BASE_URL for your server)")
        elif labeler == "vllm" and not env.get("VLLM_MODEL"):
            problems.append("labeler 'vllm' needs a local model path: export VLLM_MODEL=/path/to/model")
        elif labeler == "import":
            problems.append("labeler 'import' needs an import file: run it from the Dagster UI with import_path set")
    return problems
