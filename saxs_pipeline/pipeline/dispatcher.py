"""The dispatcher: frames the ledger took become Dask tasks, and results come back.

* **batching**: jobs wait in line; a full batch goes out whenever fewer than
  ``max_in_flight`` tasks are out, a partial one (live frames) only while a worker thread
  is idle, so frames arriving while the cluster is busy gather into the next batch
  instead of costing one task each; frames that gathered are shared over the idle
  threads (:func:`take_size`). Task keys are explicit,
  ``("saxs-integrate", queue_id, seq)``, never ``pure``: a reprocessed frame must run again.
* **retries**: a frame still being written is tried again with a back-off
  (:class:`~saxs_pipeline.pipeline.retry.RetryPolicy`). A new event for a frame waiting for
  its retry tries it at once.
* **cluster loss**: the tasks out and what a loss does to them:
  :class:`~saxs_pipeline.pipeline.inflight.InFlight`.
* **paths**: tasks carry the frame and output paths as the workers see them (the link's
  path map).
* **results**: collected, in a thread of their own, by a
  :class:`~saxs_pipeline.pipeline.collect.Collector`: to ``on_results`` (frames done or
  failed in the task) and ``on_failed`` (frames that failed here: retries used up, a task
  that erred).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from saxs_pipeline.pipeline.cluster import ClusterLink
from saxs_pipeline.pipeline.collect import Collector
from saxs_pipeline.pipeline.cpuparts import DRIVER
from saxs_pipeline.pipeline.frames import Fingerprint, FrameRef
from saxs_pipeline.pipeline.inflight import Batch, InFlight
from saxs_pipeline.pipeline.jobs import Job
from saxs_pipeline.pipeline.line import WorkLine, take_size
from saxs_pipeline.pipeline.retry import RetryPolicy
from saxs_pipeline.pipeline.task import process_frames
from saxs_pipeline.pipeline.tasktypes import FrameResult, TaskOptions
from saxs_pipeline.plugins.stats import TASK_PREFIX

__all__ = ["Dispatcher", "Job"]


log = logging.getLogger(__name__)


@dataclass
class _Counts:
    submitted_tasks: int = 0
    seq: int = 0
    nthreads: int = 1
    nthreads_checked: float = 0.0
    local: bool = False  # every worker on this host's loopback (see _submit_ready)


class Dispatcher:
    """See the module doc. ``on_results(pairs)`` gets ``(job, result)`` pairs of frames
    done or failed in a task; ``on_failed(job, reason)`` frames that failed here;
    ``want_picture()``, asked as each task is submitted, whether the task brings its last
    frame's picture (the live page's)."""

    def __init__(
        self,
        link: ClusterLink,
        queue_id: str,
        options: TaskOptions,
        on_results: Callable[[list[tuple[Job, FrameResult]]], None],
        on_failed: Callable[[Job, str], None],
        *,
        batch_size: int = 32,
        max_in_flight: int | None = None,
        retries: int = 5,
        retry_delay: float = 0.2,
        want_picture: Callable[[], bool] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.link, self.queue_id, self.options = link, queue_id, options
        self.want_picture = want_picture
        self.batch_size = int(batch_size)
        self.max_in_flight = max_in_flight
        self.line = WorkLine()
        self._lock, self._cond, self._wake = self.line.lock, self.line.cond, self.line.wake
        self.out = InFlight(self.line)
        self._c = _Counts()
        self._stop = threading.Event()
        self.collector = Collector(link, queue_id, self.out, on_results, on_failed,
                                   RetryPolicy(int(retries), float(retry_delay)),
                                   lambda: self._c.local, self._stop)
        self._threads: list[threading.Thread] = []

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        for name, target in (("saxs-submit", self._submit_loop), ("saxs-collect", self.collector.run)):
            t = threading.Thread(target=target, name=f"{name}-{self.queue_id}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both threads (what is still out stays out; see :meth:`cancel_all`)."""
        self._stop.set()
        self._wake.set()
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(timeout)

    # -- taking work -------------------------------------------------------------------------

    def put(self, jobs: Sequence[Job]) -> None:
        self.line.put(jobs)

    def touch(self, ref: FrameRef, fp: Fingerprint | None) -> bool:
        """See :meth:`WorkLine.touch`."""
        return self.line.touch(ref, fp)

    def active(self, ref: FrameRef) -> bool:
        return self.line.active(ref)

    def cancel_all(self) -> list[Job]:
        """Drop everything in line, waiting or out (abort); returns the jobs dropped.
        Tasks already running finish on their worker, their results are discarded."""
        with self._lock:
            futures = self.out.clear()
            dropped = self.line.clear()
        if futures and self.link.status.connected:
            try:
                self.link.get(timeout=1).cancel(futures, reason="saxs_pipeline abort")
            except Exception as exc:  # the cluster may be gone: nothing left to cancel
                log.debug("cancelling: %s", exc)
        return dropped

    # -- reading -------------------------------------------------------------------------------

    def queue_length(self) -> int:
        """Frames in line, out or waiting for a retry."""
        return self.line.size()

    def idle(self) -> bool:
        return self.line.size() == 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self.line.wait_idle(timeout)

    def drain(self, timeout: float | None) -> int:
        """Wait until every frame is finished, ``timeout`` s pass or the scheduler has
        been lost for 2 s (nothing finishes then: do not hang); returns the frames left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.idle():
            if deadline is not None and time.monotonic() >= deadline:
                break
            status = self.link.status
            if not status.connected and time.time() - status.since > 2.0:
                break
            self.wait_idle(0.2)
        return self.queue_length()

    def wait_for_room(self, stop: threading.Event) -> None:
        """Block while the line is long (a walker's back-pressure)."""
        with self._lock:
            while len(self.line) >= self._high_water() and not stop.is_set():
                self._cond.wait(0.5)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"tasks": self._c.submitted_tasks, "requeued": self.out.requeued,
                    "retried": self.line.retried, "out": self.out.frames,
                    "waiting": self.line.waiting()}

    # -- submitting ------------------------------------------------------------------------------

    def by_worker(self) -> dict[str, int]:
        """Frames integrated (ok) per worker name."""
        return self.collector.by_worker()

    def _high_water(self) -> int:
        return max(self._max_in_flight() * self.batch_size, 4 * self.batch_size)

    def _max_in_flight(self) -> int:
        return self.max_in_flight or max(8, 4 * self._c.nthreads)

    def _submit_loop(self) -> None:
        with DRIVER.owned("batching"):
            self._submitting()

    def _submitting(self) -> None:
        while not self._stop.is_set():
            due = self.line.next_due()
            self._wake.wait(0.5 if due is None else min(0.5, due))
            self._wake.clear()
            try:
                self._follow_link()
                if self.link.status.connected:
                    self._submit_ready()
            except Exception:
                log.exception("queue %s: submitting failed", self.queue_id)
                self._stop.wait(1.0)  # a failure here repeats: not in a tight loop

    def _follow_link(self) -> None:
        status = self.link.status
        if not status.connected or status.generation == self.out.generation:
            return
        client = self.link.get(timeout=5)
        stale = self.out.follow(status.generation, client)
        self._refresh_nthreads(client, force=True)
        if stale:
            log.info("queue %s: %d task(s) resubmitted after the reconnection", self.queue_id,
                     stale)

    def _refresh_nthreads(self, client: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._c.nthreads_checked < 2.0:
            return
        self._c.nthreads_checked = now
        try:
            workers = client.nthreads()
            self._c.nthreads = max(1, sum(workers.values()))
            self._c.local = bool(workers) and all(
                str(a).startswith(("tcp://127.", "inproc://")) for a in workers)
        except Exception as exc:  # a scheduler hiccup: keep the last value
            log.debug("nthreads unavailable: %s", exc)

    def _next_batch(self) -> Batch | None:
        if len(self.out) >= self._max_in_flight():
            return None
        # 0 while every worker thread is busy: live frames gather
        n = take_size(len(self.line), self.batch_size, len(self.out), self._c.nthreads)
        if not n:
            return None
        self._c.seq += 1
        batch = self.out.add((TASK_PREFIX, self.queue_id, self._c.seq), self.line.take(n))
        self._cond.notify_all()  # a walker may add more now
        return batch

    def _submit_ready(self) -> None:
        client = self.link.get(timeout=5)
        self._refresh_nthreads(client)
        while not self._stop.is_set():
            self.line.due()
            with self._lock:
                batch = self._next_batch()
                ac = self.out.completed
            if batch is None or ac is None:
                return
            payloads = None
            tasks = [self.link.path_map.task(j.task()) for j in batch.jobs]  # as workers see them
            picture = self.want_picture is not None and self.want_picture()
            with DRIVER.charge("submit"):
                if batch.jobs[0].payload is not None:
                    # Stream frames: their messages go straight to a worker, not through
                    # the scheduler inside the task's arguments -- nor through it at all
                    # when the workers are on this host's loopback (the embedded cluster,
                    # whose scheduler runs in this process: a relay of every message
                    # through it took this process's CPU twice more); remote workers
                    # may not be reachable from here.
                    payloads = client.scatter([j.payload for j in batch.jobs], hash=False,
                                              direct=self._c.local)
                future = client.submit(process_frames, self.queue_id, tasks,
                                       self.options, payloads=payloads, picture=picture,
                                       key=batch.key, pure=False, retries=1)
            with self._lock:
                if not self.out.attach(batch, future):  # cancelled meanwhile
                    future.cancel()
                    continue
                self._c.submitted_tasks += 1
            ac.add(future)
