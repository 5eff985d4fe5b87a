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
def dbt_manifest():
    """The definitions need a parsed dbt project; `make test` prepares it, this covers bare pytest runs."""
    from bsky_warehouse.project import prepare_manifest

    return prepare_manifest()
