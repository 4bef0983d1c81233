"""The shared machine: CPU that processes other than the benchmark's use during a case,
and waiting for them to go quiet."""

from __future__ import annotations

import time
from collections.abc import Callable


def _busy_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    # steal: time the hypervisor gave our virtual CPUs to other machines
    return sum(getattr(t, f, 0.0) for f in ("user", "system", "nice", "irq", "softirq", "steal"))


def own_seconds(pids: set[int]) -> float:
    import psutil

    total = 0.0
    for pid in list(pids):
        try:
            c = psutil.Process(pid).cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:
            pids.discard(pid)
    return total


class Background:
    """CPU (in cores) used by processes other than ours while a case runs."""

    def __init__(self, pids: Callable[[], set[int]]) -> None:
        self.pids = pids

    def __enter__(self) -> Background:
        self._own_pids = self.pids()
        self._t, self._busy, self._own = time.perf_counter(), _busy_seconds(), own_seconds(
            self._own_pids)
        return self

    def __exit__(self, *exc: object) -> None:
        dt = time.perf_counter() - self._t
        own = own_seconds(self._own_pids | self.pids()) - self._own
        self.cores = max(0.0, (_busy_seconds() - self._busy - own) / dt) if dt > 0 else 0.0


def wait_quiet(pids: Callable[[], set[int]], max_wait: float, threshold: float = 0.25) -> float:
    """Wait until other processes use less than ``threshold`` cores (over 0.5 s)."""
    deadline = time.monotonic() + max_wait
    while True:
        with Background(pids) as bg:
            time.sleep(0.5)
        if bg.cores < threshold or time.monotonic() > deadline:
            return bg.cores
