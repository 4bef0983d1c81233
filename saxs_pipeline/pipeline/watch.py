"""Watch a directory tree for new frames and report each complete one.

* **inotify** (default on Linux): a frame written in place is reported on ``closed``
  (IN_CLOSE_WRITE: after its last byte), one renamed inside the tree on ``moved`` (its
  destination). Files that only appear as ``created`` -- renamed in from outside the tree,
  or written into a new directory before its watch was installed -- go through the
  stability rule below, as do the contents of directories created or moved in.
* **polling** (``poll=True``, for NFS/SMB where inotify does not see other hosts' writes):
  ``created``/``modified`` fire on partial files, so every file goes through the stability
  rule.
* **stability rule**: the same ``(size, mtime)`` on ``stable_checks`` consecutive checks
  ``check_interval`` apart, and an mtime at least ``stable_time`` old.

Event handlers run on the observer thread and only put paths on queues; the stability
checks run on the watcher's own thread. Reported paths go to ``out`` (a ``queue.Queue``
the run drains). A path is reported again whenever its content changed since it was last
reported (size or mtime), so a file rewritten under the same name, or one that a stalled
writer finished later, comes back; the run ledger decides what to integrate again.
Unchanged repeats are suppressed by a bounded memory of what was reported.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from saxs_pipeline.pipeline.frames import matches

__all__ = ["FrameWatcher"]

log = logging.getLogger(__name__)

# Repeated events for an unchanged path come close together (created and closed, a
# directory moved in and then scanned); older repeats go to the run ledger, which decides. 10^5 paths held
# ~31 MB and filled for a whole 10^5-frame soak: the driver grew 6.7 % over its second
# half by watch, 1.0 % with this bound.
_REMEMBERED = 10_000


def _text(p: str | bytes) -> str:
    return os.fsdecode(p)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FrameWatcher) -> None:
        self.w = watcher

    def on_closed(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.w._report(_text(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        dest = _text(event.dest_path)
        if event.is_directory:
            self.w._candidates.put(("dir", dest))
        elif self.w.poll:
            self.w._candidates.put(("file", dest))
        else:
            self.w._report(dest)  # a rename is atomic: the file is complete

    def on_created(self, event: FileSystemEvent) -> None:
        kind = "dir" if event.is_directory else "file"
        self.w._candidates.put((kind, _text(event.src_path)))

    def on_modified(self, event: FileSystemEvent) -> None:
        if self.w.poll and not event.is_directory:
            self.w._candidates.put(("file", _text(event.src_path)))


class FrameWatcher:
    """Report complete new frames under ``directory`` to ``out`` (see the module doc)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        out: queue.Queue[str],
        *,
        pattern: str = "*.tif",
        poll: bool = False,
        poll_interval: float = 0.5,
        check_interval: float = 0.25,
        stable_time: float = 1.0,
        stable_checks: int = 2,
    ) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"watch directory {self.directory} does not exist")
        self.out = out
        self.pattern = pattern
        self.poll = poll
        self.poll_interval = poll_interval
        self.check_interval = check_interval
        self.stable_time = stable_time
        self.stable_checks = max(1, int(stable_checks))
        self._candidates: queue.Queue[tuple[str, str]] = queue.Queue()
        # path -> (size, mtime_ns, consecutive equal checks)
        self._tracked: dict[str, tuple[int, int, int]] = {}
        self._reported: OrderedDict[str, tuple[int, int]] = OrderedDict()  # path -> size, mtime
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Observer | PollingObserver | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._observer is not None:
            return
        handler = _Handler(self)
        if self.poll:
            observer = PollingObserver(timeout=self.poll_interval)
            observer.schedule(handler, self.directory, recursive=True)
        else:
            observer = Observer()
            # Only the events used: a 4 MB frame also fires a burst of modified events.
            observer.schedule(handler, self.directory, recursive=True, event_filter=[
                FileClosedEvent, FileMovedEvent, DirMovedEvent, FileCreatedEvent, DirCreatedEvent,
            ])
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="saxs-watch-stable", daemon=True)
        self._thread.start()
        log.info("watching %s for %s (%s)", self.directory, self.pattern,
                 "polling" if self.poll else "inotify")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; paths already reported stay on ``out``."""
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._observer is not None and not self._stop.is_set()

    # -- reporting -------------------------------------------------------------------------

    @staticmethod
    def _stamp(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def _known(self, path: str) -> bool:
        """True when ``path`` was reported before and has not changed since."""
        with self._lock:
            stamp = self._reported.get(path)
        return stamp is not None and stamp == self._stamp(path)

    def _report(self, path: str) -> None:
        if self._stop.is_set() or not matches(path, self.pattern):
            return
        stamp = self._stamp(path)
        with self._lock:
            if stamp is not None and self._reported.get(path) == stamp:
                return
            self._reported[path] = stamp if stamp is not None else (-1, -1)
            self._reported.move_to_end(path)
            if len(self._reported) > _REMEMBERED:
                self._reported.popitem(last=False)
        self.out.put(path)

    # -- the stability thread --------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            deadline = time.monotonic() + self.check_interval
            while (left := deadline - time.monotonic()) > 0:
                try:
                    kind, path = self._candidates.get(timeout=left)
                except queue.Empty:
                    break
                self._take(kind, path)
            try:
                self._check()
            except Exception:  # never let a bad stat kill the watcher
                log.exception("stability check failed")

    def _take(self, kind: str, path: str) -> None:
        if kind == "dir":
            # Files inside a directory created or moved in may have no events of their own.
            for root, _dirs, files in os.walk(path):
                for name in files:
                    self._track(os.path.join(root, name))
        else:
            self._track(path)

    def _track(self, path: str) -> None:
        if path in self._tracked or not matches(path, self.pattern) or self._known(path):
            return
        self._tracked[path] = (-1, -1, 0)

    def _check(self) -> None:
        if not self._tracked:
            return
        now_ns = time.time_ns()
        for path, (size, mtime, same) in list(self._tracked.items()):
            try:
                st = os.stat(path)
            except OSError:
                del self._tracked[path]  # deleted (or renamed away) before it settled
                continue
            if (st.st_size, st.st_mtime_ns) == (size, mtime):
                same += 1
            else:
                same = 0
            old_enough = now_ns - st.st_mtime_ns >= self.stable_time * 1e9
            if same >= self.stable_checks - 1 and old_enough and st.st_size > 0:
                del self._tracked[path]
                self._report(path)
            else:
                self._tracked[path] = (st.st_size, st.st_mtime_ns, same)
