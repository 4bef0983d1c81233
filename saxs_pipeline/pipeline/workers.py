"""The driver's view of the cluster's workers: who joined, who left, who went silent.

Dask reruns the tasks of a worker it removed, so the pipeline loses nothing when a host
dies; but the operator should be told. :class:`WorkerWatch` asks the scheduler for its
workers every ``interval`` seconds (on its own thread: an unreachable scheduler must not
hold up :class:`~saxs_pipeline.pipeline.cluster.ClusterLink`'s loss detection) and logs

* a worker **joined** (a host started late, or came back under systemd);
* a worker **silent**: its last heartbeat did not change for ``silent_after`` s (a
  network partition, a frozen host) -- long before the scheduler's ``worker-ttl``
  removes it; and **heard from again** when it speaks;
* a worker **left** (removed by the scheduler: it closed, died, or its ttl ran out);
  its tasks run again elsewhere;
* the **scheduler not answering** while the connection stays up (a partition between
  driver and scheduler: TCP keeps the connection, nothing gets through), and answering
  again.

Silence is measured on the driver's clock by how long a worker's ``last_seen`` stayed
the same, so clocks of the hosts need not agree. :meth:`stats` is part of ``stat``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["WorkerWatch"]

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    name: str
    last_seen: float  # the scheduler's value
    changed: float  # driver monotonic time when last_seen last changed
    silent: bool = False


class WorkerWatch:
    """See the module doc. ``client()`` returns the current client or None (not
    connected); polling happens only while it returns one."""

    def __init__(self, client: Callable[[], Any], *, interval: float = 1.0,
                 silent_after: float = 2.5) -> None:
        self._client = client
        self.interval, self.silent_after = interval, silent_after
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        self._first = True
        self.joined = self.left = self.silences = 0
        self.events: list[str] = []  # the latest few, for stat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="saxs-worker-watch",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        quiet_since: float | None = None  # the scheduler has not answered since
        told = False
        while not self._stop.wait(self.interval):
            client = self._client()
            if client is None:
                quiet_since, told = None, False  # not connected: the link reports that
                continue
            asked = time.monotonic()
            try:
                info = client.sync(client.scheduler.identity, n_workers=-1,
                                   callback_timeout=max(2.0, self.interval))
            except Exception as exc:
                # A broken connection is the link's to report; a connection that stays
                # up but carries nothing (a partition: the question times out) is told here.
                log.debug("worker watch: scheduler identity failed: %s", exc)
                if not isinstance(exc, TimeoutError):
                    continue
                now = time.monotonic()
                # silent since the first unanswered question was asked; told at once:
                # the question already waited its timeout, and a partition of a few
                # seconds may be over before a second one times out
                quiet_since = asked if quiet_since is None else quiet_since
                if not told:
                    told = True
                    self._scheduler_event("the scheduler has not answered for %.0f s "
                                          "(network?)", now - quiet_since)
                continue
            if told and quiet_since is not None:
                self._scheduler_event("the scheduler answers again after %.0f s",
                                      time.monotonic() - quiet_since)
            quiet_since, told = None, False
            self.update(info.get("workers", {}), time.monotonic())

    def _scheduler_event(self, fmt: str, secs: float) -> None:
        log.warning(fmt, secs)
        with self._lock:
            self.events = [*self.events[-9:], f"{time.strftime('%H:%M:%S')} {fmt % secs}"]

    def update(self, workers: dict[str, dict[str, Any]], now: float) -> None:
        """Compare the scheduler's workers (address -> info) with the last poll."""
        with self._lock:
            first, self._first = self._first, False
            for addr, info in workers.items():
                name = str(info.get("name", addr))
                last = float(info.get("last_seen", info.get("last-seen", 0.0)) or 0.0)
                seen = self._seen.get(addr)
                if seen is None:
                    self._seen[addr] = _Seen(name, last, now)
                    if not first:
                        self.joined += 1
                        self._event(logging.INFO, name, addr, "joined the cluster")
                    continue
                if last != seen.last_seen:
                    if seen.silent:
                        self._event(logging.WARNING, name, addr, "heard from again after %.0f s",
                                    now - seen.changed)
                    seen.last_seen, seen.changed, seen.silent = last, now, False
                elif not seen.silent and now - seen.changed > self.silent_after:
                    seen.silent = True
                    self.silences += 1
                    self._event(logging.WARNING, name, addr, "silent for %.0f s (host or network "
                                "down?)", now - seen.changed)
            for addr in [a for a in self._seen if a not in workers]:
                seen = self._seen.pop(addr)
                self.left += 1
                self._event(logging.WARNING, seen.name, addr, "left the cluster; its tasks run "
                            "again on the others")

    def _event(self, level: int, name: str, addr: str, fmt: str, *args: Any) -> None:
        # The worker is part of the format: the rate limit of repeated log lines groups
        # lines by format, and each worker's event must be told.
        who = f"worker {name} ({addr}) ".replace("%", "%%")
        log.log(level, who + fmt, *args)
        text = (who + fmt) % args
        self.events = [*self.events[-9:], f"{time.strftime('%H:%M:%S')} {text}"]

    def stats(self) -> dict[str, Any]:
        """For ``stat``: workers now, silent ones, joined/left counts, latest events."""
        with self._lock:
            return {"workers": len(self._seen),
                    "workers silent": sorted(s.name for s in self._seen.values() if s.silent),
                    "workers joined": self.joined, "workers left": self.left,
                    "worker events": list(self.events)}


def workers_summary(stats: dict[str, Any]) -> str | None:
    """One line for a run's end: frames per worker and the workers that came and went;
    None when the run saw a single worker and nothing happened to it."""
    by = stats.get("frames by worker") or {}
    joined, left = stats.get("workers joined", 0), stats.get("workers left", 0)
    silences = len(stats.get("workers silent") or [])
    if len(by) <= 1 and not (joined or left or silences):
        return None
    parts = ", ".join(f"{name} {n}" for name, n in sorted(by.items()))
    return (f"frames by worker: {parts or 'none'}; workers joined {joined}, left {left}"
            + (f", silent now {silences}" if silences else ""))
