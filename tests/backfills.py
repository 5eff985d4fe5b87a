"""Backfills launched as a user launches them from a shell: `dagster asset materialize` of a partition range,
one run on the multiprocess executor, in a run history of its own (the DuckLake tests and bench share these)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dagster import DagsterInstance

from bsky_warehouse.project import REPO_ROOT

# The daily pipeline from the archive to the marts, without the assets that need a configured LLM or network.
PIPELINE_ASSETS = [
    "raw_posts", "post_deletions", "rejected_records", "cleaned_posts", "toxicity_scores",
    "stg_raw_posts", "stg_rejected_records", "stg_post_deletions", "stg_cleaned_posts", "stg_toxicity_scores",
    "stg_llm_labels", "reference_hand_labels", "daily_post_counts", "pipeline_coverage", "daily_toxicity_summary",
]  # fmt: skip


def dagster_home(root: Path, writer_limit: int) -> Path:
    """A run history whose `duckdb` pool (every warehouse writer's) admits `writer_limit` steps at once."""
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f"concurrency:\n  pools:\n    default_limit: {writer_limit}\ntelemetry:\n  enabled: false\n", encoding="utf-8"
    )
    # The run history exists before the runs start: processes creating its SQLite files at once race.
    DagsterInstance.from_config(str(home)).dispose()
    return home


def launch(
    first: str, last: str, archive: Path, env: dict[str, str], assets: Sequence[str] = PIPELINE_ASSETS
) -> subprocess.Popen[str]:
    """`dagster asset materialize` of `assets` for the days `first`...`last` (inclusive) from `archive`."""
    config = {"resources": {"archive": {"config": {"directory": str(archive)}}}}
    return subprocess.Popen(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "bsky_warehouse.definitions",
         "--select", ",".join(assets), "--partition-range", f"{first}...{last}",
         "--config-json", json.dumps(config)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
