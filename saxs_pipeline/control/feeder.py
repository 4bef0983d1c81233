"""The feeder channel: "a new file is complete" events from a detector-side process to the
server.

Wire format (the original's): one single-frame message per complete file on a zmq PUB
socket, UTF-8 JSON ``{"command": "new file", "argument": "<path>"}``; the server's SUB
socket subscribes to everything. Messages are not signed (as in the original): the server
only hands the paths to the queue, which ignores anything outside its directory, anything
not matching its pattern, and anything already queued or done.

This module has both ends:

* :class:`FileWatcher` decides when a file is complete: inotify close-after-write and
  rename-into-the-tree events, or (``poll=True``, for network file systems) a scan that
  waits until size and mtime stay the same across two scans and the mtime is older than
  ``settle`` seconds. Files that only show up as "created" (moved in from outside the tree)
  get the same stability rule. A TIFF must also be as long as its header says.
* :class:`FeederPublisher` binds the PUB (an XPUB, so it can log subscribers joining) and
  sends each event once; ``replay`` is the original's simulator (publish existing files
  at an interval).
* :class:`FeederSubscriber` is the server's end: a thread that batches incoming paths and
  passes them to a callback.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from saxs_pipeline.frames.tiff import tiff_complete

__all__ = [
    "FeederPublisher",
    "FeederSubscriber",
    "FileWatcher",
    "decode_event",
    "encode_event",
    "iter_files",
    "relative_to",
    "replay",
]

log = logging.getLogger(__name__)

NEW_FILE = "new file"


def encode_event(path: str | os.PathLike[str]) -> bytes:
    """The message announcing the complete file ``path``."""
    return json.dumps({"command": NEW_FILE, "argument": os.fspath(path)}).encode("utf-8")


def decode_event(frame: bytes) -> str | None:
    """The path of a feeder message, None for anything else (logged)."""
    try:
        msg = json.loads(bytes(frame).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        log.warning("feeder: ignoring a message that is not UTF-8 JSON")
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("argument"), str):
        log.warning("feeder: ignoring a message without a path argument")
        return None
    if msg.get("command", NEW_FILE) != NEW_FILE:
        log.warning("feeder: ignoring command %r", msg.get("command"))
        return None
    return msg["argument"]


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatch(name, pattern)


def iter_files(directory: str | os.PathLike[str], pattern: str = "*.tif") -> Iterator[str]:
    """Matching files under ``directory`` in sorted order (symlinked dirs not followed)."""
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if _matches(name, pattern):
                yield os.path.join(root, name)


def _complete(path: str) -> bool:
    # A Pilatus frame knows its own length; other files rely on the stability rule alone.
    if path.lower().endswith((".tif", ".tiff")):
        return tiff_complete(path)
    return True


class FileWatcher:
    """Calls ``on_complete(path)`` once per completely written (or rewritten) file under
    ``directory`` whose name matches ``pattern``. Runs its own threads; ``stop()`` ends them.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        on_complete: Callable[[str], None],
        *,
        pattern: str = "*.tif",
        poll: bool = False,
        interval: float = 0.5,
        settle: float = 1.0,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.on_complete = on_complete
        self.pattern = pattern
        self.poll = poll
        self.interval = interval
        self.settle = settle
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # (size, mtime_ns) last announced per path: a rewrite announces again, a repeated
        # event for the same content does not. Repeats come within seconds, so the most
        # recent paths suffice; the bound keeps a long beamtime from growing this forever.
        self._announced: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.max_remembered = 200_000
        # Paths seen only as "created", waiting for a close or for the stability rule.
        self._pending: dict[str, tuple[int, int] | None] = {}
        self._threads: list[threading.Thread] = []
        self._observer: Any = None

    def start(self) -> None:
        if self.poll:
            self._spawn(self._poll_loop, "feeder-poll")
            return
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_closed(self, event):  # IN_CLOSE_WRITE: the writer is done
                if not event.is_directory:
                    watcher._announce(os.fsdecode(event.src_path))

            def on_moved(self, event):  # an atomic rename into (or inside) the tree
                if not event.is_directory:
                    watcher._announce(os.fsdecode(event.dest_path))

            def on_created(self, event):  # moved in from outside: no close will follow
                if not event.is_directory:
                    watcher._remember(os.fsdecode(event.src_path))

        self._observer = Observer()
        self._observer.schedule(Handler(), self.directory, recursive=True)
        self._observer.start()
        self._spawn(self._pending_loop, "feeder-settle")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)

    def _signature(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def _announce(self, path: str) -> None:
        if not _matches(os.path.basename(path), self.pattern):
            return
        sig = self._signature(path)
        if sig is None:
            return
        with self._lock:
            self._pending.pop(path, None)
            if self._announced.get(path) == sig:
                return
            self._announced[path] = sig
            self._announced.move_to_end(path)
            while len(self._announced) > self.max_remembered:
                self._announced.popitem(last=False)
        self.on_complete(path)

    def _remember(self, path: str) -> None:
        if _matches(os.path.basename(path), self.pattern):
            with self._lock:
                self._pending.setdefault(path, None)

    def _stable(self, path: str, previous: tuple[int, int] | None) -> tuple[bool, tuple[int, int] | None]:
        sig = self._signature(path)
        if sig is None:
            return False, None
        old_enough = time.time() - sig[1] / 1e9 >= self.settle
        return (sig == previous and old_enough and _complete(path)), sig

    def _pending_loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                items = list(self._pending.items())
            for path, previous in items:
                ok, sig = self._stable(path, previous)
                if ok:
                    self._announce(path)
                else:
                    with self._lock:
                        if path in self._pending:
                            if sig is None:
                                del self._pending[path]
                            else:
                                self._pending[path] = sig

    def _poll_loop(self) -> None:
        previous: dict[str, tuple[int, int]] = {}
        while not self._stop.is_set():
            current: dict[str, tuple[int, int]] = {}
            for path in iter_files(self.directory, self.pattern):
                sig = self._signature(path)
                if sig is None:
                    continue
                current[path] = sig
                with self._lock:
                    done = self._announced.get(path) == sig
                if done:
                    continue
                ok, _ = self._stable(path, previous.get(path))
                if ok:
                    self._announce(path)
            previous = current
            self._stop.wait(self.interval)


class FeederPublisher:
    """The PUB end: binds ``endpoint`` and publishes events from any thread (they go through
    a queue; only the thread running :meth:`run` touches the socket)."""

    def __init__(self, endpoint: str, *, context: zmq.Context | None = None) -> None:
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)  # a burst of a few thousand frames is normal
        if endpoint.startswith("tcp://["):
            self._sock.setsockopt(zmq.IPV6, 1)
        self._sock.bind(endpoint)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._events: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.published = 0
        self.subscribers = 0

    def publish(self, path: str) -> None:
        """Queue ``path`` for publishing (thread-safe)."""
        self._events.put(path)

    def stop(self) -> None:
        self._events.put(None)

    def run(self, stop: threading.Event | None = None) -> None:
        """Publish queued events until :meth:`stop` (or ``stop`` is set)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self._read_subscriptions()
            try:
                path = self._events.get(timeout=0.2)
            except queue.Empty:
                continue
            if path is None:
                break
            self._sock.send(encode_event(path))
            self.published += 1
            log.info("published %s", path)

    def _read_subscriptions(self) -> None:
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscribers += 1
                log.info("a subscriber joined (%d)", self.subscribers)
            elif msg[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)
                log.info("a subscriber left (%d)", self.subscribers)

    def close(self) -> None:
        self._sock.close()


def replay(
    publisher: FeederPublisher,
    directory: str | os.PathLike[str],
    *,
    pattern: str = "*.tif",
    interval: float = 7.0,
    cycles: int = 0,
    stop: threading.Event | None = None,
) -> None:
    """The original's simulator: publish the existing files one every ``interval`` seconds,
    cycling through them ``cycles`` times (0 = forever)."""
    stop = stop or threading.Event()
    files = list(iter_files(directory, pattern))
    if not files:
        log.warning("replay: no files matching %s in %s", pattern, directory)
        return
    done = 0
    while not stop.is_set() and (cycles <= 0 or done < cycles):
        for path in files:
            publisher.publish(os.path.abspath(path))
            if stop.wait(interval):
                return
        done += 1


class FeederSubscriber:
    """The server's end: a thread with a SUB socket connected to the feeder that passes each
    batch of announced paths to ``on_paths`` (exceptions there are logged, not fatal)."""

    def __init__(
        self,
        url: str,
        on_paths: Callable[[list[str]], None],
        *,
        context: zmq.Context | None = None,
        poll_ms: int = 200,
    ) -> None:
        self.url = url
        self.on_paths = on_paths
        self.poll_ms = poll_ms
        self._ctx = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder-subscriber", daemon=True)
        self.received = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        if self.url.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.url)
        log.info("subscribed to the feeder at %s", self.url)
        try:
            while not self._stop.is_set():
                if not sock.poll(self.poll_ms, zmq.POLLIN):
                    continue
                batch: list[str] = []
                while len(batch) < 10_000:
                    try:
                        frame = sock.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.received += 1
                    path = decode_event(frame)
                    if path is not None:
                        batch.append(path)
                if batch:
                    try:
                        self.on_paths(batch)
                    except Exception:
                        log.exception("feeder: handing %d path(s) to the queue failed", len(batch))
        finally:
            sock.close()


def relative_to(path: str, base: str | os.PathLike[str]) -> str:
    """``path`` joined onto ``base`` when relative (the original's resolution rule)."""
    return os.path.abspath(os.path.join(os.fspath(base), path))

