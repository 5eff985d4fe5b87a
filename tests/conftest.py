from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

# Tests stop the servers and daemons they start with SIGINT or SIGTERM, and a child inherits an ignored signal. A
# session started as a background job of a non-interactive shell ignores SIGINT, and Dagster's interrupt set-up
# then copies that to SIGTERM: every server would outlive its test. The session takes the defaults back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _import_anyio_eagerly() -> None:
    """anyio imports its modules lazily, and pytest rewrites the asserts of every module of a package with a
    pytest plugin (anyio has one): a lazy import made in a server's worker thread (starlette serving a file in the
    rater page's test) parsed source while another thread parsed too, which CPython 3.11.7 can fail with
    `SystemError: AST constructor recursion depth mismatch`. Imported here, once, in one thread, nothing is left
    to parse later."""
    import importlib
    import pkgutil

    import anyio

    for module in pkgutil.walk_packages(anyio.__path__, "anyio."):
        with suppress(ImportError):  # a backend whose library is not installed (trio)
            importlib.import_module(module.name)


_import_anyio_eagerly()
os.environ.setdefault("DO_NOT_TRACK", "1")
# Tests use ephemeral or temporary Dagster instances, never the developer's run history (`make` exports one, and
# the CLI's default is the checkout's `.dagster_home`): a command a test runs without a home of its own records
# its runs in this session's folder, removed when the session ends.
os.environ["DAGSTER_HOME"] = tempfile.mkdtemp(prefix="bsky-tests-dagster-home-")
atexit.register(shutil.rmtree, os.environ["DAGSTER_HOME"], ignore_errors=True)


# About how many seconds each heavy file takes in a two-worker run (setup, calls and teardown, from `--durations=0`
# on a 2-core machine). Only the order they give matters: files run most expensive first, so the long
# single-test integration files no longer start last and run alone at the end of the session. A file not listed
# costs 0 and keeps its place after them. test_labels_asset copies the warehouse test_label_evaluation builds
# (`recorded_labels_db`), so it comes well after it and finds it built.
FILE_COST_S = {
    "test_daemon.py": 190,
    "test_ui_backfill.py": 170,
    "test_toxicity_asset.py": 155,
    "test_parallel_backfill.py": 120,
    "test_pipeline.py": 75,
    "test_rater_page.py": 75,
    "test_marts.py": 70,
    "test_distill.py": 65,
    "test_concurrency.py": 60,
    "test_audit.py": 60,
    "test_label_evaluation.py": 50,
    "test_backfill_equals_days.py": 45,
    "test_status.py": 45,
    "test_marts_property.py": 35,
    "test_cross_day.py": 35,
    "test_perspective_plan.py": 35,
    "test_authors.py": 30,
    "test_hostile_archive.py": 30,
    "test_cli_output.py": 25,
    "test_feeds.py": 25,
    "test_checks.py": 20,
    "test_labels_asset.py": 20,
    "test_topics.py": 20,
    "test_overlap.py": 15,
    "test_scorer_bridge.py": 15,
    "test_perspective.py": 15,
}


def pytest_configure(config: pytest.Config) -> None:
    """pytest-xdist hands `--dist loadfile` files out by how many tests they hold, most first, unless told to
    keep the collection's order: that put the one-test integration files, the slowest, at the very end."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heaviest files first (FILE_COST_S); the sort is stable, so each file's tests keep their order."""
    items.sort(key=lambda item: -FILE_COST_S.get(item.path.name, 0))


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


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Held by one pytest process at a time (xdist workers included); released when the holder dies."""
    with lock_path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base temporary folder every xdist worker of this session shares (each worker's own is a folder in
    it); without xdist, the session's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def recorded_labels_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample window ingested, then each recorded labeler's labels imported through `llm_labels` with the
    dbt models they feed and the whole-history marts, every check passing. Built once for the modules that
    only read it (label evaluation, the labels asset): the build is a dozen Dagster runs. Under xdist those
    modules can land on different workers; the first to ask builds it in the folder the workers share and each
    worker gets its own copy, so no test ever opens another process's file."""
    built = _shared_root(tmp_path_factory) / "recorded_labels_shared"
    with _exclusive(built.with_suffix(".lock")):
        if not (built / "complete").exists():
            shutil.rmtree(built, ignore_errors=True)
            built.mkdir()
            _build_recorded_labels(str(built / "wh.duckdb"))
            (built / "complete").touch()
        own = tmp_path_factory.mktemp("recorded_labels")
        shutil.copytree(built, own, dirs_exist_ok=True)  # the file and whatever the warehouse keeps beside it
    return str(own / "wh.duckdb")


def _build_recorded_labels(db: str) -> None:
    from dagster import DagsterInstance

    from bsky_warehouse.cli import INGEST_ASSETS, SAMPLE_WINDOW, dbt_fed_by, recorded_labels_config, whole_history_marts
    from bsky_warehouse.pipeline import run_window
    from bsky_warehouse.project import SAMPLE_DIR
    from bsky_warehouse.reference_labels import RECORDED_MODELS

    instance = DagsterInstance.ephemeral()
    assert run_window(SAMPLE_WINDOW, instance, db_path=db, archive_dir=str(SAMPLE_DIR), assets=INGEST_ASSETS)["success"]
    assets = list(dict.fromkeys(["llm_labels", *dbt_fed_by("llm_labels"), *whole_history_marts()]))
    for model in RECORDED_MODELS:
        result = run_window(
            SAMPLE_WINDOW, instance, db_path=db, assets=assets, run_config=recorded_labels_config(model)
        )
        assert result["success"], result
        assert all(c["passed"] for c in result["checks"]), [c for c in result["checks"] if not c["passed"]]


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """One PostgreSQL server for the session's DuckLake tests; each test gets its own database (`lake`)."""
    from tests.postgres import running_postgres

    with running_postgres() as server:
        yield server


@pytest.fixture
def lake(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh DuckLake, set in the environment as a user sets it (catalog in its own PostgreSQL database, data
    under tmp_path): every WarehouseResource, Dagster run and dbt process of the test then uses it."""
    from bsky_warehouse import ducklake

    if not ducklake.available():
        pytest.skip("runs in make test's DuckLake pass (DuckDB 1.5.5 and the extension packages, .venv/ducklake)")
    server = request.getfixturevalue("postgres")
    settings = ducklake.LakeSettings("postgres:" + server.dsn(server.create_database()), str(tmp_path / "lake"))
    monkeypatch.setenv("BSKY_WAREHOUSE_CATALOG", settings.catalog)
    monkeypatch.setenv("BSKY_WAREHOUSE_DATA_PATH", settings.data_path)
    return settings
