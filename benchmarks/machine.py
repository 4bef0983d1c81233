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


def seconds_by_pid(pids: set[int]) -> dict[int, float]:
    """CPU seconds of each process so far (with its children); gone processes are
    dropped from ``pids``."""
    import psutil

    out = {}
    for pid in list(pids):
        try:
            c = psutil.Process(pid).cpu_times()
            out[pid] = c.user + c.system + c.children_user + c.children_system
        except psutil.Error:
            pids.discard(pid)
    return out


def own_seconds(pids: set[int]) -> float:
    return sum(seconds_by_pid(pids).values())


class Background:
    """CPU (in cores) used by processes other than ours while a case runs (``cores``);
    ``own`` holds the CPU seconds each of ours used meanwhile."""

    def __init__(self, pids: Callable[[], set[int]]) -> None:
        self.pids = pids

    def __enter__(self) -> Background:
        self._own_pids = self.pids()
        self._t, self._busy = time.perf_counter(), _busy_seconds()
        self._own = seconds_by_pid(self._own_pids)
        return self

    def __exit__(self, *exc: object) -> None:
        dt = time.perf_counter() - self._t
        now = seconds_by_pid(self._own_pids | self.pids())
        self.own = {pid: t - self._own.get(pid, 0.0) for pid, t in now.items()}
        busy = _busy_seconds() - self._busy - sum(self.own.values())
        self.cores = max(0.0, busy / dt) if dt > 0 else 0.0


def wait_quiet(pids: Callable[[], set[int]], max_wait: float, threshold: float = 0.25) -> float:
    """Wait until other processes use less than ``threshold`` cores (over 0.5 s)."""
    deadline = time.monotonic() + max_wait
    while True:
        with Background(pids) as bg:
            time.sleep(0.5)
        if bg.cores < threshold or time.monotonic() > deadline:
            return bg.cores
