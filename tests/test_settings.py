"""Configuration has one home: every variable is declared in settings.py, read nowhere else, and documented from it."""

from __future__ import annotations

import ast
import re
from datetime import date
from pathlib import Path

import pytest

from bsky_warehouse import ducklake, settings
from bsky_warehouse.project import DBT_PROJECT_DIR, REPO_ROOT
from bsky_warehouse.settings import SETTINGS, Secret, Setting, SettingError

PACKAGE = REPO_ROOT / "bsky_warehouse"
# Modules that write variables for the tools they run (dbt, the Hugging Face libraries). Such a module may read
# back, in the function that writes them, the values it is about to overwrite, to restore them after: that is
# bookkeeping, not configuration. Every other read belongs in settings.py.
WRITERS = {"bsky_warehouse/assets/dbt.py", "bsky_warehouse/embeddings.py"}
WRITE_METHODS = {"update", "pop", "setdefault", "clear", "__setitem__", "__delitem__"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting set, whatever the developer's shell (or `make`) exported."""
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    return monkeypatch


def test_every_setting_has_a_unique_name_a_meaning_and_a_row():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    for setting in SETTINGS:
        assert setting.meaning.strip() and "|" not in setting.meaning, setting.name
        assert setting.table_row().startswith(f"| `{setting.name}` |")


def test_defaults_when_nothing_is_set(clean_env: pytest.MonkeyPatch):
    for setting in SETTINGS:
        if isinstance(setting, Setting):
            assert setting.get() == setting.default, setting.name
            assert setting.get({}) == setting.default, setting.name
        assert not setting.is_set()
    assert settings.WAREHOUSE_DB.get() == settings.PROJECT_ROOT / "data" / "warehouse.duckdb"
    assert settings.DAGSTER_HOME.get() == settings.PROJECT_ROOT / ".dagster_home"
    assert settings.REPORTS_DIR.get() == settings.PROJECT_ROOT / "reports"
    assert settings.START_DATE.get() == date(2024, 3, 8)
    assert settings.PERSPECTIVE_QPS.get() == 1.0
    assert settings.LLM_MAX_CONCURRENCY.get() == 64
    assert settings.DAILY_SOURCE.get() == "archive"
    assert settings.SCHEDULE_CRON.get() == "0 2 * * *"
    assert settings.FRESHNESS_HOUR.get() == 6
    assert settings.DETOXIFY_CHECKPOINT.get() is None


def test_the_warehouse_file_has_one_default(clean_env: pytest.MonkeyPatch):
    from bsky_warehouse.resources.warehouse import WarehouseResource, default_db_path

    assert default_db_path() == str(settings.DEFAULT_DB)
    assert WarehouseResource().db_path == settings.DEFAULT_DB.resolve()
    profile = (DBT_PROJECT_DIR / "profiles.yml").read_text()
    calls = re.findall(r"env_var\(([^)]*)\)", profile)
    assert "'BSKY_WAREHOUSE_DB'" in calls, "dbt's profile must take the file from the environment, no default"
    # Every other variable it reads is one the warehouse exports for its DuckLake target (ducklake.dbt_env).
    names = {call.split(",")[0].strip("' ") for call in calls}
    assert names == {"BSKY_WAREHOUSE_DB", *ducklake.DBT_ENV_NAMES}


def test_values_from_the_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    clean_env.setenv("BSKY_WAREHOUSE_DB", str(tmp_path / "wh.duckdb"))
    clean_env.setenv("BSKY_WAREHOUSE_START_DATE", "2025-01-02")
    clean_env.setenv("PERSPECTIVE_QPS", "2.5")
    clean_env.setenv("LLM_MAX_CONCURRENCY", "8")
    clean_env.setenv("BSKY_WAREHOUSE_FRESHNESS_HOUR", "0")
    clean_env.setenv("BSKY_WAREHOUSE_DAILY_SOURCE", " Jetstream ")
    clean_env.setenv("BSKY_WAREHOUSE_SCHEDULE_CRON", "30 4 * * 1-5")
    clean_env.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    clean_env.setenv("LLM_MODEL", "qwen")
    assert settings.WAREHOUSE_DB.get() == tmp_path / "wh.duckdb"
    assert settings.START_DATE.get() == date(2025, 1, 2)
    assert settings.PERSPECTIVE_QPS.get() == 2.5
    assert settings.LLM_MAX_CONCURRENCY.get() == 8
    assert settings.FRESHNESS_HOUR.get() == 0
    assert settings.DAILY_SOURCE.get() == "jetstream"
    assert settings.SCHEDULE_CRON.get() == "30 4 * * 1-5"
    assert settings.DAGSTER_HOME.get() == tmp_path / "home"
    assert settings.LLM_MODEL.get() == "qwen" and settings.LLM_MODEL.is_set()
    assert settings.PERSPECTIVE_QPS.get({"PERSPECTIVE_QPS": "4"}) == 4.0, "an explicit mapping wins"


def test_an_empty_variable_counts_as_unset(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("PERSPECTIVE_QPS", "")
    clean_env.setenv("DAGSTER_HOME", "  ")
    clean_env.setenv("PERSPECTIVE_API_KEY", "")
    assert settings.PERSPECTIVE_QPS.get() == 1.0
    assert settings.DAGSTER_HOME.get() == settings.PROJECT_ROOT / ".dagster_home" and not settings.DAGSTER_HOME.is_set()
    assert not settings.PERSPECTIVE_API_KEY.is_set()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PERSPECTIVE_QPS", "abc"),
        ("PERSPECTIVE_QPS", "0"),
        ("PERSPECTIVE_QPS", "nan"),
        ("LLM_MAX_CONCURRENCY", "many"),
        ("LLM_MAX_CONCURRENCY", "0"),
        ("BSKY_JETSTREAM_RETENTION_HOURS", "-1"),
        ("BSKY_WAREHOUSE_FRESHNESS_HOUR", "24"),
        ("BSKY_WAREHOUSE_FRESHNESS_HOUR", "six"),
        ("BSKY_WAREHOUSE_START_DATE", "March 8"),
        ("BSKY_WAREHOUSE_DAILY_SOURCE", "ftp"),
        ("BSKY_WAREHOUSE_SCHEDULE_CRON", "daily"),
        ("PERSPECTIVE_BASE_URL", "localhost:8080"),
        ("LLM_BASE_URL", "ftp://host"),
        ("BSKY_APPVIEW_URL", "public.api.bsky.app"),
        ("DAGSTER_HOME", "relative/home"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(clean_env: pytest.MonkeyPatch, name: str, value: str):
    (setting,) = [s for s in SETTINGS if s.name == name]
    assert isinstance(setting, Setting)
    clean_env.setenv(name, value)
    with pytest.raises(SettingError) as err:
        setting.get()
    message = str(err.value)
    assert message.startswith(f"{name} must be ") and repr(value) in message and "\n" not in message
    assert isinstance(err.value, ValueError), "callers that refuse bad input catch ValueError"


def test_a_bad_value_stops_the_definitions_with_that_line(clean_env: pytest.MonkeyPatch):
    from bsky_warehouse.definitions import default_resources

    clean_env.setenv("PERSPECTIVE_QPS", "abc")
    with pytest.raises(SettingError, match=r"^PERSPECTIVE_QPS must be a positive number, not 'abc'$"):
        default_resources()


@pytest.mark.parametrize(
    ("name", "value"), [("BSKY_JETSTREAM_HOST", "https://jetstream.example"), ("BSKY_APPVIEW_URL", "https://h/x")]
)
def test_a_value_the_resource_refuses_names_the_variable(clean_env: pytest.MonkeyPatch, name: str, value: str):
    from bsky_warehouse.definitions import default_resources

    clean_env.setenv(name, value)
    with pytest.raises(SettingError, match=rf"^{name}='{re.escape(value)}': "):
        default_resources()


def test_the_resources_take_their_configuration_from_the_settings(clean_env: pytest.MonkeyPatch):
    from bsky_warehouse.definitions import default_resources

    clean_env.setenv("PERSPECTIVE_QPS", "3")
    clean_env.setenv("PERSPECTIVE_BASE_URL", "http://127.0.0.1:9")
    clean_env.setenv("LLM_BASE_URL", "http://127.0.0.1:10/v1")
    clean_env.setenv("LLM_MODEL", "m")
    clean_env.setenv("LLM_MAX_CONCURRENCY", "5")
    clean_env.setenv("VLLM_MODEL", "/models/x")
    clean_env.setenv("BSKY_JETSTREAM_HOST", "ws://127.0.0.1:6008")
    clean_env.setenv("BSKY_JETSTREAM_RETENTION_HOURS", "12")
    clean_env.setenv("BSKY_APPVIEW_URL", "http://127.0.0.1:8080")
    resources = default_resources()
    assert (resources["perspective"].qps, resources["perspective"].base_url) == (3.0, "http://127.0.0.1:9")
    llm = resources["llm_openai"]
    assert (llm.base_url, llm.model, llm.max_concurrency) == ("http://127.0.0.1:10/v1", "m", 5)
    assert resources["llm_vllm"].model == "/models/x"
    jetstream = resources["jetstream"]
    assert (jetstream.host, jetstream.secure, jetstream.retention_hours) == ("127.0.0.1:6008", False, 12.0)
    assert (resources["appview"].host, resources["appview"].secure) == ("127.0.0.1:8080", False)


def test_secrets_reach_resources_only_as_env_vars(clean_env: pytest.MonkeyPatch):
    from dagster import EnvVar

    from bsky_warehouse.definitions import default_resources

    assert not any(hasattr(s, attr) for s in SETTINGS if isinstance(s, Secret) for attr in ("get", "raw", "value"))
    unset = default_resources()
    assert unset["perspective"].api_key == "" and unset["llm_openai"].api_key is None
    clean_env.setenv("PERSPECTIVE_API_KEY", "sekrit-perspective")
    clean_env.setenv("LLM_API_KEY", "sekrit-llm")
    resources = default_resources()
    for resource, name in ((resources["perspective"], "PERSPECTIVE_API_KEY"), (resources["llm_openai"], "LLM_API_KEY")):
        assert isinstance(resource.api_key, EnvVar) and resource.api_key.env_var_name == name
        assert "sekrit" not in repr(resource)


def test_dbt_gets_the_warehouse_file_as_an_absolute_path(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    clean_env.chdir(tmp_path)
    env = settings.dbt_env()
    assert env["BSKY_WAREHOUSE_DB"] == str(settings.PROJECT_ROOT / "data" / "warehouse.duckdb"), "not from the cwd"
    assert settings.DBT_ENV.items() <= env.items()
    clean_env.setenv("BSKY_WAREHOUSE_DB", "elsewhere/wh.duckdb")
    assert settings.dbt_env()["BSKY_WAREHOUSE_DB"] == str(tmp_path / "elsewhere" / "wh.duckdb")
    assert settings.dbt_env(tmp_path / "given.duckdb")["BSKY_WAREHOUSE_DB"] == str(tmp_path / "given.duckdb")


def test_the_reports_folder_is_the_configured_one_else_the_setting(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    from bsky_warehouse.report import reports_root

    clean_env.chdir(tmp_path)
    assert reports_root() == settings.PROJECT_ROOT / "reports", "the checkout's, wherever the command runs"
    clean_env.setenv("BSKY_WAREHOUSE_REPORTS", str(tmp_path / "env"))
    assert reports_root() == tmp_path / "env"
    assert reports_root(str(tmp_path / "given")) == tmp_path / "given"


def test_the_names_other_modules_export_are_the_settings_names():
    from bsky_warehouse import partitions, report
    from bsky_warehouse.resources import appview, jetstream, warehouse

    assert settings.WAREHOUSE_DB.name == warehouse.DB_ENV
    assert settings.START_DATE.name == partitions.START_ENV
    assert settings.REPORTS_DIR.name == report.REPORTS_ENV
    assert settings.APPVIEW_URL.name == appview.APPVIEW_URL_ENV
    assert appview.AppViewResource().host == "public.api.bsky.app"
    assert jetstream.JetstreamSource().host == "jetstream2.us-east.bsky.network"


def readme_table() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def test_the_readme_table_is_the_one_generated_from_the_settings():
    assert readme_table() == settings.markdown_table(), "regenerate it: .venv/bin/python -m bsky_warehouse.settings"
    for setting in SETTINGS:
        assert readme_table().count(f"| `{setting.name}` |") == 1, setting.name


def environment_uses(source: str) -> list[tuple[int, str, str]]:
    """Each use of the process environment in `source` as (line, "read" or "write", outermost function or
    "<module>"): `os.environ[...] = ...`, `del os.environ[...]` and `os.environ.update/pop/...` write;
    everything else (`.get`, `[...]`, `**`, passing it on, `os.getenv`, `from os import environ`) reads."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def scope(node: ast.AST) -> str:
        outermost = "<module>"
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                outermost = node.name
        return outermost

    uses: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            names = [alias.name for alias in node.names if alias.name in ("environ", "environb", "getenv")]
            uses += [(node.lineno, "read", scope(node)) for _ in names]
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"):
            continue
        if node.attr in ("getenv", "getenvb", "environb"):
            uses.append((node.lineno, "read", scope(node)))
        elif node.attr == "environ":
            parent = parents.get(node)
            written = (isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store | ast.Del)) or (
                isinstance(parent, ast.Attribute)
                and parent.attr in WRITE_METHODS
                and isinstance(parents.get(parent), ast.Call)
            )
            uses.append((node.lineno, "write" if written else "read", scope(node)))
    return sorted(uses)


def test_the_scan_tells_reads_from_writes():
    source = (
        "import os\nfrom os import getenv\n"
        "a = os.environ.get('X')\nb = os.environ['X']\nc = {**os.environ}\nd = os.getenv('X')\n"
        "os.environ['X'] = '1'\nos.environ.update({'X': '1'})\nos.environ.pop('X', None)\ndel os.environ['X']\n"
        "def f():\n    def g():\n        return os.environ.get('X')\n    return g\n"
    )
    assert [(line, kind) for line, kind, _ in environment_uses(source)] == [
        (2, "read"), (3, "read"), (4, "read"), (5, "read"), (6, "read"),
        (7, "write"), (8, "write"), (9, "write"), (10, "write"), (13, "read"),
    ]  # fmt: skip
    assert {scope for *_, scope in environment_uses(source)} == {"<module>", "f"}


def test_no_module_but_settings_reads_the_environment():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(REPO_ROOT).as_posix()
        if module == "bsky_warehouse/settings.py":
            continue
        uses = environment_uses(path.read_text())
        restoring = {scope for _, kind, scope in uses if kind == "write" and scope != "<module>"}
        for line, kind, scope in uses:
            if module in WRITERS and (kind == "write" or scope in restoring):
                continue
            offenders.append(f"{module}:{line} {kind}s os.environ")
    assert not offenders, "declare the variable in bsky_warehouse/settings.py and read it there:\n" + "\n".join(
        offenders
    )


def test_env_vars_are_made_only_for_secrets_in_the_definitions():
    """`dagster.EnvVar` is how a key reaches a resource unread; any other use would be configuration outside
    settings.py."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "EnvVar":
                found.append((path.relative_to(REPO_ROOT).as_posix(), ast.unparse(node)))
    assert found == [("bsky_warehouse/definitions.py", "EnvVar(setting.name)")]
