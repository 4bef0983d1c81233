"""Where a run's results go, the last part of source -> ledger -> dispatcher -> worker task
-> sinks: the curve stack with its ledger commit, the history of the ``plot`` and
``history`` replies, the live feed, the non-finite pixel counts and the file listing
get the frames done; the failure sink the frames that failed (and forgets those done
again). A full output disk stops the run (:class:`~saxs_pipeline.pipeline.nospace.DiskGuard`)
without any frame failing: what was not committed stays pending in the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from saxs_pipeline.integrator import Curve
from saxs_pipeline.live.feed import LiveFeed, calibration_summary
from saxs_pipeline.pipeline.cluster import ClusterLink
from saxs_pipeline.pipeline.cpuparts import DRIVER
from saxs_pipeline.pipeline.jobs import Job
from saxs_pipeline.pipeline.naming import OutputLayout
from saxs_pipeline.pipeline.nospace import DiskGuard
from saxs_pipeline.pipeline.sinks import (
    FailureSink,
    FileListSink,
    HistorySink,
    NonfiniteSink,
    StackSink,
)
from saxs_pipeline.pipeline.store import RunStore, stack_fileslist
from saxs_pipeline.pipeline.tasktypes import FrameResult
from saxs_pipeline.plugins.stats import PROGRESS_TOPIC
from saxs_pipeline.stack.layout import CurveSpec

__all__ = ["Outlets"]

log = logging.getLogger(__name__)


class Outlets:
    """The sinks of one run (module doc): made with its queue, opened by :meth:`open` when
    the run starts, stopped by :meth:`stop` when it ends."""

    def __init__(self, queue_id: str, link: ClusterLink, templates: Sequence[Curve],
                 calibration: dict[str, Any], disk: DiskGuard, history_limit: int) -> None:
        self.queue_id, self.link, self.disk = queue_id, link, disk
        self._templates, self._calibration = list(templates), calibration
        self.history = HistorySink([c.key for c in self._templates], history_limit)
        self.stack: StackSink | None = None
        self.failures: FailureSink | None = None
        self.live: LiveFeed | None = None  # the page's and the metrics' data, to the scheduler
        self._sinks: list[Any] = []

    def open(self, store: RunStore, calibration_id: str, failures_log: Path,
             backlog: Callable[[], dict[str, int]], roots: list[Path],
             filelist: FileListSink | None) -> None:
        """Open the stack's writer and the sinks; ``backlog()``: the dispatcher's counts
        the live page shows; ``roots``: where the live page's frames may be read."""
        writer = store.open_writer(self._calibration, CurveSpec.from_curves(self._templates))
        self.stack = StackSink(writer, store.ledger, self._templates, stops=self.disk.check).start()
        self.live = LiveFeed(self.queue_id, lambda: self.link.get(timeout=1), self._templates,
                             calibration_summary(self._calibration, calibration_id), backlog,
                             roots=roots)
        self.failures = FailureSink(store.ledger, failures_log, self.queue_id, self._stats_event)
        self._sinks = [self.stack, self.history, self.live, NonfiniteSink(self.queue_id)]
        if filelist is not None:
            self._sinks.append(filelist)

    def picture_due(self) -> bool:
        """The live page's frame picture: asked of a task now and then (the feed decides)."""
        live = self.live
        return live is not None and live.picture_due()

    def add(self, pairs: list[tuple[Job, FrameResult]]) -> list[tuple[Job, FrameResult]] | None:
        """The frames done of ``pairs`` to every sink; returns them, or None when the
        disk is full (nothing committed: the ledger keeps them pending)."""
        full = next((r for _, r in pairs if r.status == "nospace"), None)
        if full is not None:  # a worker's outputs found the disk full: no frame failed
            self.disk.full(full.error or "no space left on device")
            return None
        ok = [(j, r) for j, r in pairs if r.status == "ok"]
        for sink in self._sinks:
            try:
                with DRIVER.charge(getattr(sink, "cpu_part", "result")):
                    sink.add(ok)
            except Exception as exc:
                if self.disk.check(exc):
                    return None
                log.exception("queue %s: %s failed", self.queue_id, type(sink).__name__)
        if self.failures is not None:
            self.failures.clear([j.ref for j, _ in ok])
        return ok

    def failed(self, job: Job, reason: str) -> None:
        """``job``'s frame failed for ``reason``."""
        if self.failures is not None:
            try:
                self.failures.fail(job.ref, reason, job.attempt, job.path)
            except Exception as exc:
                if not self.disk.check(exc):
                    raise

    def _stats_event(self, record: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.fail(record)
        if self.link.status.connected:
            self.link.get(timeout=1).log_event(PROGRESS_TOPIC, {
                "queue": self.queue_id, "failed": record.get("count", 1), "time": record["time"]})

    def stop(self) -> None:
        """Stop the stack's writer and the live feed (a last push while the scheduler is
        connected: the page and /metrics show the final counts)."""
        if self.stack is not None:
            self.stack.stop()
        if self.live is not None:
            self.live.stop(push=self.link.status.connected)

    # -- reading ---------------------------------------------------------------------------

    def latest(self) -> dict[str, Any] | None:
        return self.history.latest_graphs(self._templates, self._calibration)

    def failure_records(self) -> list[dict[str, Any]]:
        return self.failures.records() if self.failures is not None else []

    def fileslist(self, stack: Path, layout: OutputLayout, flush: bool) -> dict[str, list[str]]:
        """The ``.chi`` files of every frame in the curve ``stack``, per curve; ``flush``
        the writer first (a run still open)."""
        if self.stack is not None and flush:
            self.stack.writer.flush()
        return stack_fileslist(stack, layout, self._templates)
