"""A successful run ends without Dask's shutdown traceback (issue 21, item 8): the
heartbeat failure Dask logs when a worker's heartbeat races its own close is dropped
while the process's workers close, and kept while one runs; a short ``saxsdog`` run as a process
prints no traceback."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saxs_pipeline.plugins.quietclose import (
    HEARTBEAT_FAILED,
    WORKER_LOGGER,
    ClosingHeartbeatFilter,
    quiet_orderly_close,
)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.timeout(120)
def test_the_heartbeat_failure_is_dropped_only_while_its_workers_close() -> None:
    """Two in-process workers: the message cannot say which one logged it, so it is
    told while either runs and dropped once both close; one filter for both."""
    from distributed import LocalCluster

    logger = logging.getLogger(WORKER_LOGGER)
    kept = _Kept()
    logger.addHandler(kept)
    filters = list(logger.filters)  # other tests' workers may have installed one
    logger.filters[:] = [f for f in filters if not isinstance(f, ClosingHeartbeatFilter)]
    try:
        cluster = LocalCluster(n_workers=2, processes=False, dashboard_address=None)  # inproc
        a, b = cluster.workers.values()
        for worker in (a, a, b):  # once per worker, however many queues set it up
            quiet_orderly_close(worker)
        assert sum(isinstance(f, ClosingHeartbeatFilter) for f in logger.filters) == 1
        logger.error(HEARTBEAT_FAILED + ".")  # running workers: a real loss, told
        logger.error("something else")
        cluster.scale(1)
        deadline = time.monotonic() + 30  # a worker's close takes well under a second
        while not any(w.status.name == "closed" for w in (a, b)):
            assert time.monotonic() < deadline, "scale(1) closed no worker in 30 s"
            time.sleep(0.05)
        logger.error(HEARTBEAT_FAILED + ".")  # maybe the running one's: told
        cluster.close()
        assert a.status.name == "closed" and b.status.name == "closed"
        logger.error(HEARTBEAT_FAILED + ".")  # their own close raced it: dropped
        logger.error("something else after")
    finally:
        logger.removeHandler(kept)
        logger.filters[:] = filters
    assert kept.messages.count(HEARTBEAT_FAILED + ".") == 2
    assert "something else" in kept.messages and "something else after" in kept.messages


@pytest.mark.timeout(180)
def test_a_successful_run_prints_no_traceback(saxs_setup, tmp_path: Path) -> None:
    setup = saxs_setup(n_frames=8)
    proc = subprocess.run([str(Path(sys.executable).parent / "saxsdog"), "-c",
                           str(setup.calibration), "-t", "2", str(setup.data)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr
    assert "8 frames in" in proc.stderr
    assert "Traceback" not in proc.stderr and "CommClosedError" not in proc.stderr, proc.stderr
