"""A worker's orderly close without Dask's heartbeat traceback.

A worker closing (the embedded cluster at the end of every successful run, a
``saxs-worker`` stopped) sets its status to closing, stops its periodic callbacks and
then closes its connections; a heartbeat already on its way to the scheduler then fails
with ``CommClosedError``, and Dask logs "Failed to communicate with scheduler during
heartbeat." at ERROR with the whole traceback -- at the end of a run that went well, and
more often the busier the machine. That is Dask's own race (distributed 2026.11,
``Worker.close``), not a fault: this filter drops that one message while its worker is
closing or closed. Any other message, and that one from a running worker (a scheduler
that really went away), passes.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

__all__ = ["HEARTBEAT_FAILED", "ClosingHeartbeatFilter", "quiet_orderly_close"]

HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"
WORKER_LOGGER = "distributed.worker"


class ClosingHeartbeatFilter(logging.Filter):
    """Drops :data:`HEARTBEAT_FAILED` of ``worker`` while it closes (module doc)."""

    def __init__(self, worker: Any) -> None:
        super().__init__()
        self._worker = weakref.ref(worker)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(HEARTBEAT_FAILED):
            return True
        from distributed.core import Status

        worker = self._worker()
        closing = worker is None or worker.status in (Status.closing, Status.closed,
                                                       Status.closing_gracefully)
        return not closing


def quiet_orderly_close(worker: Any) -> None:
    """Install the filter for ``worker`` on Dask's worker logger (once per worker)."""
    logger = logging.getLogger(WORKER_LOGGER)
    for f in logger.filters:
        if isinstance(f, ClosingHeartbeatFilter) and f._worker() is worker:
            return
    logger.addFilter(ClosingHeartbeatFilter(worker))
