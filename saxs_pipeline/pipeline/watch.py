"""Watch a directory tree for new frames and report complete ones, in batches.

* **inotify** (default on Linux, through the ``inotify_simple`` binding): one thread reads
  the kernel's events a batch at a time. A frame written in place is complete at its
  close-write (after its last byte), one renamed into the tree -- from inside or from
  outside it -- at its arrival (a rename is atomic). A file that only appears as created
  (hard-linked in, written through an unnamed file) goes through the stability rule below
  unless its close-write comes first, as do the files of directories created or moved in
  (written before their watch was installed). Hidden directories and curve stacks
  (``*.zarr``) are not watched, as a walk does not enter them. When the kernel's queue
  overflowed, the whole tree is looked at again through the stability rule.
* **polling** (``poll=True``, for NFS/SMB where inotify does not see other hosts' writes;
  also where inotify is missing): watchdog's polling observer; ``created``/``modified``
  fire on partial files, so every file goes through the stability rule.
* **stability rule**: the same ``(size, mtime)`` on ``stable_checks`` consecutive checks
  ``check_interval`` apart, and an mtime at least ``stable_time`` old.

Complete paths go to ``report`` as a list, one call per batch of events (the run offers
them to its ledger at once). A path is reported again whenever its content changed since
it was last reported (size or mtime), so a file rewritten under the same name, or one that
a stalled writer finished later, comes back; the run ledger decides what to integrate
again. Unchanged repeats are suppressed by a bounded memory of what was reported.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from saxs_pipeline.pipeline.cpuparts import DRIVER
from saxs_pipeline.pipeline.frames import matches

try:  # Linux only; elsewhere the watcher polls
    from inotify_simple import Event as InotifyEvent
    from inotify_simple import INotify, flags
except ImportError:  # pragma: no cover - not Linux
    INotify = None

__all__ = ["FrameWatcher", "Report"]

log = logging.getLogger(__name__)

Report = Callable[[list[str]], None]

# Repeated events for an unchanged path come close together (created and closed, a
# directory moved in and then scanned); older repeats go to the run ledger, which decides. 10^5 paths held
# ~31 MB and filled for a whole 10^5-frame soak: the driver grew 6.7 % over its second
# half by watch, 1.0 % with this bound.
_REMEMBERED = 10_000

# Only what is used: a 4 MB frame written in pieces also makes a burst of modify events,
# which the kernel then does not queue at all.
_MASK = flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM | flags.CREATE | flags.ONLYDIR \
    | flags.EXCL_UNLINK


def _skipped(name: str) -> bool:
    """Directories a walk does not enter either: hidden ones and curve stacks."""
    return name.startswith(".") or name.endswith(".zarr")


class FrameWatcher:
    """Report complete new frames under ``directory`` to ``report`` (see the module doc)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        report: Report,
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
        self.report = report
        self.pattern = pattern
        self.poll = poll or INotify is None
        self.poll_interval = poll_interval
        self.check_interval = check_interval
        self.stable_time = stable_time
        self.stable_checks = max(1, int(stable_checks))
        # path -> (size, mtime_ns, consecutive equal checks)
        self._tracked: dict[str, tuple[int, int, int]] = {}
        self._reported: OrderedDict[str, tuple[int, int]] = OrderedDict()  # path -> size, mtime
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer = None  # watchdog's, when polling
        self._candidates: queue.Queue[tuple[str, str]] = queue.Queue()  # from the observer
        self._ino: INotify | None = None
        self._dirs: dict[int, str] = {}  # watch descriptor -> directory
        self._warned_watches = False

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.poll:
            self._start_polling()
            target = self._run_polling
        else:
            self._ino = INotify(nonblocking=True)
            self._add_tree(self.directory, scan=False)
            target = self._run_inotify
        self._thread = threading.Thread(target=target, name="saxs-watch", daemon=True)
        self._thread.start()
        log.info("watching %s for %s (%s)", self.directory, self.pattern,
                 "polling" if self.poll else "inotify")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching (a batch being reported is finished first)."""
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._ino is not None and not (self._thread and self._thread.is_alive()):
            self._ino.close()
            self._ino = None

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

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
        stamp = self._reported.get(path)
        return stamp is not None and stamp == self._stamp(path)

    def _emit(self, paths: list[str]) -> None:
        """Report the complete ``paths`` that are news (see the module doc)."""
        news = []
        for path in paths:
            stamp = self._stamp(path)
            if stamp is not None and self._reported.get(path) == stamp:
                continue
            self._reported[path] = stamp if stamp is not None else (-1, -1)
            self._reported.move_to_end(path)
            if len(self._reported) > _REMEMBERED:
                self._reported.popitem(last=False)
            news.append(path)
        if news and not self._stop.is_set():
            try:
                self.report(news)
            except Exception:  # the watcher outlives a failed offer; the ledger has the rest
                log.exception("reporting %d watched file(s) failed", len(news))

    # -- inotify ---------------------------------------------------------------------------

    def _run_inotify(self) -> None:
        assert self._ino is not None
        with DRIVER.owned("file event"):
            next_check = time.monotonic() + self.check_interval
            while not self._stop.is_set():
                try:
                    events = self._ino.read(timeout=int(self.check_interval * 1000))
                    complete = self._handle(events) if events else []
                    if self._tracked and time.monotonic() >= next_check:
                        next_check = time.monotonic() + self.check_interval
                        complete += self._check()
                    if complete:
                        self._emit(complete)
                except Exception:  # never let one bad batch end the watch
                    log.exception("watching %s failed for a batch of events", self.directory)
                    self._stop.wait(self.check_interval)

    def _handle(self, events: list[InotifyEvent]) -> list[str]:
        complete: list[str] = []
        for ev in events:
            if ev.mask & flags.Q_OVERFLOW:
                log.warning("%s: more events than the kernel queues; looking at the whole tree "
                            "again", self.directory)
                self._walk_tracked(self.directory)
                continue
            base = self._dirs.get(ev.wd)
            if base is None:
                continue
            if ev.mask & flags.IGNORED:  # the directory is gone
                del self._dirs[ev.wd]
                continue
            path = os.path.join(base, ev.name)
            if ev.mask & flags.ISDIR:
                if ev.mask & (flags.CREATE | flags.MOVED_TO) and not _skipped(ev.name):
                    self._add_tree(path, scan=True)
                elif ev.mask & flags.MOVED_FROM:
                    self._drop_tree(path)
            elif not matches(ev.name, self.pattern):
                continue
            elif ev.mask & (flags.CLOSE_WRITE | flags.MOVED_TO):
                self._tracked.pop(path, None)
                complete.append(path)
            elif ev.mask & flags.CREATE:
                self._track(path)
        return complete

    def _add_tree(self, top: str, *, scan: bool) -> None:
        """Watch ``top`` and the directories below it; with ``scan``, their files go
        through the stability rule (they may have been written before the watch)."""
        assert self._ino is not None
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not _skipped(d)]
            try:
                self._dirs[self._ino.add_watch(root, _MASK)] = root
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue  # gone again (or replaced by a file) before it was watched
                if not self._warned_watches:  # e.g. fs.inotify.max_user_watches reached
                    log.error("cannot watch %s (%s): frames written there are not seen; "
                              "use --poll or raise fs.inotify.max_user_watches", root, exc)
                    self._warned_watches = True
                continue
            if scan:
                for name in files:
                    if matches(name, self.pattern):
                        self._track(os.path.join(root, name))

    def _drop_tree(self, top: str) -> None:
        """A directory moved away: its watches go (a move within the tree adds them anew
        under the new name)."""
        assert self._ino is not None
        prefix = top + os.sep
        for wd, path in list(self._dirs.items()):
            if path == top or path.startswith(prefix):
                self._ino.rm_watch(wd)
                del self._dirs[wd]

    # -- polling ---------------------------------------------------------------------------

    def _start_polling(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers.polling import PollingObserver

        candidates = self._candidates

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # type: ignore[no-untyped-def]
                # every file event may be a partial file; a directory is walked when it
                # comes (created, moved in), not at each change of its listing
                kind = event.event_type
                if kind in ("created", "moved") or (kind == "modified" and not event.is_directory):
                    path = event.dest_path if kind == "moved" else event.src_path
                    candidates.put(("dir" if event.is_directory else "file", os.fsdecode(path)))

        observer = PollingObserver(timeout=self.poll_interval)
        observer.schedule(Handler(), self.directory, recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _run_polling(self) -> None:
        with DRIVER.owned("file event"):
            while not self._stop.is_set():
                deadline = time.monotonic() + self.check_interval
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        kind, path = self._candidates.get(timeout=left)
                    except queue.Empty:
                        break
                    if kind == "dir":
                        self._walk_tracked(path)
                    elif matches(path, self.pattern):
                        self._track(path)
                try:
                    complete = self._check()
                    if complete:
                        self._emit(complete)
                except Exception:  # never let a bad stat kill the watcher
                    log.exception("stability check failed")

    # -- the stability rule ----------------------------------------------------------------

    def _walk_tracked(self, top: str) -> None:
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not _skipped(d)]
            for name in files:
                if matches(name, self.pattern):
                    self._track(os.path.join(root, name))

    def _track(self, path: str) -> None:
        if path not in self._tracked and not self._known(path):
            self._tracked[path] = (-1, -1, 0)

    def _check(self) -> list[str]:
        """The tracked files that passed the stability rule now."""
        stable = []
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
                stable.append(path)
            else:
                self._tracked[path] = (st.st_size, st.st_mtime_ns, same)
        return stable
