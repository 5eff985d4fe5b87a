"""A bad `materialize` request is refused before anything runs: one line per problem, exit 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

import pytest

from bsky_warehouse.preflight import materialize_problems, scorer_names, window_problems
from bsky_warehouse.project import REPO_ROOT, SAMPLE_DIR

FIRST, TODAY = date(2024, 3, 8), date(2026, 12, 1)


def problems(**overrides: object) -> list[str]:
    request: dict[str, object] = {
        "start": "2024-03-10", "end": None, "archive": str(SAMPLE_DIR), "scorer": None, "labeler": None,
        "env": {}, "first_day": FIRST, "today": TODAY,
    }  # fmt: skip
    return materialize_problems(**{**request, **overrides})  # type: ignore[arg-type]


def test_a_good_request_has_no_problems():
    assert problems() == []
    assert problems(end="2024-03-12", scorer="profanity-check") == []
    assert problems(scorer="perspective", env={"PERSPECTIVE_API_KEY": "k"}) == []
    assert problems(labeler="openai", env={"LLM_MODEL": "m"}) == []


def test_every_scorer_the_asset_accepts_is_listed():
    assert {"profanity-check", "detoxify", "perspective", "perspective-2024-reference", "perspective-distilled"} == set(
        scorer_names()
    )
    (unknown,) = problems(scorer="nonsense")
    assert unknown.startswith("unknown scorer 'nonsense': choose one of ")
    assert all(name in unknown for name in scorer_names())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"start": "2024-13-45"}, "--start '2024-13-45' is not a date"),
        ({"end": "tomorrow"}, "--end 'tomorrow' is not a date"),
        ({"start": "2024-03-12", "end": "2024-03-10"}, "--end 2024-03-10 must be after --start 2024-03-12"),
        ({"start": "2024-03-12", "end": "2024-03-12"}, "must be after"),
        ({"start": "2024-01-01"}, "before the first partition 2024-03-08: set BSKY_WAREHOUSE_START_DATE"),
        ({"start": "2026-12-01"}, "past the last complete day 2026-11-30"),
        ({"archive": "/nonexistent/dumps"}, "--archive /nonexistent/dumps: no such directory"),
        ({"scorer": "perspective"}, "export PERSPECTIVE_API_KEY"),
        ({"labeler": "openai"}, "export LLM_MODEL"),
        ({"labeler": "vllm"}, "export VLLM_MODEL"),
        ({"labeler": "gpt"}, "unknown labeler 'gpt': choose one of openai, vllm, import"),
    ],
)
def test_each_problem_is_one_line_naming_the_fix(overrides, expected):
    found = problems(**overrides)
    assert len(found) == 1 and expected in found[0] and "\n" not in found[0], found


def test_problems_are_all_reported_at_once():
    found = problems(start="2024-13-45", archive="/nope", scorer="x", labeler="y")
    assert len(found) == 4


def test_window_problems_allow_yesterday_and_no_later():
    assert window_problems(date(2026, 11, 30), date(2026, 12, 1), FIRST, TODAY) == []
    assert window_problems(date(2026, 11, 30), date(2026, 12, 2), FIRST, TODAY)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--start", "2024-03-12", "--end", "2024-03-10"], "must be after --start"),
        (["--start", "2024-13-45"], "is not a date"),
        (["--start", "2024-03-10", "--archive", "/nonexistent/dumps"], "no such directory"),
        (["--start", "2024-03-10", "--scorer", "nonsense"], "perspective-distilled"),
        (["--start", "2024-03-10", "--scorer", "perspective"], "PERSPECTIVE_API_KEY"),
    ],
)
def test_the_cli_refuses_before_writing_anything(tmp_path, args, expected):
    db = tmp_path / "wh.duckdb"
    env = {**os.environ, "BSKY_WAREHOUSE_DB": str(db)}
    env.pop("PERSPECTIVE_API_KEY", None)
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    proc = subprocess.run([sys.executable, "-m", "bsky_warehouse.cli", "materialize", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert proc.stdout == "" and not db.exists()
