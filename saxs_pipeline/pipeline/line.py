"""The dispatcher's line: jobs waiting to be submitted, jobs waiting for a retry, and
which frames are on their way at all (in line, out on the cluster, or waiting), so a
frame is never on its way twice; and how much of the line the next task takes."""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from collections.abc import Sequence

from saxs_pipeline.pipeline.frames import Fingerprint, FrameRef
from saxs_pipeline.pipeline.jobs import Job

__all__ = ["MIN_SHARE", "WorkLine", "take_size"]


MIN_SHARE = 4  # half a kernel group (groups of 4 measured as fast as groups of 8)


def take_size(waiting: int, batch_size: int, out: int, nthreads: int) -> int:
    """How many of the ``waiting`` frames the next task takes (0: none yet), with ``out``
    tasks out on ``nthreads`` worker threads (at least 1 counted). A partial batch is
    shared over the idle threads, in shares of at least ``MIN_SHARE`` frames: after a
    stall of the driver, the live frames that gathered meanwhile had gone as one task to
    one worker while the other waited (8 frames, 70 ms on one core); the floor keeps a
    walk on a large cluster, whose line is often short, from becoming one task per frame."""
    if waiting >= batch_size:
        return batch_size
    idle = max(nthreads, 1) - out
    if waiting <= 0 or idle <= 0:
        return 0
    return max(-(-waiting // idle), min(waiting, MIN_SHARE))


class WorkLine:
    """See the module doc. ``lock`` and ``cond`` are shared with the dispatcher, which
    keeps the tasks that are out under the same lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.wake = threading.Event()  # something to submit
        self._line: collections.deque[Job] = collections.deque()
        self._active: dict[FrameRef, Job] = {}
        self._heap: list[tuple[float, int, Job]] = []
        self._order = itertools.count()
        self._waiting: set[Job] = set()
        self.retried = 0

    def __len__(self) -> int:
        with self.lock:
            return len(self._line)

    def put(self, jobs: Sequence[Job]) -> None:
        with self.lock:
            for job in jobs:
                self._active[job.ref] = job
                self._line.append(job)
        if jobs:
            self.wake.set()

    def put_front(self, jobs: Sequence[Job]) -> None:
        """Jobs that were out and come back (their tasks were lost), first in line."""
        with self.lock:
            self._line.extendleft(reversed(jobs))
        self.wake.set()

    def again(self, job: Job) -> None:
        """A job that finished but changed meanwhile: once more, at the back."""
        job.again, job.attempt, job.stalls, job.last_size = False, 1, 0, -1
        with self.lock:
            self._line.append(job)
        self.wake.set()

    def touch(self, ref: FrameRef, fp: Fingerprint | None) -> bool:
        """A new event for ``ref`` (its file now has fingerprint ``fp``): True when the
        frame is already on its way. One waiting for a retry is tried at once; one that
        changed since it was taken is run once more after."""
        with self.lock:
            job = self._active.get(ref)
            if job is None:
                return False
            if job in self._waiting:
                self.retry(job, 0.0)
            elif fp is not None and fp != job.fingerprint:
                job.again, job.fingerprint = True, fp
            return True

    def active(self, ref: FrameRef) -> bool:
        with self.lock:
            return ref in self._active

    def retry(self, job: Job, delay: float) -> None:
        with self.lock:
            self._waiting.add(job)
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), job))
        self.wake.set()

    def next_due(self) -> float | None:
        """Seconds until the next retry is due (None: none waits)."""
        with self.lock:
            return max(0.0, self._heap[0][0] - time.monotonic()) if self._heap else None

    def due(self) -> None:
        """Put jobs whose retry is due first in line."""
        now = time.monotonic()
        with self.lock:
            while self._heap and self._heap[0][0] <= now:
                _, _, job = heapq.heappop(self._heap)
                if job in self._waiting:
                    self._waiting.discard(job)
                    self._line.appendleft(job)

    def take(self, n: int) -> list[Job]:
        with self.lock:
            return [self._line.popleft() for _ in range(min(n, len(self._line)))]

    def done(self, job: Job) -> None:
        """``job`` left the line for good (finished or failed)."""
        with self.lock:
            if self._active.get(job.ref) is job:
                del self._active[job.ref]
            self.cond.notify_all()

    def clear(self) -> list[Job]:
        """Drop everything (abort); returns the jobs dropped."""
        with self.lock:
            dropped = list(self._active.values())
            self._line.clear()
            self._heap.clear()
            self._waiting.clear()
            self._active.clear()
            self.cond.notify_all()
            return dropped

    def size(self) -> int:
        """Frames on their way: in line, out or waiting for a retry."""
        with self.lock:
            return len(self._active)

    def waiting(self) -> int:
        with self.lock:
            return len(self._waiting)

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while self._active:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(0.2 if left is None else min(left, 0.2))
        return True
