"""A dbt process that outlives its failed step is ended before the writer lock is released; the window it is
given in its environment does not outlive its start."""

from __future__ import annotations

import os
import subprocess
import sys

from bsky_warehouse.assets.dbt import environ, stop_process


def test_a_running_process_is_interrupted_and_gone():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    stop_process(proc, grace_s=30)
    assert proc.poll() is not None


def test_a_process_that_ignores_the_interrupt_is_killed_after_the_grace():
    code = (
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    stop_process(proc, grace_s=0.5)
    assert proc.poll() is not None and proc.returncode < 0


def test_a_finished_process_is_left_alone():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stop_process(proc)
    assert proc.returncode == 0


def test_the_window_environment_is_set_for_the_block_and_restored(monkeypatch):
    """The dbt step sets the window only while it starts dbt: a later step (or dbt by hand) never inherits it."""
    monkeypatch.setenv("BSKY_DBT_MIN_DATE", "2000-01-01")
    monkeypatch.delenv("BSKY_DBT_DAYS", raising=False)
    with environ({"BSKY_DBT_MIN_DATE": "2024-03-10", "BSKY_DBT_DAYS": "2024-03-10", "BSKY_DBT_MAX_DATE": None}):
        assert os.environ["BSKY_DBT_MIN_DATE"] == "2024-03-10" and os.environ["BSKY_DBT_DAYS"] == "2024-03-10"
        assert "BSKY_DBT_MAX_DATE" not in os.environ
    assert os.environ["BSKY_DBT_MIN_DATE"] == "2000-01-01" and "BSKY_DBT_DAYS" not in os.environ
