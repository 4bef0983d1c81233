"""Where a run is in its life: new -> running -> closing -> closed, and whether it was
aborted on the way. One lock; each step is one transition, named for what the queue
does, so a run never starts twice nor takes frames while it closes.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["RunState"]


class RunState:
    """See the module doc. ``with state:`` holds its lock (no transition meanwhile)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.now = "new"
        self.aborted = False

    def __enter__(self) -> RunState:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()

    @property
    def closed(self) -> bool:
        return self.now == "closed"

    def taking(self) -> bool:
        """The run takes frames (it is running)."""
        with self._lock:
            return self.now == "running"

    def begin(self) -> str:
        """new -> running; returns the state before (any but new: nothing changed)."""
        with self._lock:
            was = self.now
            if was == "new":
                self.now = "running"
            return was

    def close(self) -> str:
        """running -> closing, new -> closed (never started); returns the state before."""
        with self._lock:
            was = self.now
            if was == "running":
                self.now = "closing"
            elif was == "new":
                self.now = "closed"
            return was

    def abort(self) -> bool:
        """running or closing -> closing, remembered as aborted: True; new or closed ->
        closed: False (nothing to abort)."""
        with self._lock:
            if self.now in ("closed", "new"):
                self.now = "closed"
                return False
            self.aborted = True
            self.now = "closing"
            return True

    def ended(self) -> None:
        """closing -> closed."""
        with self._lock:
            self.now = "closed"
