"""The DuckLake backend's pure parts: its settings, its DDL and its ATTACH (the backend itself runs in
test_pipeline.py and test_ducklake_concurrency.py, in make test's DuckLake pass)."""

from __future__ import annotations

import pytest

from bsky_warehouse import ducklake
from bsky_warehouse.resources.warehouse import WarehouseResource
from bsky_warehouse.schema import TABLES
from bsky_warehouse.settings import SettingError

LAKE = ducklake.LakeSettings("postgres:dbname=bsky host=/tmp/pg user=warehouse", "/shared/lake/")


@pytest.mark.parametrize(
    ("catalog", "data_path", "says"),
    [
        ("sqlite:lake.db", "/data", "postgres:"),
        ("dbname=bsky", "/data", "postgres:"),
        ("postgres:dbname=bsky", "  ", "data path"),
        ("postgres:dbname=bsky password='x'", "/data", "single quote"),
        ("postgres:dbname=bsky", "/data/it's", "single quote"),
    ],
)
def test_a_catalog_or_data_path_the_attach_cannot_take_is_refused(catalog, data_path, says):
    with pytest.raises(ValueError, match=says):
        ducklake.LakeSettings(catalog, data_path)


def test_the_resource_names_the_variable_that_was_set_wrong(tmp_path):
    warehouse = WarehouseResource(path=str(tmp_path / "wh.duckdb"), catalog="mysql:db", data_path="/data")
    with pytest.raises(SettingError, match="BSKY_WAREHOUSE_CATALOG"):
        _ = warehouse.lake


def test_no_catalog_is_the_file_and_its_dbt_target_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("BSKY_DBT_TARGET", "ducklake")  # left over from elsewhere: never reaches dbt for a file
    warehouse = WarehouseResource(path=str(tmp_path / "wh.duckdb"), catalog="", data_path="")
    assert warehouse.lake is None
    assert warehouse.location == str(tmp_path / "wh.duckdb")
    env = warehouse.dbt_env()
    assert env["BSKY_WAREHOUSE_DB"] == str(tmp_path / "wh.duckdb")
    assert not set(ducklake.DBT_ENV_NAMES) & set(env)


def test_fixed_size_arrays_become_lists_and_nothing_else_changes():
    ddl = "embedding FLOAT[384] NOT NULL, w DOUBLE[12], xs DOUBLE[], n VARCHAR[]"
    assert ducklake.lake_ddl(ddl) == "embedding FLOAT[] NOT NULL, w DOUBLE[], xs DOUBLE[], n VARCHAR[]"
    changed = [name for name, ddl in TABLES.items() if ducklake.lake_ddl(ddl) != ddl]
    assert sorted(changed) == ["distilled_models", "post_embeddings", "topic_models"]
    assert all("[384]" not in ducklake.lake_ddl(ddl) for ddl in TABLES.values())


def test_the_attach_keeps_every_row_in_parquet_and_a_reader_read_only():
    sql = ducklake.attach_sql(LAKE)
    assert sql.startswith(f"ATTACH 'ducklake:{LAKE.catalog}' AS {ducklake.ALIAS} (")
    assert "DATA_PATH '/shared/lake/'" in sql and "DATA_INLINING_ROW_LIMIT 0" in sql
    assert "READ_ONLY" not in sql and "READ_ONLY" in ducklake.attach_sql(LAKE, read_only=True)
    assert LAKE.conninfo == "dbname=bsky host=/tmp/pg user=warehouse"


def test_without_the_extension_packages_the_error_says_how_to_get_them():
    if ducklake.available():
        pytest.skip("the DuckLake pass has the packages")
    with pytest.raises(ducklake.DuckLakeUnavailable, match="make ducklake"):
        ducklake.extension_path("ducklake")
