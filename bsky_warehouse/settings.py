"""Every environment variable the warehouse reads, declared once: its name, default, meaning and parser.

Configuration used to be read wherever it was needed, and the warehouse file had three defaults that could
disagree (the resource's, the one `dbt parse` got, dbt's profile). Here each setting is one declaration; the rest
of the package asks a setting for its value, so a default changes in one line, a bad value fails with one line
naming the variable (`PERSPECTIVE_QPS must be a positive number, not 'abc'`), and the README's table is generated
from these declarations (`python -m bsky_warehouse.settings`; tests/test_settings.py holds the two together and
keeps every other module off `os.environ`).

Values are read at each call, never cached at import: a test, or a sensor in a long-lived daemon, sees the
environment as it is now. An empty variable counts as unset, as `VAR= command` means in a shell.

Secrets (`Secret`) have no accessor for their value: they reach resources only as Dagster `EnvVar(name)`, which
Dagster resolves inside the resource and never writes to run config, the UI or logs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
U = TypeVar("U")


class SettingError(ValueError):
    """A variable holds a value its parser refuses; the message is one line that names the variable."""


class Invalid(ValueError):
    """Raised by a parser with what it expected (`a positive number`); `Setting.get` adds the name and value."""


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: `get()` is its parsed value now, or the default when it is unset or empty."""

    name: str
    default: T
    meaning: str
    parse: Callable[[str], T]
    # The README's default column, where the value alone would not say it (`reports` *under the cwd*).
    shown_default: str | None = None

    def raw(self, env: Mapping[str, str] | None = None) -> str | None:
        value = (os.environ if env is None else env).get(self.name, "")
        return value if value.strip() else None

    def is_set(self, env: Mapping[str, str] | None = None) -> bool:
        return self.raw(env) is not None

    def get(self, env: Mapping[str, str] | None = None) -> T:
        raw = self.raw(env)
        if raw is None:
            return self.default
        try:
            return self.parse(raw)
        except Invalid as err:
            raise SettingError(f"{self.name} must be {err}, not {raw!r}") from None

    def get_as(self, build: Callable[[T], U], env: Mapping[str, str] | None = None) -> U:
        """`build(value)`, with a ValueError it raises reported against this variable: a resource's own parsing
        (a Jetstream host, an AppView URL) then fails naming the variable that was set wrong."""
        value = self.get(env)
        try:
            return build(value)
        except ValueError as err:
            raise SettingError(f"{self.name}={value!r}: {first_line(err)}") from None

    def table_row(self) -> str:
        return f"| `{self.name}` | {self.shown_default or show(self.default)} | {self.meaning} |"


@dataclass(frozen=True)
class Secret:
    """A credential: whether it is set, and its name for `dagster.EnvVar`; deliberately no way to read it."""

    name: str
    meaning: str

    def is_set(self, env: Mapping[str, str] | None = None) -> bool:
        return bool((os.environ if env is None else env).get(self.name, "").strip())

    def table_row(self) -> str:
        return f"| `{self.name}` | unset | {self.meaning}; a secret, handed to its resource only as `EnvVar` |"


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def show(value: object) -> str:
    """A default as the README shows it: `unset` for none, whole floats without `.0`."""
    if value is None or value == "":
        return "unset"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, date):
        value = value.isoformat()
    return f"`{value}`"


# Parsers: each takes the raw text and returns the value, or raises Invalid with what it expected.


def text(value: str) -> str:
    return value


def path(value: str) -> Path:
    return Path(value).expanduser()


def absolute_path(value: str) -> Path:
    """Dagster's own rule for DAGSTER_HOME (`~` expanded, then absolute), checked before Dagster is asked."""
    expanded = Path(value).expanduser()
    if not expanded.is_absolute():
        raise Invalid("an absolute path")
    return expanded


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise Invalid("a positive number") from None
    if not number > 0 or number == float("inf"):
        raise Invalid("a positive number")
    return number


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise Invalid("a positive whole number") from None
    if number < 1:
        raise Invalid("a positive whole number")
    return number


