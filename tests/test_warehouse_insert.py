"""`insert_rows` and `registered`, the one way Python rows reach DuckDB, against a real warehouse file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import duckdb
import pandas as pd
import pytest

from bsky_warehouse.resources.warehouse import WarehouseResource, insert_rows, registered, transaction

TABLE = """CREATE TABLE t (
    id BIGINT NOT NULL,
    label VARCHAR DEFAULT 'none',
    day DATE,
    seen_at TIMESTAMPTZ,
    vector FLOAT[],
    flagged BOOLEAN
)"""


@pytest.fixture
def con(warehouse: WarehouseResource) -> Iterator[duckdb.DuckDBPyConnection]:
    with warehouse.connect() as con:
        con.execute(TABLE)
        yield con


def rows_of(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("SELECT id, label, day, seen_at, vector, flagged FROM t ORDER BY id").fetchall()


def is_registered(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    try:
        con.execute(f"SELECT * FROM {name} LIMIT 0")
    except duckdb.CatalogException:
        return False
    return True


def test_no_rows_insert_nothing(con: duckdb.DuckDBPyConnection) -> None:
    # A list of no dicts has no columns at all; a frame of no rows has them: neither is an error.
    assert insert_rows(con, "t", []) == 0
    assert insert_rows(con, "t", pd.DataFrame({"id": pd.Series([], dtype="int64")})) == 0
    assert rows_of(con) == []
    assert not is_registered(con, "insert_rows_frame")


def test_columns_match_by_name_not_position(con: duckdb.DuckDBPyConnection) -> None:
    # The frame's columns are the table's reversed, and the dicts list their keys in different orders.
    assert insert_rows(con, "t", pd.DataFrame({"flagged": [True], "label": ["a"], "id": [1]})) == 1
    assert insert_rows(con, "t", [{"label": "b", "id": 2}, {"id": 3, "label": "c"}]) == 2
    assert [(r[0], r[1], r[5]) for r in rows_of(con)] == [(1, "a", True), (2, "b", None), (3, "c", None)]


def test_missing_column_takes_its_default_and_unknown_column_is_an_error(con: duckdb.DuckDBPyConnection) -> None:
    insert_rows(con, "t", [{"id": 1}])
    assert rows_of(con)[0][1] == "none"
    with pytest.raises(duckdb.BinderException, match="labl"):
        insert_rows(con, "t", [{"id": 2, "labl": "typo"}])
    assert [r[0] for r in rows_of(con)] == [1]
    assert not is_registered(con, "insert_rows_frame")


def test_types_survive(con: duckdb.DuckDBPyConnection) -> None:
    at = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    rows = [
        {"id": 1, "label": "x", "day": date(2024, 5, 6), "seen_at": at, "vector": [0.5, 1.5], "flagged": False},
        {"id": 2, "label": None, "day": None, "seen_at": None, "vector": None, "flagged": None},
    ]
    insert_rows(con, "t", rows)
    first, second = rows_of(con)
    assert first == (1, "x", date(2024, 5, 6), at, [0.5, 1.5], False)
    assert second == (2, None, None, None, None, None)


def test_registered_frame_can_be_joined_and_is_gone_after(con: duckdb.DuckDBPyConnection) -> None:
    insert_rows(con, "t", [{"id": 1}, {"id": 2}, {"id": 3}])
    with registered(con, "wanted", pd.DataFrame({"id": [3, 1]})) as name:
        found = con.execute(f"SELECT t.id FROM t JOIN {name} USING (id) ORDER BY 1").fetchall()
    assert found == [(1,), (3,)]
    assert not is_registered(con, "wanted")


def test_registered_unregisters_when_the_block_raises(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="boom"), registered(con, "wanted", pd.DataFrame({"id": [1]})):
        raise ValueError("boom")
    assert not is_registered(con, "wanted")


def test_failed_insert_in_a_transaction_raises_its_own_error_and_leaves_nothing(
    con: duckdb.DuckDBPyConnection,
) -> None:
    insert_rows(con, "t", [{"id": 1}])
    # The bad value aborts the transaction, so DuckDB refuses the unregister too; the conversion error is raised,
    # not that refusal, and the rollback takes the frame with it.
    with pytest.raises(duckdb.ConversionException), transaction(con):
        con.execute("DELETE FROM t")
        insert_rows(con, "t", [{"id": "not a number"}])
    assert [r[0] for r in rows_of(con)] == [1]
    assert not is_registered(con, "insert_rows_frame")
    assert insert_rows(con, "t", [{"id": 2}]) == 1


def test_null_in_a_not_null_column_is_an_error(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.ConstraintException):
        insert_rows(con, "t", [{"label": "no id"}])
    assert rows_of(con) == []


def test_an_older_file_gains_the_columns_added_since_and_its_rows_get_their_defaults(tmp_path):
    """A warehouse written before `inclusion_probability` and `source_digest` existed opens with both."""
    from bsky_warehouse.schema import PROB_COLUMNS

    db = tmp_path / "old.duckdb"
    old = duckdb.connect(str(db))
    probs = ", ".join(f"{c} DOUBLE" for c in PROB_COLUMNS)
    old.execute(f"""CREATE TABLE toxicity_scores (uri VARCHAR NOT NULL, scorer VARCHAR NOT NULL,
                    scorer_version VARCHAR NOT NULL, status VARCHAR NOT NULL, reason VARCHAR,
                    scored_at TIMESTAMPTZ NOT NULL, partition_date DATE NOT NULL, {probs})""")
    old.execute("INSERT INTO toxicity_scores (uri, scorer, scorer_version, status, scored_at, partition_date) "
                "VALUES ('at://a', 'perspective', 'v1', 'ok', now(), DATE '2024-03-10')")  # fmt: skip
    old.execute("""CREATE TABLE llm_labels (uri VARCHAR NOT NULL, labeler VARCHAR NOT NULL, model VARCHAR NOT NULL,
                   prompt_version VARCHAR NOT NULL, status VARCHAR NOT NULL, reason VARCHAR, is_sociopolitical BOOLEAN,
                   political_ideology VARCHAR, rationale VARCHAR, labeled_at TIMESTAMPTZ NOT NULL,
                   partition_date DATE NOT NULL)""")  # fmt: skip
    old.close()
    with WarehouseResource(path=str(db)).connect() as con:
        assert con.execute("SELECT inclusion_probability FROM toxicity_scores").fetchall() == [(1.0,)]
        assert con.execute("SELECT count(source_digest) FROM llm_labels").fetchall() == [(0,)]
        columns = [c for c, *_ in con.execute("DESCRIBE toxicity_scores").fetchall()]
    assert columns[-1] == "inclusion_probability"  # where CREATE puts it on a new file too
    with WarehouseResource(path=str(tmp_path / "new.duckdb")).connect() as con:
        assert [c for c, *_ in con.execute("DESCRIBE toxicity_scores").fetchall()] == columns
