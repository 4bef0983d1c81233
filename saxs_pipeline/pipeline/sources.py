"""Frame sources: they find frame files and offer their paths to the run, nothing more.

* :class:`WalkSource` -- a lazy, sorted walk of the run's directory (``readdir``, the
  start of a batch run, ``--resume``), which waits while the dispatcher's line is long so
  memory stays flat however many files the tree holds.
* :class:`WatchSource` -- new and rewritten files, from :class:`~saxs_pipeline.pipeline.watch.FrameWatcher`.
* the feeder and explicit paths call :meth:`saxs_pipeline.pipeline.queue.ImageQueue.submit_paths`.

An offer is ``offer(paths, why)``; the run's ledger decides what is new.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from saxs_pipeline.pipeline.frames import matches
from saxs_pipeline.pipeline.ledger import Why
from saxs_pipeline.pipeline.streamsource import StreamSource
from saxs_pipeline.pipeline.watch import FrameWatcher

__all__ = ["Offer", "SourceSet", "WalkSource", "WatchSource", "walk_files"]

log = logging.getLogger(__name__)

Offer = Callable[[list[str], Why], int]


def walk_files(directory: Path, skip: Path | None = None) -> Iterator[tuple[str, str]]:
    """(path, file name) of every file below ``directory`` in sorted order, lazily; hidden
    folders, curve stacks and ``skip`` are not entered."""
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".zarr")
                         and (skip is None or os.path.join(root, d) != str(skip)))
        for name in sorted(files):
            yield os.path.join(root, name), name


class WalkSource:
    """Walk ``directory`` once on a thread and offer every file matching ``pattern``, in
    sorted order (frames are processed and stacked in acquisition order). Hidden folders,
    curve stacks and ``skip`` (the outputs root, when it lies inside) are not entered.
    ``since``: only files modified at or after this time (a restarted server catching up
    with what arrived while it was down)."""

    def __init__(self, directory: Path, pattern: str, offer: Offer, why: Why, *,
                 wait_for_room: Callable[[threading.Event], None], skip: Path | None = None,
                 chunk: int = 16, since: float | None = None) -> None:
        self.directory, self.pattern, self.offer, self.why = directory, pattern, offer, why
        self.wait_for_room, self.skip, self.chunk, self.since = wait_for_room, skip, chunk, since
        self.stop_event = threading.Event()
        self.finished = threading.Event()  # run() returned (on its thread or inline)
        self.found = 0
        self.ignored = 0
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Not finished yet: also before :meth:`start` and while :meth:`run` runs inline."""
        return not self.finished.is_set()

    def start(self) -> WalkSource:
        self._thread = threading.Thread(target=self.run, name="saxs-walk", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _recent(self, path: str) -> bool:
        if self.since is None:
            return True
        try:
            return os.stat(path).st_mtime >= self.since
        except OSError:
            return False

    def run(self) -> None:
        try:
            chunk: list[str] = []
            for path, name in walk_files(self.directory, self.skip):
                if self.stop_event.is_set():
                    return
                if not matches(name, self.pattern):
                    self.ignored += 1
                    continue
                if not self._recent(path):
                    continue
                chunk.append(path)
                if len(chunk) >= self.chunk:
                    if not self._flush(chunk):
                        return
                    chunk = []
            if chunk:
                self._flush(chunk)
        except Exception:
            log.exception("walking %s failed", self.directory)
        finally:
            self.finished.set()
            if self.ignored:
                log.info("walk of %s: %d frame file(s); %d other file(s) do not match %r",
                         self.directory, self.found, self.ignored, self.pattern)

    def _flush(self, chunk: list[str]) -> bool:
        self.wait_for_room(self.stop_event)
        if self.stop_event.is_set():
            return False
        self.found += len(chunk)
        self.offer(chunk, self.why)
        return True


class WatchSource:
    """Offer every file the watcher reports (complete, new or rewritten) as an event."""

    def __init__(self, directory: Path, pattern: str, offer: Offer, *, poll: bool = False,
                 stable_time: float = 1.0) -> None:
        self.offer = offer
        self._events: queue_mod.Queue[str] = queue_mod.Queue()
        self.watcher = FrameWatcher(directory, self._events, pattern=pattern, poll=poll,
                                    stable_time=stable_time)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saxs-watch-offer", daemon=True)

    def start(self) -> WatchSource:
        self.watcher.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.watcher.stop()
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                paths = [self._events.get(timeout=0.25)]
            except queue_mod.Empty:
                continue
            while True:
                try:
                    paths.append(self._events.get_nowait())
                except queue_mod.Empty:
                    break
            try:
                self.offer(paths, Why.EVENT)
            except Exception:
                log.exception("offering %d watched file(s) failed", len(paths))


class SourceSet:
    """The run's sources while it takes frames: walks (one per ``readdir``) and the
    stream finish on their own; a watcher runs until stopped."""

    def __init__(self) -> None:
        self._finite: list[WalkSource | StreamSource] = []
        self._endless: list[WatchSource] = []
        self._lock = threading.Lock()

    def add(self, source: WalkSource | StreamSource | WatchSource) -> None:
        with self._lock:
            if isinstance(source, WatchSource):
                self._endless.append(source)
            else:
                self._finite = [s for s in self._finite if s.running] + [source]

    @property
    def finding(self) -> bool:
        """A walk or a stream is still finding frames."""
        with self._lock:
            return any(s.running for s in self._finite)

    def stop(self) -> None:
        with self._lock:
            sources = [*self._finite, *self._endless]
        for s in sources:
            s.stop()
