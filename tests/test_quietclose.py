"""A successful run ends without Dask's shutdown traceback (issue 21, item 8): the
heartbeat failure Dask logs when a worker's heartbeat races its own close is dropped
while that worker closes, and kept while it runs; a short ``saxsdog`` run as a process
prints no traceback."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from saxs_pipeline.plugins.quietclose import HEARTBEAT_FAILED, WORKER_LOGGER, quiet_orderly_close


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.timeout(120)
def test_the_heartbeat_failure_is_dropped_only_while_its_worker_closes() -> None:
    from distributed import LocalCluster

    logger = logging.getLogger(WORKER_LOGGER)
    kept = _Kept()
    logger.addHandler(kept)
    filters = list(logger.filters)
    try:
        cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=None)  # inproc
        worker = next(iter(cluster.workers.values()))
        quiet_orderly_close(worker)
        quiet_orderly_close(worker)  # once per worker, however many queues set it up
        assert len(logger.filters) == len(filters) + 1
        logger.error(HEARTBEAT_FAILED + ".")  # a running worker: a real loss, told
        logger.error("something else")
        cluster.close()
        assert worker.status.name == "closed"
        logger.error(HEARTBEAT_FAILED + ".")  # its own close raced it: dropped
        logger.error("something else after")
    finally:
        logger.removeHandler(kept)
        logger.filters[:] = filters
    assert kept.messages.count(HEARTBEAT_FAILED + ".") == 1
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
