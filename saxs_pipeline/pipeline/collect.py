"""Results coming back from the cluster: the tasks a dispatcher has out
(:class:`~saxs_pipeline.pipeline.inflight.InFlight`) are collected as they finish, their
results fetched in one gather, and each frame's result goes on: to ``on_results``
(frames done or failed in the task), back into the line (a frame still being written:
:class:`~saxs_pipeline.pipeline.retry.RetryPolicy`; a frame changed while it ran) or to
``on_failed`` (retries used up, a task that erred). The ``.chi`` paths in results are
mapped back to the driver's view.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from saxs_pipeline.pipeline.cluster import ClusterLink
from saxs_pipeline.pipeline.cpuparts import DRIVER
from saxs_pipeline.pipeline.frames import Fingerprint
from saxs_pipeline.pipeline.inflight import InFlight
from saxs_pipeline.pipeline.jobs import Job
from saxs_pipeline.pipeline.retry import RetryPolicy
from saxs_pipeline.pipeline.tasktypes import FrameResult

__all__ = ["Collector"]

log = logging.getLogger(__name__)


class Collector:
    """See the module doc; runs in the dispatcher's collecting thread (:meth:`run`).
    ``direct()`` says whether results may be fetched from the workers directly (all on
    this host's loopback)."""

    def __init__(
        self,
        link: ClusterLink,
        queue_id: str,
        out: InFlight,
        on_results: Callable[[list[tuple[Job, FrameResult]]], None],
        on_failed: Callable[[Job, str], None],
        retry: RetryPolicy,
        direct: Callable[[], bool],
        stop: threading.Event,
    ) -> None:
        self.link, self.queue_id, self.out = link, queue_id, out
        self.line = out.line
        self._lock, self._cond, self._wake = self.line.lock, self.line.cond, self.line.wake
        self.on_results, self.on_failed = on_results, on_failed
        self.retry, self.direct, self._stop = retry, direct, stop
        self._by_worker: dict[str, int] = {}  # frames integrated per worker

    def by_worker(self) -> dict[str, int]:
        """Frames integrated (ok) per worker name."""
        with self._lock:
            return dict(self._by_worker)

    def run(self) -> None:
        """The collecting thread's loop, until ``stop`` is set."""
        with DRIVER.owned("result"):
            self._collecting()

    def _collecting(self) -> None:
        while not self._stop.is_set():
            ac = self.out.completed
            if ac is None:
                self._stop.wait(0.1)
                continue
            with ac.thread_condition:
                if not ac.has_ready():
                    ac.thread_condition.wait(0.25)
            try:
                done = ac.next_batch(block=False)
                if done:
                    self._collect(done)
                    self._wake.set()  # slots are free
            except Exception:
                log.exception("queue %s: collecting results failed", self.queue_id)
                self._stop.wait(1.0)

    def _collect(self, futures: list[Any]) -> None:
        """Results of finished tasks, fetched in one gather (as_completed is used without
        results: its per-future fetch logs a traceback for every task a scheduler loss
        interrupts, and one gather per batch is cheaper)."""
        batches = self.out.settle(futures)
        finished = [b for b in batches if b.future.status == "finished"]
        try:
            # from the workers themselves when they are on this host's loopback (as the
            # dispatcher scatters): the relay through the scheduler was ~10 % of a task's
            # cost on the driver's event loop
            results = self.link.get(timeout=5).gather(
                [b.future for b in finished], direct=self.direct()) if finished else []
        except Exception as exc:  # the connection broke while fetching: run them again
            log.debug("queue %s: gathering results failed (%s); resubmitting", self.queue_id, exc)
            self.out.requeue(batches)
            return
        got = dict(zip([b.key for b in finished], results, strict=True))
        for batch in batches:
            if not self.out.pop(batch):
                continue
            if batch.key in got:
                self._results(batch.jobs, got[batch.key])
            else:
                err = _task_error(batch.future)
                for job in batch.jobs:
                    self._finish(job)
                    self.on_failed(job, f"task {batch.future.status}: {err}")
        with self._lock:
            self._cond.notify_all()

    def _results(self, jobs: list[Job], results: Sequence[FrameResult]) -> None:
        if len(results) != len(jobs):  # a task of another version: never mix up frames
            for job in jobs:
                self._finish(job)
                self.on_failed(job, f"task returned {len(results)} results for {len(jobs)} frames")
            return
        ready: list[tuple[Job, FrameResult]] = []
        with self._lock:
            for r in results:
                if r.status == "ok" and r.worker is not None:
                    self._by_worker[r.worker] = self._by_worker.get(r.worker, 0) + 1
        for job, r in zip(jobs, results, strict=True):
            self.link.path_map.result(r)  # .chi paths as the driver sees them
            if r.status == "incomplete":
                self._incomplete(job, r)
                continue
            ready.append((job, r))
        if ready:
            self.on_results(ready)
        with self._lock:  # with touch() excluded: a change noticed now is not lost
            for job, r in ready:
                # changed while it ran: its newest content counts -- unless the worker
                # already read that content (an event for a file still being written
                # came in after the task had read the finished file)
                if job.again and not _read_as(r, job.fingerprint):
                    self.line.again(job)
                else:
                    self.line.done(job)

    def _finish(self, job: Job) -> None:
        self.line.done(job)

    def _incomplete(self, job: Job, r: FrameResult) -> None:
        delay = self.retry.after_incomplete(job, r.size)
        if delay is not None:
            self.line.retried += 1
            self.line.retry(job, delay)
            return
        self._finish(job)
        self.on_failed(job, r.error or "incomplete")


def _task_error(future: Any) -> str:
    try:
        return repr(future.exception(timeout=5))
    except Exception as exc:  # the error itself could not be fetched
        return f"(error unavailable: {exc!r})"


def _read_as(r: FrameResult, fp: Fingerprint | None) -> bool:
    """Whether the worker read the file as it was when last offered (``fp``)."""
    return fp is not None and r.fingerprint is not None and tuple(r.fingerprint) == (
        fp.size, fp.mtime_ns)
