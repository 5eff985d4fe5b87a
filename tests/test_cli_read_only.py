"""Commands that only read never create a warehouse: a wrong path or directory is one clear error (issue #19)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from bsky_warehouse.cli import main

READ_ONLY_COMMANDS = [
    ["eval", "scorers"],
    ["eval", "labels", "--json"],
    ["eval", "compare", "scorer:a", "scorer:b", "--task", "toxicity"],
    ["status"],
]


@pytest.mark.parametrize("argv", READ_ONLY_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_read_only_command_on_a_missing_warehouse_fails_in_one_line_and_creates_nothing(
    argv, tmp_path: Path, monkeypatch, capsys
):
    missing = tmp_path / "elsewhere" / "warehouse.duckdb"
    monkeypatch.setenv("BSKY_WAREHOUSE_DB", str(missing))
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "BSKY_WAREHOUSE_DB" in err
    assert not missing.exists() and not missing.parent.exists()
    assert not (tmp_path / "data").exists()


def test_eval_leaves_an_existing_warehouse_unchanged(tmp_path: Path, monkeypatch, capsys):
    db = tmp_path / "wh.duckdb"
    from bsky_warehouse.resources.warehouse import WarehouseResource

    with WarehouseResource(path=str(db)).connect():
        pass
    before = db.read_bytes()
    monkeypatch.setenv("BSKY_WAREHOUSE_DB", str(db))
    assert main(["eval", "labels", "--json"]) == 0
    assert '"labelers": []' in capsys.readouterr().out
    assert db.read_bytes() == before
    duckdb.connect(str(db), read_only=True).close()