def hour_of_day(value: str) -> int:
    try:
        hour = int(value)
    except ValueError:
        raise Invalid("an hour of the day, 0-23 (UTC)") from None
    if not 0 <= hour <= 23:
        raise Invalid("an hour of the day, 0-23 (UTC)")
    return hour


def iso_date(value: str) -> date:
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise Invalid("a date, YYYY-MM-DD") from None


def http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Invalid("an http(s) URL such as https://host[:port]")
    return value.strip()


def cron(value: str) -> str:
    """Five fields, as Dagster's schedules take them; Dagster checks each field when the schedule is built."""
    if len(value.split()) != 5:
        raise Invalid("a cron expression of five fields (minute hour day month weekday)")
    return value.strip()


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        choice = value.strip().lower()
        if choice not in choices:
            raise Invalid(f"one of {', '.join(choices)}")
        return choice

    return parse


# The checkout the package runs from (`make` installs it editable). Defaults resolve from it, not from the working
# directory: a command run from any folder finds the same warehouse, reports and run history.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The warehouse file: the only default for it. dbt gets it as an absolute path (`dbt_env`), so its profile has none.
DEFAULT_DB = PROJECT_ROOT / "data" / "warehouse.duckdb"

WAREHOUSE_DB = Setting(
    "BSKY_WAREHOUSE_DB", DEFAULT_DB, "the DuckDB file, for Dagster and dbt alike (a relative path: from the cwd)",
    path, shown_default="`data/warehouse.duckdb` in the checkout",
)  # fmt: skip
WAREHOUSE_CATALOG = Setting(
    "BSKY_WAREHOUSE_CATALOG", "",
    "set: the warehouse is a DuckLake with this catalog (`postgres:dbname=… host=… user=…`), not the DuckDB file; "
    "`BSKY_WAREHOUSE_DB` then only places the local staging (checkpoints, archive spool) and logs", text,
)  # fmt: skip
WAREHOUSE_DATA_PATH = Setting(
    "BSKY_WAREHOUSE_DATA_PATH", "", "the DuckLake's Parquet files: a folder, or an object-storage prefix (`s3://…`)",
    text,
)  # fmt: skip
START_DATE = Setting("BSKY_WAREHOUSE_START_DATE", date(2024, 3, 8), "first daily partition", iso_date)
REPORTS_DIR = Setting(
    "BSKY_WAREHOUSE_REPORTS", PROJECT_ROOT / "reports", "where `daily_report` writes `<day>/index.html` and its PNGs",
    path, shown_default="`reports` in the checkout",
)  # fmt: skip
DAGSTER_HOME = Setting(
    "DAGSTER_HOME", PROJECT_ROOT / ".dagster_home",
    "run history of every run: the CLI's, `make demo`'s and the UI's (`make ui` exports the same folder)",
    absolute_path, shown_default="`.dagster_home` in the checkout",
)  # fmt: skip
PERSPECTIVE_API_KEY = Secret("PERSPECTIVE_API_KEY", "Perspective key, only needed for `--scorer perspective`")
PERSPECTIVE_QPS = Setting("PERSPECTIVE_QPS", 1.0, "Perspective quota in queries per second", positive_float)
PERSPECTIVE_BASE_URL = Setting(
    "PERSPECTIVE_BASE_URL", "https://commentanalyzer.googleapis.com", "Perspective endpoint (tests use a local server)",
    http_url,
)  # fmt: skip
LLM_BASE_URL = Setting(
    "LLM_BASE_URL", "http://127.0.0.1:8000/v1", "OpenAI-compatible labeler endpoint (`vllm serve`, Groq, OpenAI)",
    http_url,
)  # fmt: skip
LLM_MODEL = Setting("LLM_MODEL", "", "model name for that labeler (set: the demo labels with it)", text)
LLM_API_KEY = Secret("LLM_API_KEY", "key for that labeler, if its server wants one")
LLM_MAX_CONCURRENCY = Setting("LLM_MAX_CONCURRENCY", 64, "requests in flight to the LLM server", positive_int)
VLLM_MODEL = Setting("VLLM_MODEL", "", "local model path for the offline vLLM labeler", text)
DETOXIFY_CHECKPOINT: Setting[Path | None] = Setting(
    "DETOXIFY_CHECKPOINT", None, "local Detoxify checkpoint (extra `[detoxify]`)", path
)
DETOXIFY_TOKENIZER: Setting[Path | None] = Setting(
    "DETOXIFY_TOKENIZER", None, "its base model's config and tokenizer dir", path,
    shown_default="the checkpoint's folder",
)  # fmt: skip
JETSTREAM_HOST = Setting(
    "BSKY_JETSTREAM_HOST", "jetstream2.us-east.bsky.network",
    "Jetstream instance for `source: jetstream` ingest (`host[:port]` or `wss://host`; `ws://host:port` for a local "
    "replay server)", text,
)  # fmt: skip
JETSTREAM_RETENTION_HOURS = Setting(
    "BSKY_JETSTREAM_RETENTION_HOURS", 36.0,
    "how far back that instance can replay (a day older than this is refused with a pointer to the archive)",
    positive_float,
)  # fmt: skip
APPVIEW_URL = Setting(
    "BSKY_APPVIEW_URL", "https://public.api.bsky.app", "AppView for feed snapshots and author scans", http_url
)
DAILY_SOURCES = ("archive", "jetstream")
DAILY_SOURCE = Setting(
    "BSKY_WAREHOUSE_DAILY_SOURCE", "archive",
    "where `warehouse_yesterday_schedule` takes its day from: `archive` (the archive resource's directory) or "
    "`jetstream`", one_of(*DAILY_SOURCES),
)  # fmt: skip
SCHEDULE_CRON = Setting("BSKY_WAREHOUSE_SCHEDULE_CRON", "0 2 * * *", "when that schedule runs (UTC)", cron)
FRESHNESS_HOUR = Setting(
    "BSKY_WAREHOUSE_FRESHNESS_HOUR", 6, "UTC hour by which yesterday's partition must exist (freshness checks)",
    hour_of_day,
)  # fmt: skip

