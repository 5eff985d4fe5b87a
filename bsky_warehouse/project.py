"""Paths of the repository and the dbt project, and preparing the dbt manifest before definitions load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bsky_warehouse import settings

REPO_ROOT = settings.PROJECT_ROOT
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DBT_MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"
# The dbt docs site (`bsky-warehouse docs`): a target dir of its own, never the one DBT_MANIFEST is read from.
DOCS_TARGET = DBT_PROJECT_DIR / "target" / "docs_site"
SAMPLE_DIR = REPO_ROOT / "data" / "sample" / "jetstream"
REFERENCE_DIR = REPO_ROOT / "data" / "reference"

# dbt phones home on every run unless told not to; nothing here reaches the internet.
DBT_ENV = settings.DBT_ENV


def dbt_executable() -> str:
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def _newest_source_mtime() -> float:
    paths = [DBT_PROJECT_DIR / "dbt_project.yml", DBT_PROJECT_DIR / "profiles.yml"]
    for folder in ("models", "macros", "tests"):
        paths.extend(p for p in (DBT_PROJECT_DIR / folder).rglob("*") if p.is_file())
    return max(p.stat().st_mtime for p in paths if p.exists())


def prepare_manifest(force: bool = False) -> Path:
    """Run `dbt parse` once when the project changed, so importing the definitions never parses dbt."""
    if not force and DBT_MANIFEST.exists() and DBT_MANIFEST.stat().st_mtime >= _newest_source_mtime():
        return DBT_MANIFEST
    subprocess.run(
        [
            dbt_executable(),
            "parse",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
        ],
        check=True,
        env=settings.dbt_env(),
        cwd=DBT_PROJECT_DIR,
        stdout=subprocess.DEVNULL,
    )
    return DBT_MANIFEST
