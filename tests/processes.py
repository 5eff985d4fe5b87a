"""Waiting on child processes by their progress, not by a wall clock.

A Dagster or dbt run on a busy 2-core machine can take several times as long as on an idle one, so a fixed
`communicate(timeout=...)` fails good runs. These helpers read each child's output as it comes and fail only when
a child has printed nothing for `quiet_s` seconds (a hang), which a slow but working run never does for long.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

# A run that prints nothing for this long is stuck, however busy the machine: Dagster logs every step event and
# dbt every node, each a few seconds apart on an idle machine.
QUIET_S = 900.0


@dataclass
class _Reader:
    proc: subprocess.Popen[str]
    chunks: list[str] = field(default_factory=list)
    last_output: float = field(default_factory=time.monotonic)

    def pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.chunks.append(line)
            self.last_output = time.monotonic()

    @property
    def output(self) -> str:
        return "".join(self.chunks)


def wait_for_all(procs: Sequence[subprocess.Popen[str]], quiet_s: float = QUIET_S) -> list[str]:
    """Every process's combined output once all have exited; kills them all if any goes quiet for `quiet_s`.

    The processes must have been started with `stdout=PIPE, stderr=STDOUT, text=True`.
    """
    readers = [_Reader(proc) for proc in procs]
    threads = [threading.Thread(target=r.pump, daemon=True) for r in readers]
    for thread in threads:
        thread.start()
    try:
        while any(r.proc.poll() is None for r in readers):
            now = time.monotonic()
            stuck = [r for r in readers if r.proc.poll() is None and now - r.last_output > quiet_s]
            if stuck:
                raise AssertionError(
                    f"{len(stuck)} process(es) printed nothing for {quiet_s:.0f} s; last output:\n"
                    + "\n---\n".join(r.output[-3000:] for r in stuck)
                )
            time.sleep(0.5)
    finally:
        for r in readers:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
        for thread in threads:
            thread.join(timeout=30)
    return [r.output for r in readers]


def interrupt_group(proc: subprocess.Popen, grace_s: float = 120.0) -> bool:
    """Stop a server started with `start_new_session=True` as Ctrl-C would (SIGINT to its process group), killing
    the group if it is still there after `grace_s`. Returns whether it stopped on SIGINT (True if already gone)."""
    if proc.poll() is not None:
        return True
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False
