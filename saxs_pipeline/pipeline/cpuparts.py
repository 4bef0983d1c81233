"""The driver's CPU by part of a run: where a frame's cost goes in the driver process.

Parts, in the order a frame meets them: ``file event`` (the watcher, a walk, the stream
receiver), ``ledger`` (finding a file's frames and taking them in the ledger), ``batching``
(the dispatcher's line), ``submit`` (the client's ``submit``/``scatter`` calls),
``scheduler`` (the Dask event loop: an embedded scheduler, its nannies and the client's
messages), ``result`` (collecting results), ``stack row`` (the curve stack and its
flushes), ``live feed``. ``python -m benchmarks.pipeline`` prints them per frame.

Always on, because it is cheap: nothing is done per frame. A thread whose job is one part
says so once (:meth:`CpuParts.owned`) and its CPU clock is read when asked; a block of
another part inside such a thread (one per batch) is timed with ``time.thread_time`` and
moved to that part (:meth:`CpuParts.charge`). Threads that are not ours are counted by
what they do in the driver: the client's event loop (registered by the queue) is the
scheduler's, zarr's event loop and pool (``zarr_io``, ``asyncio_N``) work only for the
curve stack. A profiler was the other way: py-spy's samples here could not tell idle
threads from busy ones, and cProfile sees one thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

__all__ = ["DRIVER", "PARTS", "CpuParts"]

PARTS = ("file event", "ledger", "batching", "submit", "scheduler", "result", "stack row",
         "live feed")
_NAMED = (("zarr_io", "stack row"), ("asyncio_", "stack row"))  # zarr's threads


def _clock(ident: int) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


class CpuParts:
    """CPU seconds per part (see the module doc); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # ident -> [part, its CPU clock when it began working for the part, seconds of
        # its CPU since then charged to other parts]
        self._threads: dict[int, list] = {}
        self._seconds = dict.fromkeys(PARTS, 0.0)  # charged blocks, threads that ended

    @contextlib.contextmanager
    def owned(self, part: str) -> Iterator[None]:
        """The calling thread works for ``part`` inside the block (a no-op in a thread
        that is already some part's: a walk run inline)."""
        ident = threading.get_ident()
        with self._lock:
            mine = ident not in self._threads
            if mine:
                self._threads[ident] = [part, time.thread_time(), 0.0]
        try:
            yield
        finally:
            if mine:
                now = time.thread_time()
                with self._lock:
                    _, start, charged = self._threads.pop(ident)
                    self._seconds[part] += now - start - charged

    def adopt(self, part: str) -> None:
        """The calling thread (not ours: the client's event loop) works for ``part``
        for as long as it lives."""
        with self._lock:
            self._threads.setdefault(threading.get_ident(), [part, time.thread_time(), 0.0])

    @contextlib.contextmanager
    def charge(self, part: str) -> Iterator[None]:
        """The block's CPU counts for ``part``, not for the thread's own part."""
        t0 = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - t0
            with self._lock:
                self._seconds[part] += spent
                entry = self._threads.get(threading.get_ident())
                if entry is not None:
                    entry[2] += spent

    def seconds(self) -> dict[str, float]:
        """CPU seconds per part so far (threads alive now and those that ended)."""
        alive = {t.ident: t.name for t in threading.enumerate()}
        with self._lock:
            out = dict(self._seconds)
            threads = [(ident, *entry) for ident, entry in self._threads.items()]
        for ident, part, start, charged in threads:
            if ident in alive:
                out[part] += _clock(ident) - start - charged
        counted = {t[0] for t in threads}
        for ident, name in alive.items():
            if ident is None or ident in counted:
                continue
            part = next((p for prefix, p in _NAMED if name.startswith(prefix)), None)
            if part is not None:
                out[part] += _clock(ident)
        return out


DRIVER = CpuParts()  # one per process, like a logger: every queue's parts count here
