"""Cluster-wide frame statistics on the scheduler: :class:`SaxsStats`.

Frames are counted from the ``saxs-progress`` events every task logs (a task carries a
batch of frames, so task transitions alone cannot count frames); the queue length comes
from the scheduler's live task states (``TaskPrefix.states``: ``state_counts`` is
cumulative and never goes down). Readable from any client, a notebook included, with
``await client.scheduler.saxs_stats()`` or :func:`scheduler_stats`.

Load it with ``dask scheduler --preload saxs_pipeline.stats`` or
``client.register_plugin(SaxsStats())`` (idempotent: a second registration is ignored).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dask.utils import key_split
from distributed.diagnostics.plugin import SchedulerPlugin

if TYPE_CHECKING:
    from distributed import Client, Scheduler

__all__ = ["HANDLER", "PROGRESS_TOPIC", "TASK_PREFIX", "SaxsStats", "scheduler_stats"]

# The protocol between tasks and this plugin, kept here so that a scheduler loading the
# plugin does not import the integration engine.
TASK_PREFIX = "saxs-integrate"  # task keys are (TASK_PREFIX, queue_id, seq)
PROGRESS_TOPIC = "saxs-progress"  # the event each task logs with its frame counts
HANDLER = "saxs_stats"
# Task states that still have work ahead of them.
ACTIVE_STATES = ("released", "waiting", "queued", "processing", "no-worker")
# A re-run task (lost worker) reports again under the same key; remember this many keys
# to replace its earlier report instead of counting its frames twice.
_REMEMBERED_KEYS = 20_000


@dataclass
class _QueueCounts:
    processed: int = 0
    failed: int = 0
    incomplete: int = 0
    start_time: float = field(default_factory=time.time)
    last_time: float | None = None
    pending_tasks: set[Any] = field(default_factory=set)


class SaxsStats(SchedulerPlugin):
    """Frames processed / failed, queue length, frames per second over the last
    ``window`` seconds, start time; in total and per queue id."""

    name = "saxs-stats"
    idempotent = True

    def __init__(self, prefix: str = TASK_PREFIX, window: float = 5.0) -> None:
        self.prefix = prefix
        self.window = float(window)
        self._reset()

    def _reset(self) -> None:
        self.start_time = time.time()
        self.processed = 0
        self.failed = 0
        self.incomplete = 0
        self.tasks_done = 0
        self.tasks_erred = 0
        self.queues: dict[str, _QueueCounts] = {}
        self._done: deque[tuple[float, int]] = deque()
        self._reports: OrderedDict[str, tuple[str, int, int, int]] = OrderedDict()
        self.scheduler: Scheduler | None = None

    async def start(self, scheduler: Scheduler) -> None:
        self._reset()
        self.scheduler = scheduler
        scheduler.handlers[HANDLER] = self.snapshot

    async def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.handlers.pop(HANDLER, None)

    def _queue(self, queue_id: str) -> _QueueCounts:
        q = self.queues.get(queue_id)
        if q is None:
            q = self.queues[queue_id] = _QueueCounts()
        return q

    # -- hooks (hot paths: O(1)) -----------------------------------------------------------

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if key_split(key) != self.prefix:
            return
        if finish == "memory" and start == "processing":
            self.tasks_done += 1
        elif finish == "erred":
            self.tasks_erred += 1
        if isinstance(key, tuple) and len(key) >= 2:
            pending = self._queue(str(key[1])).pending_tasks
            if finish in ACTIVE_STATES:
                pending.add(key)
            else:
                pending.discard(key)

    def log_event(self, topic: str, msg: Any) -> None:
        if topic != PROGRESS_TOPIC or not isinstance(msg, dict):
            return
        self.record(str(msg.get("queue", "")), int(msg.get("processed", 0)),
                    int(msg.get("failed", 0)), int(msg.get("incomplete", 0)),
                    key=msg.get("key"), when=msg.get("time"))

    def record(self, queue_id: str, processed: int = 0, failed: int = 0, incomplete: int = 0,
               *, key: str | None = None, when: float | None = None) -> None:
        """Count a report of frames (also used by drivers, e.g. for frames that failed
        after their last retry)."""
        now = time.time()
        q = self._queue(queue_id)
        if key is not None:
            previous = self._reports.pop(key, None)
            if previous is not None:  # the task ran again: replace its first report
                pq = self._queue(previous[0])
                pq.processed -= previous[1]
                pq.failed -= previous[2]
                pq.incomplete -= previous[3]
                self.processed -= previous[1]
                self.failed -= previous[2]
                self.incomplete -= previous[3]
            self._reports[key] = (queue_id, processed, failed, incomplete)
            if len(self._reports) > _REMEMBERED_KEYS:
                self._reports.popitem(last=False)
        q.processed += processed
        q.failed += failed
        q.incomplete += incomplete
        q.last_time = now
        self.processed += processed
        self.failed += failed
        self.incomplete += incomplete
        if processed:
            self._done.append((float(when) if when else now, processed))

    # -- reading -------------------------------------------------------------------------

    def _fps(self, now: float) -> float:
        while self._done and self._done[0][0] < now - self.window:
            self._done.popleft()
        return sum(n for _, n in self._done) / self.window

    def snapshot(self, queue: str | None = None) -> dict[str, Any]:
        """The statistics as a plain dict (the ``saxs_stats`` RPC)."""
        now = time.time()
        states: dict[str, int] = {}
        if self.scheduler is not None:
            tp = self.scheduler.task_prefixes.get(self.prefix)
            if tp is not None:
                states = dict(tp.states)  # live counts, unlike the cumulative state_counts
        out: dict[str, Any] = {
            "processed": self.processed,
            "failed": self.failed,
            "incomplete": self.incomplete,
            "queue_length": sum(states.get(s, 0) for s in ACTIVE_STATES),
            "tasks_done": self.tasks_done,
            "tasks_erred": self.tasks_erred,
            "fps": self._fps(now),
            "window": self.window,
            "start_time": self.start_time,
            "time": now,
            "queues": {
                qid: {
                    "processed": q.processed,
                    "failed": q.failed,
                    "incomplete": q.incomplete,
                    "queue_length": len(q.pending_tasks),
                    "start_time": q.start_time,
                    "last_time": q.last_time,
                }
                for qid, q in self.queues.items()
                if queue is None or qid == queue
            },
        }
        return out


def ensure_registered(client: Client) -> None:
    """Register :class:`SaxsStats` on the client's scheduler unless it is there."""
    client.register_plugin(SaxsStats())


def scheduler_stats(client: Client, queue: str | None = None) -> dict[str, Any]:
    """The :class:`SaxsStats` snapshot, from a synchronous client."""
    return client.sync(client.scheduler.saxs_stats, queue=queue)
