"""docs/architecture.md stays true: every Python-owned table is described with each of its columns, no section
describes a table that no longer exists, and every dbt model is described (here or in its dbt docs)."""

from __future__ import annotations

import json
import re

import duckdb
import pytest

from bsky_warehouse.project import DBT_MANIFEST, REPO_ROOT
from bsky_warehouse.schema import TABLES

DOC = REPO_ROOT / "docs" / "architecture.md"
TABLES_HEADING = "## Tables owned by the Python assets"


def table_sections(text: str) -> dict[str, str]:
    """`### name` sections under the tables heading, up to the next `## ` heading."""
    body = text.split(TABLES_HEADING, 1)[1]
    body = re.split(r"^## ", body, maxsplit=1, flags=re.MULTILINE)[0]
    parts = re.split(r"^### (\S+)\s*$", body, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def declared_columns() -> dict[str, list[str]]:
    """Each table's columns as DuckDB creates them from the project's DDL (not parsed by hand)."""
    con = duckdb.connect()
    try:
        for ddl in TABLES.values():
            con.execute(ddl)
        rows = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns ORDER BY table_name, ordinal_position"
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def named_in(section: str, column: str) -> bool:
    """A column counts as described when the section names it in backticks, alone or as a `prob_<attribute>`
    family (the twenty Perspective attributes share one description)."""
    if f"`{column}`" in section:
        return True
    return column.startswith("prob_") and "`prob_<attribute>`" in section


def test_every_table_in_schema_has_a_section_and_no_section_is_stale():
    sections = table_sections(DOC.read_text())
    assert set(sections) == set(TABLES), {
        "undocumented": sorted(set(TABLES) - set(sections)),
        "stale": sorted(set(sections) - set(TABLES)),
    }


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_column_of_every_table_is_described(table: str):
    section = table_sections(DOC.read_text())[table]
    assert "Grain:" in section, f"{table}: say what one row is"
    missing = [c for c in declared_columns()[table] if not named_in(section, c)]
    assert not missing, f"docs/architecture.md does not describe {table}.{missing}"


def test_every_dbt_model_is_described_with_its_columns():
    manifest = json.loads(DBT_MANIFEST.read_text())
    doc = DOC.read_text()
    problems = []
    for node in manifest["nodes"].values():
        if node["resource_type"] not in ("model", "seed", "snapshot"):
            continue
        if not node["description"].strip() and f"`{node['name']}`" not in doc:
            problems.append(f"{node['name']}: no description")
        if not node["columns"]:
            problems.append(f"{node['name']}: no columns documented")
        problems += [f"{node['name']}.{c}: no description" for c, v in node["columns"].items() if not v["description"]]
    assert not problems, problems


def test_named_in_accepts_a_column_or_its_family_only():
    assert named_in("`uri` and `prob_<attribute>`", "prob_threat")
    assert named_in("`uri`", "uri")
    assert not named_in("uri without backticks", "uri")
    assert not named_in("`uri`", "prob_threat")
