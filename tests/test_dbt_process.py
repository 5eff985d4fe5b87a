"""A dbt process that outlives its failed step is ended before the writer lock is released."""

from __future__ import annotations

import subprocess
import sys

from bsky_warehouse.assets.dbt import stop_process


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
