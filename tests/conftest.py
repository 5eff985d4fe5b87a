from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

# Tests stop the servers and daemons they start with SIGINT or SIGTERM, and a child inherits an ignored signal. A
# session started as a background job of a non-interactive shell ignores SIGINT, and Dagster's interrupt set-up
# then copies that to SIGTERM: every server would outlive its test. The session takes the defaults back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

os.environ.setdefault("DO_NOT_TRACK", "1")
# Tests use ephemeral or temporary Dagster instances, never the developer's run history (`make` exports one, and
# the CLI's default is the checkout's `.dagster_home`): a command a test runs without a home of its own records
# its runs in this session's folder, removed when the session ends.
os.environ["DAGSTER_HOME"] = tempfile.mkdtemp(prefix="bsky-tests-dagster-home-")
atexit.register(shutil.rmtree, os.environ["DAGSTER_HOME"], ignore_errors=True)


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


@pytest.fixture(scope="session")
def recorded_labels_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample window ingested, then each recorded labeler's labels imported through `llm_labels` with the
    dbt models they feed and the whole-history marts, every check passing. Built once for the modules that
    only read it (label evaluation, the labels asset): the build is a dozen Dagster runs."""
    from dagster import DagsterInstance

    from bsky_warehouse.cli import INGEST_ASSETS, SAMPLE_WINDOW, dbt_fed_by, recorded_labels_config, whole_history_marts
    from bsky_warehouse.pipeline import run_window
    from bsky_warehouse.project import SAMPLE_DIR
    from bsky_warehouse.reference_labels import RECORDED_MODELS

    db = str(tmp_path_factory.mktemp("recorded_labels") / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    assert run_window(SAMPLE_WINDOW, instance, db_path=db, archive_dir=str(SAMPLE_DIR), assets=INGEST_ASSETS)["success"]
    assets = list(dict.fromkeys(["llm_labels", *dbt_fed_by("llm_labels"), *whole_history_marts()]))
    for model in RECORDED_MODELS:
        result = run_window(
            SAMPLE_WINDOW, instance, db_path=db, assets=assets, run_config=recorded_labels_config(model)
        )
        assert result["success"], result
        assert all(c["passed"] for c in result["checks"]), [c for c in result["checks"] if not c["passed"]]
    return db
