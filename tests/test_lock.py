"""The curve stack's writer lock: a second writer is refused with the holder named; a
dead holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saxs_pipeline.pipeline.lock import StackLock, StackLockedError

HOLD = """
import sys, time
from saxs_pipeline.pipeline.lock import StackLock
lock = StackLock(sys.argv[1]); lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_second_writer_refused_then_takes_over_after_sigkill(tmp_path: Path) -> None:
    stack = tmp_path / "run.zarr"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(stack)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(StackLockedError) as err:
            StackLock(stack).acquire()
        assert f"pid {proc.pid}" in str(err.value) and str(stack) in str(err.value)
        assert err.value.holder is not None and err.value.holder.alive_here()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        lock = StackLock(stack)
        while True:  # the kernel drops the lock with the process
            try:
                lock.acquire()
                break
            except StackLockedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert lock.held and f'"pid": {os.getpid()}' in lock.path.read_text()
        lock.release()
        assert lock.path.read_text() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
