"""The warehouse as a DuckLake: the catalog in PostgreSQL, the data as Parquet under a data path.

One DuckDB file admits one writer process and no reader while it writes. A DuckLake keeps its catalog in
PostgreSQL and its rows in Parquet files, so many DuckDB clients, on many machines, read it while others write.
`WarehouseResource` opens either; this module holds what differs: where the extensions come from, the ATTACH,
and the DDL DuckLake does not take.

The extensions come from PyPI packages that ship them (`duckdb-extension-ducklake`,
`duckdb-extension-postgres-scanner`, `duckdb-extension-httpfs`; `make ducklake`), loaded by path with DuckDB's
own download switched off: nothing is fetched at run time. They exist for DuckDB 1.5.x only, while the project's
default DuckDB is newer, so a DuckLake process runs on the DuckDB those packages pin (`.venv/ducklake`, first on
`PYTHONPATH`).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

# The catalog's name inside every connection (and dbt's `database`): what `USE` makes the default.
ALIAS = "lake"
# httpfs serves a data path on object storage (s3://, gs://, r2://, https://); loaded always, so one profile fits.
EXTENSION_PACKAGES = {
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "ducklake": "duckdb_extension_ducklake",
    "httpfs": "duckdb_extension_httpfs",
}
# The writers' advisory lock in the catalog database (resources/warehouse.py: catalog_lock; any fixed 64-bit
# key: one lake per database).
WRITER_LOCK_KEY = 0x6273_6B79_7768
# Inline no rows in the catalog: small writes (a day's few rejects) would otherwise live in PostgreSQL tables, a
# second storage path for the same rows.
INLINING_ROW_LIMIT = 0


class DuckLakeUnavailable(RuntimeError):
    """The running DuckDB has no DuckLake extension package beside it."""


@dataclass(frozen=True)
class LakeSettings:
    """A DuckLake warehouse: `catalog` as DuckLake's ATTACH takes it after `ducklake:` (`postgres:dbname=…
    host=…`), `data_path` the folder or object-storage prefix of its Parquet files."""

    catalog: str
    data_path: str

    def __post_init__(self) -> None:
        if not self.catalog.startswith("postgres:"):
            raise ValueError(f"a DuckLake catalog is `postgres:<libpq connection string>`, not {self.catalog!r}")
        if not self.data_path.strip():
            raise ValueError("a DuckLake catalog needs a data path for its Parquet files")
        if "'" in self.catalog or "'" in self.data_path:
            raise ValueError("a DuckLake catalog or data path cannot contain a single quote")

    @property
    def conninfo(self) -> str:
        """The catalog's libpq connection string, as PostgreSQL clients take it."""
        return self.catalog.removeprefix("postgres:")


def extension_path(name: str) -> Path:
    """The extension file the package for the running DuckDB ships (`<pkg>/extensions/v<version>/<name>...`)."""
    package = EXTENSION_PACKAGES[name]
    spec = importlib.util.find_spec(package)
    hint = (
        f"DuckLake needs the {package.replace('_', '-')} package for DuckDB {duckdb.__version__}: "
        "run `make ducklake` and put .venv/ducklake first on PYTHONPATH (README: When one file is not enough)"
    )
    if spec is None or not spec.submodule_search_locations:
        raise DuckLakeUnavailable(hint)
    path = Path(next(iter(spec.submodule_search_locations))) / "extensions" / f"v{duckdb.__version__}"
    path = path / f"{name}.duckdb_extension"
    if not path.is_file():
        raise DuckLakeUnavailable(hint)
    return path


def available() -> bool:
    try:
        for name in EXTENSION_PACKAGES:
            extension_path(name)
    except DuckLakeUnavailable:
        return False
    return True


def attach_sql(lake: LakeSettings, read_only: bool = False) -> str:
    options = [f"DATA_PATH '{lake.data_path}'", f"DATA_INLINING_ROW_LIMIT {INLINING_ROW_LIMIT}"]
    if read_only:
        options.append("READ_ONLY")
    return f"ATTACH 'ducklake:{lake.catalog}' AS {ALIAS} ({', '.join(options)})"


def connect(lake: LakeSettings, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached and made the default catalog (unqualified names are its)."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        for name in EXTENSION_PACKAGES:
            con.execute(f"LOAD '{extension_path(name)}'")
        con.execute(attach_sql(lake, read_only))
        con.execute(f"USE {ALIAS}")
    except BaseException:
        con.close()
        raise
    return con


_FIXED_ARRAY = re.compile(r"\b(FLOAT|DOUBLE)\[\d+\]")


def lake_ddl(ddl: str) -> str:
    """A table's DDL as DuckLake takes it: fixed-size arrays (`FLOAT[384]`) become lists (`FLOAT[]`)."""
    return _FIXED_ARRAY.sub(r"\1[]", ddl)


DBT_ENV_NAMES = (
    "BSKY_DBT_TARGET", "BSKY_DUCKLAKE_ATTACH", "BSKY_DUCKLAKE_DATA_PATH", "BSKY_DUCKLAKE_EXT", "BSKY_POSTGRES_EXT",
    "BSKY_HTTPFS_EXT",
)  # fmt: skip


def dbt_env(lake: LakeSettings) -> dict[str, str]:
    """What dbt's `ducklake` target reads (profiles.yml): the attach and the extension files."""
    return {
        "BSKY_DBT_TARGET": "ducklake",
        "BSKY_DUCKLAKE_ATTACH": f"ducklake:{lake.catalog}",
        "BSKY_DUCKLAKE_DATA_PATH": lake.data_path,
        "BSKY_DUCKLAKE_EXT": str(extension_path("ducklake")),
        "BSKY_POSTGRES_EXT": str(extension_path("postgres_scanner")),
        "BSKY_HTTPFS_EXT": str(extension_path("httpfs")),
    }
