from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
# Tests use ephemeral or temporary Dagster instances, never the developer's run history (`make` exports one).
os.environ.pop("DAGSTER_HOME", None)


@pytest.fixture
def warehouse(tmp_path: Path):
    from bsky_warehouse.resources.warehouse import WarehouseResource

    return WarehouseResource(path=str(tmp_path / "wh.duckdb"))


@pytest.fixture(scope="session", autouse=True)
def reports_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs of the daily job render `daily_report`: its files go to a temporary folder, not the checkout."""
    path = tmp_path_factory.mktemp("reports")
    os.environ["BSKY_WAREHOUSE_REPORTS"] = str(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def dbt_manifest():
    """The definitions need a parsed dbt project; `make test` prepares it, this covers bare pytest runs."""
    from bsky_warehouse.project import prepare_manifest

    return prepare_manifest()
