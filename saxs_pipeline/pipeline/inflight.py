"""The tasks a dispatcher has out on the cluster, and what a cluster loss does to them.

A frame is in line (:class:`~saxs_pipeline.pipeline.line.WorkLine`) or out in exactly one
task (a :class:`Batch`), never both nor neither: every change here is made under the
line's lock. While the :class:`~saxs_pipeline.pipeline.cluster.ClusterLink` is not
connected nothing is submitted; tasks cancelled by the loss go back to the front of the
line, and when the link comes back (a higher generation) everything still out is taken
back into the line to be submitted again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from saxs_pipeline.pipeline.jobs import Job
from saxs_pipeline.pipeline.line import WorkLine

__all__ = ["Batch", "InFlight"]

TaskKey = tuple[str, str, int]


@dataclass(eq=False)
class Batch:
    """One task's frames, submitted under ``key`` on the link's ``generation``."""

    key: TaskKey
    jobs: list[Job]
    generation: int
    future: Any = None


class InFlight:
    """The tasks out (module doc), sharing ``line``'s lock."""

    def __init__(self, line: WorkLine) -> None:
        self.line = line
        self._lock = line.lock
        self._out: dict[TaskKey, Batch] = {}
        self.frames = 0  # frames out
        self.requeued = 0  # frames taken back into the line
        self.generation = 0  # the link's, when its tasks were last followed
        self.completed: Any = None  # this generation's distributed.as_completed

    def __len__(self) -> int:
        return len(self._out)

    def add(self, key: TaskKey, jobs: list[Job]) -> Batch:
        """A task of ``jobs`` about to be submitted under ``key``."""
        with self._lock:
            batch = Batch(key, jobs, self.generation)
            self._out[key] = batch
            self.frames += len(jobs)
            return batch

    def attach(self, batch: Batch, future: Any) -> bool:
        """Give ``batch`` its submitted future; False when it was dropped meanwhile."""
        with self._lock:
            if batch.key not in self._out:
                return False
            batch.future = future
            return True

    def follow(self, generation: int, client: Any) -> int:
        """The link is connected again as ``generation`` through ``client``: what was
        out on an earlier one goes back into the line; returns the tasks taken back."""
        from distributed import as_completed

        with self._lock:
            stale = [b for b in self._out.values() if b.generation != generation]
            self.requeue(stale)
            self.generation = generation
            self.completed = as_completed(loop=client.loop)
        return len(stale)

    def settle(self, futures: Sequence[Any]) -> list[Batch]:
        """The batches of finished ``futures`` still out; those the scheduler connection
        lost go back into the line (nothing is failed); aborted ones and older
        submissions of a resubmitted batch are left out."""
        batches = []
        with self._lock:
            for f in futures:
                batch = self._out.get(f.key)
                if batch is None or batch.future is not f:
                    continue
                if f.status in ("cancelled", "lost"):
                    # Not cancelled by us (abort removes the batch first): the scheduler
                    # connection broke.
                    self.requeue([batch])
                    continue
                batches.append(batch)
        return batches

    def requeue(self, batches: Sequence[Batch]) -> None:
        """Take ``batches`` back into the front of the line, to be submitted again."""
        with self._lock:
            for batch in batches:
                if self.pop(batch):
                    self.line.put_front(batch.jobs)
                    self.requeued += len(batch.jobs)

    def pop(self, batch: Batch) -> bool:
        """``batch`` is back; False when it no longer was out (aborted, requeued)."""
        with self._lock:
            if self._out.pop(batch.key, None) is None:
                return False
            self.frames -= len(batch.jobs)
            return True

    def clear(self) -> list[Any]:
        """Forget every task out (abort); returns their futures, to cancel."""
        with self._lock:
            futures = [b.future for b in self._out.values() if b.future is not None]
            self._out.clear()
            self.frames = 0
            return futures
