"""The one flock wait behind the warehouse writer's lock and the partition claims: re-entrant for the writer,
a clear error naming the lock when another process keeps it, free again once that process is gone."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bsky_warehouse.checkpoint import PartitionBusy, claim
from bsky_warehouse.resources.warehouse import WarehouseLockTimeout, exclusive_lock

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_elsewhere(tmp_path: Path):
    """A lock file held by another process until the test lets it go (closing its stdin)."""
    lock = tmp_path / "x.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    yield lock, proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait()


def test_the_writer_lock_is_reentrant_within_a_thread(tmp_path):
    lock = tmp_path / "wh.lock"
    with exclusive_lock(lock, 1), exclusive_lock(lock, 1), exclusive_lock(lock, 1):
        pass
    with exclusive_lock(lock, 1):  # released after the nesting unwound
        pass


def test_another_thread_waits_for_the_writer_lock(tmp_path):
    lock = tmp_path / "wh.lock"
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with exclusive_lock(lock, 0.2):
                pass
        except BaseException as err:
            errors.append(err)

    with exclusive_lock(lock, 1):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], WarehouseLockTimeout)


def test_a_lock_held_by_another_process_times_out_naming_it_then_frees(held_elsewhere):
    lock, proc = held_elsewhere
    with pytest.raises(WarehouseLockTimeout, match="another process holds it") as err, exclusive_lock(lock, 0.3):
        pass
    assert str(lock) in str(err.value)
    busy = pytest.raises(PartitionBusy, match="toxicity_scores for 2024-03-13 is being worked on")
    with busy, claim(lock, "toxicity_scores for 2024-03-13", timeout_s=0.3, poll_s=0.05):
        pass
    proc.stdin.close()
    proc.wait()
    with claim(lock, "free again", timeout_s=5), exclusive_lock(lock.with_name("other.lock"), 5):
        pass
