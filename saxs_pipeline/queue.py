"""The image queue: the driver object that turns a directory of frames into curves on a
Dask cluster. Used by ``saxsdog`` and by the control server.

Flow (three driver threads plus the optional watcher):

* **accepting**: :meth:`ImageQueue.submit_paths` (feeder events, the watcher) and
  :meth:`ImageQueue.readdir` (a lazy, sorted walk) put frame paths on the pending list.
  A path is taken once per queue (exactly once: repeated events are ignored); readdir
  takes every frame again ("Redo all images": rows and files are updated, never doubled).
* **submitting** (``saxs-submit`` thread): batches of frame paths become tasks with
  explicit keys ``("saxs-integrate", queue_id, seq)`` (never ``pure``: a reprocessed frame
  must run again). A full batch goes out whenever fewer than ``max_in_flight`` tasks are
  out; a partial one (live frames) only while a worker thread is idle, so frames that
  arrive while the cluster is busy gather into the next batch instead of costing one task
  each. The walker waits while the pending list is long: memory stays flat however many
  files the tree holds.
* **collecting** (``saxs-collect`` thread): finished tasks' small results go to the single
  zarr writer (one per queue: concurrent writers lose rows), the statistics, the history
  and the live file list. Frames still being written (``ImageIncompleteError`` on the
  worker) are retried after ``retry_delay * 2**k`` seconds; after ``retries`` retries that
  found the file no longer than before they are recorded as failed in ``failures.log``
  (JSON lines, beside the outputs) and in the stats. A task whose worker died is re-run by Dask under the same key; its ``.chi``
  writes are atomic replaces and its zarr row is keyed by the frame, so nothing doubles.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import json
import logging
import os
import queue as queue_mod
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, as_completed

from saxs_pipeline.integrator import Curve
from saxs_pipeline.io.calibration import Calibration, load_calibration
from saxs_pipeline.io.zarrstack import CurveSpec, CurveStackWriter, StackLayoutError
from saxs_pipeline.naming import (
    DEFAULT_RELPATH,
    chi_path,
    failures_log_path,
    filelist_entry,
    filelist_path,
    output_basename,
    outputs_dir,
    relative_frame,
    zarr_default_path,
)
from saxs_pipeline.stats import SaxsStats
from saxs_pipeline.watch import FrameWatcher, matches
from saxs_pipeline.worker import (
    PLUGIN_NAME,
    PROGRESS_TOPIC,
    TASK_PREFIX,
    CurveData,
    FrameOptions,
    FrameResult,
    IntegratorPlugin,
    build_integrator,
    calibration_id,
    load_payload,
    process_frames,
)

__all__ = ["ImageQueue", "QueueClosedError"]

log = logging.getLogger(__name__)

HISTORY_SECONDS = 100.0  # the original's "plot" history window
# Rows per curve-stack block (= chunk). The single writer spends ~0.5 ms CPU per row with
# 64-row blocks and ~0.16 ms with 256 (Pilatus curves; per-flush metadata writes
# dominate). A live queue's time-based flush of a partial block measured 34 ms with 256
# rows and 26 ms with 64, so 256 serves both.
ZARR_BLOCK_ROWS = 256


class QueueClosedError(RuntimeError):
    """The queue was closed or aborted and takes no more frames."""


@dataclass
class _Batch:
    key: tuple[str, str, int]
    frames: list[tuple[str, int]]  # (path, attempt number, 1 = first)
    future: Any = None


class _History:
    """Finish times of the last 100 s and the integral parameters per curve key (the
    ``plot`` reply), bounded to ``limit`` frames."""

    def __init__(self, keys: Sequence[str], limit: int) -> None:
        self.limit = limit
        self.keys = list(keys)
        self.clear()

    def clear(self) -> None:
        self.finished: collections.deque[float] = collections.deque(maxlen=self.limit)
        self.params = {
            k: {f: collections.deque(maxlen=self.limit) for f in ("time", "file", "I0", "I1", "I2")}
            for k in self.keys
        }

    def add(self, when: float, image_time: float | None, name: str, curves: Sequence[CurveData]) -> None:
        self.finished.append(when)
        for c in curves:
            entry = self.params.get(c.key)
            if entry is None:
                continue
            entry["time"].append(image_time)
            entry["file"].append(name)
            for k in ("I0", "I1", "I2"):
                entry[k].append(c.integparams.get(k, 0.0))

    def snapshot(self, now: float) -> dict[str, Any]:
        while self.finished and self.finished[0] < now - HISTORY_SECONDS:
            self.finished.popleft()
        return {
            "history": list(self.finished),
            "IntegralParameters": {k: {f: list(v) for f, v in e.items()} for k, e in self.params.items()},
        }


class ImageQueue:
    """Integrate every frame of ``directory`` (and, with ``watch``, every new one) on the
    cluster behind ``client``. See the module doc; the public methods are the contract the
    control server uses."""

    def __init__(
        self,
        client: Client,
        calibration: Mapping[str, Any] | str | Path,
        directory: str | Path,
        *,
        attachments: list[dict[str, Any]] | None = None,
        out_dir: str | Path | None = None,
        relpath: str = DEFAULT_RELPATH,
        pattern: str = "*.tif",
        watch: bool = False,
        poll: bool = False,
        resume: bool = False,
        zarr_path: str | Path | None = None,
        batch_size: int = 16,
        max_in_flight: int | None = None,
        retries: int = 5,
        retry_delay: float = 0.2,
        write_svg: bool = False,
        write_png: bool = False,
        queue_id: str | None = None,
        with_std: bool | None = None,
        history_limit: int = 20_000,
        stable_time: float = 1.0,
    ) -> None:
        directory = Path(os.path.abspath(os.fspath(directory)))
        if not directory.exists():
            raise FileNotFoundError(f"image directory {directory} does not exist")
        if not directory.is_dir():
            raise NotADirectoryError(f"image directory {directory} is not a directory")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.client = client
        self.queue_id = queue_id or uuid.uuid4().hex[:12]
        self._directory = directory
        self._dir_prefix = str(directory).rstrip(os.sep) + os.sep
        self.pattern = pattern
        self.watch, self.poll, self.resume = watch, poll, resume
        self.batch_size = int(batch_size)
        self.max_in_flight = max_in_flight
        self.retries, self.retry_delay = int(retries), float(retry_delay)
        self.stable_time = stable_time
        self.with_std = write_svg if with_std is None else bool(with_std)

        # Validate here, in the driver, so a bad calibration or mask fails at once with
        # the file and JSON path named, before any worker is involved.
        self._calibration, self._attachments = load_payload(calibration, attachments)
        self._cal: Calibration = load_calibration(self._calibration)
        template = build_integrator(self._cal, self._attachments, with_std=self.with_std)
        self._templates: list[Curve] = template.integrate(
            np.zeros(template.shape, dtype=np.float32))
        del template  # the operators can be large; the workers hold their own
        self.calibration_id = calibration_id(self._calibration, self._attachments)

        out = os.path.abspath(os.fspath(out_dir)) if out_dir else None
        self.outputs_dir = outputs_dir(directory, out, relpath)
        self.options = FrameOptions(
            directory=str(directory), out_dir=out, relpath=relpath,
            skip="all" if resume else ("never" if self._cal.overwrite_files else "any"),
            write_svg=write_svg, write_png=write_png,
        )
        self.zarr_path = (Path(os.path.abspath(os.fspath(zarr_path))) if zarr_path
                          else zarr_default_path(directory, out, relpath))
        self.failures_log = failures_log_path(directory, out, relpath)
        self.plugin_name = f"{PLUGIN_NAME}-{self.queue_id}"

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._events: queue_mod.Queue[str | None] = queue_mod.Queue()
        self._pending: collections.deque[tuple[str, int]] = collections.deque()
        self._known: set[int] = set()  # hashes of every path taken (exactly once)
        self._retry: dict[str, int] = {}  # path -> attempt number of its next try
        self._stalls: dict[str, tuple[int, int]] = {}  # path -> (tries without growth, size)
        self._retry_heap: list[tuple[float, int, str]] = []  # (due, tie-breaker, path)
        self._retry_order = itertools.count()
        self._in_flight: dict[tuple[str, str, int], _Batch] = {}
        self._in_flight_frames = 0
        self._seq = 0
        self._nthreads = 1
        self._nthreads_checked = 0.0

        self._accepting = False
        self._started = False
        self._closing = False
        self._closed = False
        self._aborted = False
        self._stop_threads = threading.Event()
        self._walk_stop = threading.Event()
        self._walkers: list[threading.Thread] = []
        self._threads: list[threading.Thread] = []
        self._watcher: FrameWatcher | None = None
        self._writer: CurveStackWriter | None = None
        self._ac: as_completed | None = None
        self._filelist: Path | None = None

        self.start_time = time.time()
        self._processed = 0  # integrated or skipped (the original counts skipped too)
        self._failed = 0
        self._accepted = 0
        self._walked = 0
        self._walking = 0
        self._last_stats = (self.start_time, 0)
        self._latest: FrameResult | None = None
        self._history = _History([c.key for c in self._templates], history_limit)
        self._failures: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)

    # -- properties ------------------------------------------------------------------------

    @property
    def calibration_dict(self) -> dict[str, Any]:
        return self._calibration

    @property
    def attachments(self) -> list[dict[str, Any]]:
        return self._attachments

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def aborted(self) -> bool:
        return self._aborted

    @property
    def curve_keys(self) -> list[str]:
        return [c.key for c in self._templates]

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Register the worker plugin and the stats plugin, open the curve stack, start the
        driver threads and, with ``watch``, the watcher."""
        with self._lock:
            if self._started:
                return
            if self._closed:
                raise QueueClosedError(f"queue {self.queue_id} is closed")
            self._started = True
        self.client.register_plugin(SaxsStats())
        self.client.register_plugin(
            IntegratorPlugin(self._calibration, self._attachments, queue_id=self.queue_id,
                             with_std=self.with_std),
            name=self.plugin_name,
        )
        self._writer = self._open_writer()
        self._filelist = self._open_filelist()
        self._refresh_nthreads(force=True)
        self._ac = as_completed(loop=self.client.loop, with_results=True)
        self._accepting = True
        self.start_time = time.time()
        self._last_stats = (self.start_time, 0)
        for name, target in (("saxs-submit", self._submit_loop), ("saxs-collect", self._collect_loop)):
            t = threading.Thread(target=target, name=f"{name}-{self.queue_id}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.watch:
            self._watcher = FrameWatcher(self._directory, self._events, pattern=self.pattern,
                                         poll=self.poll, stable_time=self.stable_time,
                                         is_known=self._is_known)
            self._watcher.start()
        log.info("queue %s started on %s (outputs %s, stack %s)", self.queue_id, self._directory,
                 self.outputs_dir, self.zarr_path)

    def _open_writer(self) -> CurveStackWriter:
        specs = CurveSpec.from_curves(self._templates)
        self.zarr_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return CurveStackWriter.open_or_create(self.zarr_path, self._calibration, specs,
                                                   block_rows=ZARR_BLOCK_ROWS)
        except StackLayoutError as exc:
            # A stack of another calibration is never overwritten: this queue gets its own.
            alt = self.zarr_path.with_name(f"{self.zarr_path.stem}-{self.calibration_id[:8]}.zarr")
            log.warning("%s; writing curves to %s instead", exc, alt)
            self.zarr_path = alt
            return CurveStackWriter.open_or_create(alt, self._calibration, specs,
                                                   block_rows=ZARR_BLOCK_ROWS)

    def _open_filelist(self) -> Path | None:
        if not self._cal.live_filelisting:
            return None
        path = filelist_path(self._directory)
        if not path.parent.is_dir():
            return None  # the original's rule: only when <parent>/results exists
        if not self.resume:
            path.write_text("")  # a new queue starts a new list, as the original's "new"
        return path

    def close(self, wait: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Stop accepting (watcher, feeder, walks), finish what is queued, flush the curve
        stack. With ``wait=False`` the finishing happens in the background. After
        ``timeout`` seconds what is left is cancelled as by :meth:`abort`."""
        with self._lock:
            if self._closing or self._closed:
                finisher = None
            else:
                self._closing = True
                self._accepting = False
                finisher = threading.Thread(target=self._finish, args=(timeout,),
                                            name=f"saxs-close-{self.queue_id}", daemon=True)
        if finisher is not None:
            self._stop_sources()
            finisher.start()
            self._threads.append(finisher)
        if wait:
            for t in list(self._threads):
                if t is not threading.current_thread():
                    t.join()
        return self.stats()

    def abort(self) -> dict[str, Any]:
        """Stop accepting, cancel everything queued; tasks already running finish on their
        worker (their ``.chi`` files appear) but their results are discarded."""
        with self._lock:
            if self._closed:
                return self.stats()
            self._aborted = True
            self._closing = True
            self._accepting = False
            self._pending.clear()
            self._retry.clear()
            self._retry_heap.clear()
            self._stalls.clear()
            futures = [b.future for b in self._in_flight.values() if b.future is not None]
            dropped = sum(len(b.frames) for b in self._in_flight.values())
            self._in_flight.clear()
            self._in_flight_frames = 0
            self._cond.notify_all()
        self._stop_sources()
        if futures:
            self.client.cancel(futures, reason="saxs_pipeline abort")
        log.info("queue %s aborted: %d queued task(s) cancelled (%d frames)", self.queue_id,
                 len(futures), dropped)
        self._shutdown()
        return self.stats()

    def _stop_sources(self) -> None:
        self._walk_stop.set()
        with self._lock:
            self._cond.notify_all()  # a walker waiting for room in the pending list
        if self._watcher is not None:
            self._watcher.stop()
        for t in list(self._walkers):
            t.join()

    def _finish(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._idle():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(0.5 if left is None else min(left, 0.5))
            idle = self._idle()
        if not idle:
            log.warning("queue %s: close timed out with %d frame(s) left; cancelling them",
                        self.queue_id, self._queue_length())
            self.abort()
            return
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_threads.set()
        self._events.put(None)
        me = threading.current_thread()
        for t in self._threads:
            if t is not me and t.name.startswith(("saxs-submit", "saxs-collect")):
                t.join(10)
        if self._writer is not None:
            self._writer.close()
        if self._started:
            try:
                self.client.unregister_worker_plugin(self.plugin_name)
            except Exception as exc:  # workers gone, client closing: nothing to clean up
                log.debug("unregistering %s failed: %s", self.plugin_name, exc)
        log.info("queue %s closed: %s", self.queue_id, self._counts())

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every frame taken so far is finished (or failed); True if so."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not (self._idle() and self._walking == 0):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.2 if left is None else min(left, 0.2))
        return True

    # -- accepting frames ------------------------------------------------------------------

    def _is_known(self, path: str) -> bool:
        return hash(os.path.abspath(path)) in self._known

    def _take(self, path: str | os.PathLike[str], force: bool = False) -> bool:
        """Put ``path`` on the pending list (caller holds the lock)."""
        p = os.path.abspath(os.fspath(path))
        if not p.startswith(self._dir_prefix) or not matches(p, self.pattern):
            return False
        h = hash(p)
        if p in self._retry:
            self._schedule_retry(p, self._retry[p], 0.0)  # a new event: try it now
            return False
        if h in self._known and not force:
            return False
        self._known.add(h)
        self._pending.append((p, 1))
        self._accepted += 1
        return True

    def submit_paths(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Queue frames (feeder events, a watcher). Paths outside the directory, not
        matching the pattern, or already taken by this queue are ignored. Returns the
        number taken."""
        n = 0
        with self._lock:
            if not self._accepting:
                return 0
            for p in paths:
                n += self._take(p)
        if n:
            self._events.put(None)
        return n

    def readdir(self, wait: bool = False) -> None:
        """Walk the directory tree and queue every frame, also frames done before ("Redo
        all images": their files and rows are updated, not doubled). The walk runs in a
        background thread unless ``wait``; it pauses while enough work is pending."""
        with self._lock:
            if not self._accepting:
                raise QueueClosedError(f"queue {self.queue_id} is not accepting frames "
                                       f"({'closed' if self._closing else 'not started'})")
            self._history.clear()
            self._walking += 1
        if wait:
            self._walk()
            return
        t = threading.Thread(target=self._walk, name=f"saxs-walk-{self.queue_id}", daemon=True)
        self._walkers.append(t)
        t.start()

    def _high_water(self) -> int:
        return max(self._max_in_flight() * self.batch_size, 4 * self.batch_size)

    def _walk(self) -> None:
        try:
            chunk: list[str] = []
            for root, dirs, files in os.walk(self._directory):
                if self._walk_stop.is_set():
                    return
                # Curve stacks (thousands of chunk files) and hidden folders hold no frames.
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".zarr"))
                # Sorted so frames are processed (and stacked) in acquisition order.
                for name in sorted(files):
                    if not matches(name, self.pattern):
                        continue
                    chunk.append(os.path.join(root, name))
                    if len(chunk) >= self.batch_size:
                        if not self._enqueue_walked(chunk):
                            return
                        chunk = []
            if chunk:
                self._enqueue_walked(chunk)
        except Exception:
            log.exception("queue %s: walking %s failed", self.queue_id, self._directory)
        finally:
            with self._lock:
                self._walking -= 1
                self._cond.notify_all()

    def _enqueue_walked(self, chunk: list[str]) -> bool:
        with self._lock:
            while len(self._pending) >= self._high_water() and not self._walk_stop.is_set():
                self._cond.wait(0.5)
            if self._walk_stop.is_set() or not self._accepting:
                return False
            for p in chunk:
                if self._take(p, force=True):
                    self._walked += 1
        self._events.put(None)
        return True

    # -- submitting ------------------------------------------------------------------------

    def _refresh_nthreads(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._nthreads_checked < 2.0:
            return
        self._nthreads_checked = now
        try:
            self._nthreads = max(1, sum(self.client.nthreads().values()))
        except Exception as exc:  # a scheduler hiccup: keep the last value
            log.debug("nthreads unavailable: %s", exc)

    def _max_in_flight(self) -> int:
        return self.max_in_flight or max(8, 4 * self._nthreads)

    def _submit_loop(self) -> None:
        while not self._stop_threads.is_set():
            with self._lock:
                timeout = 0.5
                if self._retry_heap:
                    timeout = min(timeout, max(0.0, self._retry_heap[0][0] - time.monotonic()))
            paths = self._drain_events(timeout)
            try:
                if paths:
                    self.submit_paths(paths)
                self._refresh_nthreads()
                self._submit_ready()
            except Exception:
                log.exception("queue %s: submitting failed", self.queue_id)

    def _drain_events(self, timeout: float) -> list[str]:
        """Paths from the watcher (None items only wake the loop up)."""
        try:
            items = [self._events.get(timeout=timeout)]
        except queue_mod.Empty:
            return []
        while True:
            try:
                items.append(self._events.get_nowait())
            except queue_mod.Empty:
                return [i for i in items if i]

    def _due_retries(self) -> None:
        now = time.monotonic()
        while self._retry_heap and self._retry_heap[0][0] <= now:
            _, _, path = heapq.heappop(self._retry_heap)
            attempt = self._retry.pop(path, None)
            if attempt is not None:
                self._pending.appendleft((path, attempt))

    def _next_batch(self) -> _Batch | None:
        """Take the next batch off the pending list (caller holds the lock)."""
        if not self._pending or len(self._in_flight) >= self._max_in_flight():
            return None
        if len(self._pending) < self.batch_size and len(self._in_flight) >= self._nthreads:
            return None  # every worker thread is busy: let live frames gather
        n = min(self.batch_size, len(self._pending))
        frames = [self._pending.popleft() for _ in range(n)]
        self._seq += 1
        batch = _Batch((TASK_PREFIX, self.queue_id, self._seq), frames)
        self._in_flight[batch.key] = batch
        self._in_flight_frames += n
        self._cond.notify_all()  # the walker may add more now
        return batch

    def _submit_ready(self) -> None:
        while True:
            with self._lock:
                self._due_retries()
                if self._aborted:
                    return
                batch = self._next_batch()
            if batch is None:
                return
            future = self.client.submit(
                process_frames, self.queue_id, [p for p, _ in batch.frames], self.options,
                key=batch.key, pure=False, retries=1,
            )
            with self._lock:
                if batch.key not in self._in_flight:  # aborted meanwhile
                    future.cancel()
                    continue
                batch.future = future
            assert self._ac is not None
            self._ac.add(future)

    # -- collecting ------------------------------------------------------------------------

    def _collect_loop(self) -> None:
        ac = self._ac
        assert ac is not None and self._writer is not None
        while not self._stop_threads.is_set():
            with ac.thread_condition:
                if not ac.has_ready():
                    ac.thread_condition.wait(0.25)
            try:
                done = ac.next_batch(block=False)
                for future, result in done:
                    self._handle(future, result)
                if done:
                    self._events.put(None)  # slots are free: wake the submitter
                self._writer.maybe_flush()
            except Exception:
                log.exception("queue %s: collecting results failed", self.queue_id)

    def _handle(self, future: Any, result: Any) -> None:
        with self._lock:
            batch = self._in_flight.pop(future.key, None)
            if batch is None:
                return  # cancelled by abort
            self._in_flight_frames -= len(batch.frames)
        attempts = dict(batch.frames)
        if future.status != "finished":
            err = result[1] if isinstance(result, tuple) and len(result) == 3 else result
            message = f"task {future.status}: {err!r}"
            for path, attempt in batch.frames:
                self._fail(path, message, attempt)
        else:
            self._record(result, attempts)
        with self._lock:
            self._cond.notify_all()

    def _record(self, results: Sequence[FrameResult], attempts: Mapping[str, int]) -> None:
        assert self._writer is not None
        lines: list[str] = []
        for r in results:
            attempt = attempts.get(r.path, 1)
            if r.status == "incomplete":
                self._incomplete(r, attempt)
                continue
            with self._lock:
                self._stalls.pop(r.path, None)
            if r.status == "error":
                self._fail(r.path, r.error or "error", attempt)
                continue
            if r.status == "ok" and r.curves is not None:
                rel = relative_frame(r.path, self._directory)
                self._writer.add(rel, self._curves(r.curves), r.image_time, r.processed_time)
                lines.extend(self._filelist_lines(r))
                with self._lock:
                    self._history.add(time.time(), r.image_time, r.basename, r.curves)
                    self._latest = r
            elif r.status == "skipped":
                lines.extend(self._filelist_lines(r))
            with self._lock:
                self._processed += 1
        if lines and self._filelist is not None:
            with open(self._filelist, "a") as fh:
                fh.write("".join(line + "\n" for line in lines))

    def _incomplete(self, r: FrameResult, attempt: int) -> None:
        """Retry a frame still being written. Only tries that found the file no longer
        than the try before count against ``retries`` (the first counts too): a slow
        detector that keeps writing is waited for, a file that stopped growing fails
        after ``retries`` more tries."""
        with self._lock:
            stalls, last_size = self._stalls.get(r.path, (0, -1))
            size = r.size if r.size is not None else -1
            stalls = 0 if (last_size >= 0 and size > last_size) else stalls + 1
            if stalls <= self.retries:
                self._stalls[r.path] = (stalls, size)
                self._schedule_retry(r.path, attempt + 1, self.retry_delay * 2 ** max(stalls - 1, 0))
                return
            self._stalls.pop(r.path, None)
        self._fail(r.path, r.error or "incomplete", attempt)

    def _filelist_lines(self, r: FrameResult) -> list[str]:
        if self._filelist is None:
            return []
        params = [c.integparams for c in r.curves] if r.curves else [{}] * len(r.chi)
        return [filelist_entry(chi, self._directory, p) for chi, p in zip(r.chi, params, strict=False)]

    def _schedule_retry(self, path: str, attempt: int, delay: float) -> None:
        self._retry[path] = attempt
        heapq.heappush(self._retry_heap, (time.monotonic() + delay, next(self._retry_order), path))
        self._events.put(None)

    def _fail(self, path: str, error: str, attempts: int) -> None:
        record = {"file": path, "error": error, "attempts": attempts, "time": time.time()}
        with self._lock:
            self._failed += 1
            self._failures.append(record)
            self._stalls.pop(path, None)
        log.warning("queue %s: %s failed after %d attempt(s): %s", self.queue_id, path, attempts, error)
        try:
            self.failures_log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.failures_log, "a") as fh:
                fh.write(json.dumps(dict(record, queue=self.queue_id)) + "\n")
        except OSError as exc:
            log.error("cannot write %s: %s", self.failures_log, exc)
        try:
            self.client.log_event(PROGRESS_TOPIC, {"queue": self.queue_id, "failed": 1,
                                                   "time": record["time"]})
        except Exception as exc:  # the stats are informative; the log file is the record
            log.debug("stats event failed: %s", exc)

    def _curves(self, data: Sequence[CurveData]) -> list[Curve]:
        by_key = {c.key: c for c in self._templates}
        out = []
        for d in data:
            t = by_key[d.key]
            out.append(Curve(t.kind, t.calnum, t.radial, d.mean, d.poisson, d.std, d.integparams,
                             t.labels, t.phi))
        return out

    # -- reading ---------------------------------------------------------------------------

    def _idle(self) -> bool:
        return not self._pending and not self._in_flight and not self._retry

    def _queue_length(self) -> int:
        return len(self._pending) + self._in_flight_frames + len(self._retry)

    def _counts(self) -> str:
        return f"{self._processed} processed, {self._failed} failed, {self._queue_length()} queued"

    def stats(self) -> dict[str, Any]:
        """The ``stat`` reply: frames processed (integrated or skipped), queue length
        (pending, running and waiting for a retry), times, and frames per second since the
        previous call (``pics`` frames in ``time interval`` seconds)."""
        now = time.time()
        with self._lock:
            last_time, last_count = self._last_stats
            interval = max(now - last_time, 0.0)
            pics = self._processed - last_count
            self._last_stats = (now, self._processed)
            return {
                "images processed": self._processed,
                "queue length": self._queue_length(),
                "time": now,
                "start time": self.start_time,
                "frames per sec": pics / interval if interval > 0 else 0.0,
                "time interval": interval,
                "pics": pics,
                "failed": self._failed,
            }

    def progress(self) -> dict[str, Any]:
        """For progress bars: frames finished (processed or failed) of those taken, and
        whether a walk is still finding frames."""
        with self._lock:
            return {"done": self._processed + self._failed, "total": self._accepted,
                    "walking": self._walking > 0, "failed": self._failed}

    def latest(self) -> dict[str, Any] | None:
        """The last integrated frame: ``{"filename": output base name, "graphs": [...],
        "Image": frame path}``, or None before the first."""
        with self._lock:
            r = self._latest
        if r is None or r.curves is None:
            return None
        raw = self._calibration
        masks, slices = raw.get("Masks", []), raw.get("Slices", [])
        graphs = []
        for c in self._curves(r.curves):
            conf = masks[c.calnum] if c.kind == "Radial" else slices[c.calnum - len(masks)]
            graphs.append(c.to_graph(raw, conf))
        return {"filename": r.basename, "graphs": graphs, "Image": r.path}

    def history(self) -> dict[str, Any]:
        with self._lock:
            return self._history.snapshot(time.time())

    def failures(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._failures)

    def fileslist(self) -> dict[str, list[str]]:
        """The ``.chi`` files of every frame in the curve stack, per curve
        (``{"Radial0": [...], "Slice2": [...]}``), ordered by base name."""
        import zarr

        if self._writer is not None and not self._closed:
            self._writer.flush()
        try:
            root = zarr.open_group(self.zarr_path, mode="r", use_consolidated=False)
            n = int(root.attrs["n_valid"])
            names = [str(x) for x in root["filename"][:n]]
        except (FileNotFoundError, KeyError):
            names = []
        bases = sorted(
            str(output_basename(self._directory / rel, self._directory, self.options.out_dir,
                                self.options.relpath))
            for rel in names
        )
        return {
            f"{t.kind}{t.calnum}": [str(chi_path(b, t.suffix())) for b in bases]
            for t in self._templates
        }

    def __enter__(self) -> ImageQueue:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()
