"""A run's rate over its busy time: from the first frame taken to the last frame done.

A rate over the whole run counts what is no work: a watching run's wait for its first
frame and after its last one (``0.2 frames/s`` for frames integrated at 40 per second),
and a start-up of nothing divided by almost nothing (``2133560.9 frames/s``). The busy
clock starts when the first frame is taken (handed to the cluster) and stops at the last
frame done; a pause of the detector between them still counts. With fewer than two frames
done, or no time between start and stop (all done in one instant), there is no rate to
tell: :meth:`BusyClock.rate` is None and :meth:`BusyClock.describe` says so.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

__all__ = ["BusyClock"]


@dataclass
class BusyClock:
    """When the first frame was taken, when the last was done, and how many were done
    (``time.monotonic`` seconds). Thread-safe: sources take, sinks count."""

    first_taken: float | None = None
    last_done: float | None = None
    done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def taken(self, now: float | None = None) -> None:
        """Frames were taken: the first call starts the clock."""
        if self.first_taken is None:
            with self._lock:
                if self.first_taken is None:
                    self.first_taken = time.monotonic() if now is None else now

    def finished(self, n: int, now: float | None = None) -> None:
        """``n`` frames were done (integrated) now."""
        if n <= 0:
            return
        t = time.monotonic() if now is None else now
        with self._lock:
            if self.first_taken is None:  # done without being seen taken: start here
                self.first_taken = t
            self.done += n
            self.last_done = t

    @property
    def busy(self) -> float:
        """Seconds from the first frame taken to the last done (0 before that)."""
        if self.first_taken is None or self.last_done is None:
            return 0.0
        return max(0.0, self.last_done - self.first_taken)

    def rate(self) -> float | None:
        """Frames done per busy second; None for fewer than two frames or no busy time."""
        busy = self.busy
        if self.done < 2 or busy <= 0.0:
            return None
        return self.done / busy

    def describe(self) -> str:
        """``"40.1 frames/s over 2.5 s busy"``, or why there is no rate."""
        rate = self.rate()
        if rate is None:
            return "frames/s n/a: fewer than 2 frames done" if self.done < 2 else \
                "frames/s n/a: all done at one instant"
        return f"{rate:.1f} frames/s over {self.busy:.1f} s busy"