SETTINGS: tuple[Setting[Any] | Secret, ...] = (
    WAREHOUSE_DB, WAREHOUSE_CATALOG, WAREHOUSE_DATA_PATH, START_DATE, REPORTS_DIR, DAGSTER_HOME, PERSPECTIVE_API_KEY,
    PERSPECTIVE_QPS, PERSPECTIVE_BASE_URL,
    LLM_BASE_URL, LLM_MODEL, LLM_API_KEY, LLM_MAX_CONCURRENCY, VLLM_MODEL, DETOXIFY_CHECKPOINT, DETOXIFY_TOKENIZER,
    JETSTREAM_HOST, JETSTREAM_RETENTION_HOURS, APPVIEW_URL, DAILY_SOURCE, SCHEDULE_CRON, FRESHNESS_HOUR,
)  # fmt: skip

# Variables the warehouse writes for the tools it runs, never reads: dbt phones home on every run unless told not
# to, and the Hugging Face libraries would download a missing file unless switched offline.
DBT_ENV = {"DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
HF_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def environment() -> Mapping[str, str]:
    """The process environment, for code that takes the environment as a parameter (preflight checks)."""
    return os.environ


def dbt_env(db_path: Path | None = None) -> dict[str, str]:
    """The environment for a dbt process: this one's, tracking off, and the warehouse file as an absolute path.

    dbt's profile reads `BSKY_WAREHOUSE_DB` with no default of its own, and resolves a relative path against the
    dbt project directory it runs in; the absolute path here is the file Dagster opens.
    """
    target = (db_path or WAREHOUSE_DB.get()).expanduser().resolve()
    return {**os.environ, **DBT_ENV, WAREHOUSE_DB.name: str(target)}


def markdown_table() -> str:
    """The README's configuration table, one row per setting in declaration order."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    return "\n".join([*rows, *(setting.table_row() for setting in SETTINGS)])


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
