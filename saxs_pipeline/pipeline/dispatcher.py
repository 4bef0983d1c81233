"""The dispatcher: frames the ledger took become Dask tasks, and results come back.

* **batching**: jobs wait in line; a full batch goes out whenever fewer than
  ``max_in_flight`` tasks are out, a partial one (live frames) only while a worker thread
  is idle, so frames arriving while the cluster is busy gather into the next batch
  instead of costing one task each; frames that gathered are shared over the idle
  threads (:func:`take_size`). Task keys are explicit,
  ``("saxs-integrate", queue_id, seq)``, never ``pure``: a reprocessed frame must run again.
* **retries**: a frame still being written (the task reports it incomplete) is tried
  again after ``retry_delay * 2**k`` s. Only tries that found the file no longer than
  before count against ``retries``: a slow writer is waited for, a file that stopped
  growing fails after ``retries`` more tries -- unless it changes again later (then the
  ledger takes it anew). A new event for a frame waiting for its retry tries it at once.
* **cluster loss**: while the :class:`~saxs_pipeline.pipeline.cluster.ClusterLink` is not
  connected nothing is submitted; tasks cancelled by the loss go back to the front of
  the line, and when the link comes back (a higher generation) everything still out is
  submitted again.
* **paths**: tasks carry the frame and output paths as the workers see them (the link's
  path map); the ``.chi`` paths in their results are mapped back.

Results go to ``on_results`` (frames done or failed in the task) and ``on_failed``
(frames that failed here: retries used up, a task that erred).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from saxs_pipeline.pipeline.cluster import ClusterLink
from saxs_pipeline.pipeline.frames import Fingerprint, FrameRef
from saxs_pipeline.pipeline.jobs import Job
from saxs_pipeline.pipeline.line import WorkLine, take_size
from saxs_pipeline.pipeline.task import process_frames
from saxs_pipeline.pipeline.tasktypes import FrameResult, TaskOptions
from saxs_pipeline.plugins.stats import TASK_PREFIX

__all__ = ["Dispatcher", "Job"]


def _task_error(future: Any) -> str:
    try:
        return repr(future.exception(timeout=5))
    except Exception as exc:  # the error itself could not be fetched
        return f"(error unavailable: {exc!r})"

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Batch:
    key: tuple[str, str, int]
    jobs: list[Job]
    generation: int
    future: Any = None


@dataclass
class _Counts:
    submitted_tasks: int = 0
    requeued: int = 0
    seq: int = 0
    nthreads: int = 1
    nthreads_checked: float = 0.0
    by_worker: dict[str, int] = field(default_factory=dict)  # frames integrated per worker


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
        self.on_results, self.on_failed = on_results, on_failed
        self.want_picture = want_picture
        self.batch_size = int(batch_size)
        self.max_in_flight = max_in_flight
        self.retries, self.retry_delay = int(retries), float(retry_delay)
        self.line = WorkLine()
        self._lock, self._cond, self._wake = self.line.lock, self.line.cond, self.line.wake
        self._out: dict[tuple[str, str, int], _Batch] = {}
        self._out_frames = 0
        self._c = _Counts()
        self._generation = 0
        self._ac: Any = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        for name, target in (("saxs-submit", self._submit_loop), ("saxs-collect", self._collect_loop)):
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
            futures = [b.future for b in self._out.values() if b.future is not None]
            self._out.clear()
            self._out_frames = 0
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
            return {"tasks": self._c.submitted_tasks, "requeued": self._c.requeued,
                    "retried": self.line.retried, "out": self._out_frames,
                    "waiting": self.line.waiting()}

    # -- submitting ------------------------------------------------------------------------------

    def by_worker(self) -> dict[str, int]:
        """Frames integrated (ok) per worker name."""
        with self._lock:
            return dict(self._c.by_worker)

    def _high_water(self) -> int:
        return max(self._max_in_flight() * self.batch_size, 4 * self.batch_size)

    def _max_in_flight(self) -> int:
        return self.max_in_flight or max(8, 4 * self._c.nthreads)

    def _submit_loop(self) -> None:
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
        if not status.connected or status.generation == self._generation:
            return
        from distributed import as_completed

        client = self.link.get(timeout=5)
        with self._lock:
            stale = [b for b in self._out.values() if b.generation != status.generation]
            for b in stale:
                self._requeue_locked(b)
            self._generation = status.generation
            self._ac = as_completed(loop=client.loop)
        self._refresh_nthreads(client, force=True)
        if stale:
            log.info("queue %s: %d task(s) resubmitted after the reconnection", self.queue_id,
                     len(stale))

    def _requeue_locked(self, batch: _Batch) -> None:
        if self._out.pop(batch.key, None) is None:
            return
        self._out_frames -= len(batch.jobs)
        self.line.put_front(batch.jobs)
        self._c.requeued += len(batch.jobs)

    def _refresh_nthreads(self, client: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._c.nthreads_checked < 2.0:
            return
        self._c.nthreads_checked = now
        try:
            self._c.nthreads = max(1, sum(client.nthreads().values()))
        except Exception as exc:  # a scheduler hiccup: keep the last value
            log.debug("nthreads unavailable: %s", exc)

    def _next_batch(self) -> _Batch | None:
        if len(self._out) >= self._max_in_flight():
            return None
        # 0 while every worker thread is busy: live frames gather
        n = take_size(len(self.line), self.batch_size, len(self._out), self._c.nthreads)
        if not n:
            return None
        jobs = self.line.take(n)
        n = len(jobs)
        self._c.seq += 1
        batch = _Batch((TASK_PREFIX, self.queue_id, self._c.seq), jobs, self._generation)
        self._out[batch.key] = batch
        self._out_frames += n
        self._cond.notify_all()  # a walker may add more now
        return batch

    def _submit_ready(self) -> None:
        client = self.link.get(timeout=5)
        self._refresh_nthreads(client)
        while not self._stop.is_set():
            self.line.due()
            with self._lock:
                batch = self._next_batch()
                ac = self._ac
            if batch is None or ac is None:
                return
            payloads = None
            if batch.jobs[0].payload is not None:
                # Stream frames: their messages go straight to a worker, not through the
                # scheduler inside the task's arguments.
                payloads = client.scatter([j.payload for j in batch.jobs], hash=False)
            tasks = [self.link.path_map.task(j.task()) for j in batch.jobs]  # as workers see them
            picture = self.want_picture is not None and self.want_picture()
            future = client.submit(process_frames, self.queue_id, tasks,
                                   self.options, payloads=payloads, picture=picture,
                                   key=batch.key, pure=False, retries=1)
            with self._lock:
                if batch.key not in self._out:  # cancelled meanwhile
                    future.cancel()
                    continue
                batch.future = future
                self._c.submitted_tasks += 1
            ac.add(future)

    # -- collecting ------------------------------------------------------------------------------

    def _collect_loop(self) -> None:
        while not self._stop.is_set():
            ac = self._ac
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
        batches = []
        with self._lock:
            for f in futures:
                batch = self._out.get(f.key)
                if batch is None or batch.future is not f:
                    continue  # aborted, or an older submission of a resubmitted batch
                if f.status in ("cancelled", "lost"):
                    # Not cancelled by us (abort removes the batch first): the scheduler
                    # connection broke. The frames go back in line, nothing is failed.
                    self._requeue_locked(batch)
                    continue
                batches.append(batch)
        finished = [b for b in batches if b.future.status == "finished"]
        try:
            results = self.link.get(timeout=5).gather([b.future for b in finished]) if finished else []
        except Exception as exc:  # the connection broke while fetching: run them again
            log.debug("queue %s: gathering results failed (%s); resubmitting", self.queue_id, exc)
            with self._lock:
                for b in batches:
                    self._requeue_locked(b)
            return
        got = dict(zip([b.key for b in finished], results, strict=True))
        for batch in batches:
            with self._lock:
                if self._out.pop(batch.key, None) is None:
                    continue
                self._out_frames -= len(batch.jobs)
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
                    self._c.by_worker[r.worker] = self._c.by_worker.get(r.worker, 0) + 1
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
        size = r.size if r.size is not None else -1
        grew = job.last_size >= 0 and size > job.last_size
        job.stalls = 0 if grew else job.stalls + 1
        job.last_size = size
        if job.stalls <= self.retries:
            job.attempt += 1
            self.line.retried += 1
            self.line.retry(job, self.retry_delay * 2 ** max(job.stalls - 1, 0))
            return
        self._finish(job)
        self.on_failed(job, r.error or "incomplete")


def _read_as(r: FrameResult, fp: Fingerprint | None) -> bool:
    """Whether the worker read the file as it was when last offered (``fp``)."""
    return fp is not None and r.fingerprint is not None and tuple(r.fingerprint) == (
        fp.size, fp.mtime_ns)
