"""What a run reports about itself: the ``stat`` reply, progress for bars and status
lines, and the counts behind them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from saxs_pipeline.pipeline.busyclock import BusyClock
from saxs_pipeline.pipeline.cluster import ClusterLink
from saxs_pipeline.pipeline.dispatcher import Dispatcher
from saxs_pipeline.pipeline.sinks import FailureSink
from saxs_pipeline.pipeline.streamsource import StreamCounts
from saxs_pipeline.pipeline.taker import Taker

__all__ = ["RunStatus"]


class RunStatus:
    """Counts frames integrated and reads the other parts' counts. ``taker`` and
    ``failures`` are set when the run starts; ``sourcing()`` tells whether a source
    (a walk, a stream) is still finding frames."""

    def __init__(self, dispatcher: Dispatcher, link: ClusterLink,
                 sourcing: Callable[[], bool]) -> None:
        self.dispatcher, self.link, self.sourcing = dispatcher, link, sourcing
        self.taker: Taker | None = None
        self.failures: FailureSink | None = None
        self.stream: Callable[[], StreamCounts] | None = None  # a stream run's counts
        self._lock = threading.Lock()
        self.processed = 0
        self.clock = BusyClock()  # the run's rate over its busy time
        self.first_result: float | None = None
        self.start_time = time.time()
        self._last = (self.start_time, 0)

    def started(self) -> None:
        with self._lock:
            self.start_time = time.time()
            self._last = (self.start_time, self.processed)

    def count(self, n: int) -> None:
        with self._lock:
            if n and self.first_result is None:
                self.first_result = time.time()
            self.processed += n
        self.clock.finished(n)

    @property
    def failed(self) -> int:
        return self.failures.count if self.failures is not None else 0

    def summary(self) -> str:
        return (f"{self.processed} processed, {self.failed} failed, "
                f"{self.dispatcher.queue_length()} queued")

    def stats(self) -> dict[str, Any]:
        """The ``stat`` reply (the original's four keys first), plus frames per second
        since the previous call (``pics`` frames in ``time interval`` s), failures, frames
        skipped as done, the cluster's state, its workers (joined, left, silent) and how
        many frames each worker integrated; a stream run adds the repeated images ignored
        (``duplicates``) and the messages that failed (``stream errors``)."""
        now = time.time()
        with self._lock:
            last_time, last_count = self._last
            interval = max(now - last_time, 0.0)
            pics = self.processed - last_count
            self._last = (now, self.processed)
            processed, start = self.processed, self.start_time
        return {
            "images processed": processed,
            "queue length": self.dispatcher.queue_length(),
            "time": now,
            "start time": start,
            "frames per sec": pics / interval if interval > 0 else 0.0,
            "time interval": interval,
            "pics": pics,
            "failed": self.failed,
            "skipped": self.taker.skipped if self.taker else 0,
            "cluster": self.link.status.describe(),
            **self.link.workers.stats(),
            "frames by worker": self.dispatcher.by_worker(),
            **self._stream_stats(),
        }

    def _stream_stats(self) -> dict[str, int]:
        if self.stream is None:
            return {}
        counts = self.stream()
        return {"duplicates": counts.duplicates, "stream errors": counts.errors}

    def progress(self) -> dict[str, Any]:
        """For progress bars: frames finished (processed or failed) of those taken, and
        whether a source is still finding frames."""
        failed = self.failed
        return {"done": self.processed + failed,
                "total": self.taker.accepted if self.taker else 0,
                "walking": self.sourcing(), "failed": failed, "processed": self.processed,
                "skipped": self.taker.skipped if self.taker else 0,
                "queued": self.dispatcher.queue_length(), "cluster": self.link.status}
