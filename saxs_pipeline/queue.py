"""The image queue: one run of frames through the cluster, composed of the parts in
:mod:`saxs_pipeline.pipeline` (sources -> ledger -> dispatcher -> task -> sinks). Used by
``saxsdog``, by the control server and from notebooks; its public methods are the
contract the server uses.

Exactly once per (file, frame): a frame is taken when the ledger says it is new (or
changed, or redone by ``readdir``), never twice at a time; the ledger commits it with its
curve-stack row. ``resume`` takes only frames not done (by the ledger, never by ``.chi``
existence). A task whose worker died is re-run by Dask under the same key; its ``.chi``
writes are atomic replaces and its stack row is the frame's own, so nothing doubles.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.integrator import Curve
from saxs_pipeline.io.calibration import Calibration, load_calibration
from saxs_pipeline.io.stacklayout import CurveSpec
from saxs_pipeline.naming import DEFAULT_RELPATH, OutputLayout, chi_path
from saxs_pipeline.ops.budget import check_budget
from saxs_pipeline.pipeline.cluster import ClusterLink
from saxs_pipeline.pipeline.dispatcher import Dispatcher, Job
from saxs_pipeline.pipeline.frames import FrameRef, fingerprint, matches
from saxs_pipeline.pipeline.ledger import State, Take, Why, wanted
from saxs_pipeline.pipeline.sinks import (
    FailureSink,
    FileListSink,
    HistorySink,
    StackSink,
    curves_of,
)
from saxs_pipeline.pipeline.sources import WalkSource, WatchSource
from saxs_pipeline.pipeline.store import RunStore
from saxs_pipeline.pipeline.task import FrameResult, TaskOptions
from saxs_pipeline.stats import PROGRESS_TOPIC, SaxsStats
from saxs_pipeline.worker import (
    PLUGIN_NAME,
    IntegratorPlugin,
    build_integrator,
    calibration_id,
    load_payload,
)

__all__ = ["ImageQueue", "QueueClosedError"]

log = logging.getLogger(__name__)


class QueueClosedError(RuntimeError):
    """The queue was closed or aborted and takes no more frames."""


class ImageQueue:
    """Integrate the frames of ``directory`` (readdir, watch, feeder) on the cluster of
    ``client`` (a :class:`distributed.Client` or a :class:`ClusterLink`)."""

    def __init__(
        self,
        client: Any,
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
        write_chi: bool = True,
        queue_id: str | None = None,
        with_std: bool | None = None,
        history_limit: int = 20_000,
        stable_time: float = 1.0,
        filelist_base: str | Path | None = None,
    ) -> None:
        directory = Path(os.path.abspath(os.fspath(directory)))
        if not directory.is_dir():
            what = "does not exist" if not directory.exists() else "is not a directory"
            raise FileNotFoundError(f"image directory {directory} {what}")
        self._own_link = not isinstance(client, ClusterLink)
        self.link = ClusterLink(client=client) if self._own_link else client
        self.queue_id = queue_id or uuid.uuid4().hex[:12]
        self.pattern, self.watch, self.poll, self.resume = pattern, watch, poll, resume
        self.stable_time = stable_time
        self.with_std = write_svg if with_std is None else bool(with_std)

        # Validate here, in the driver, before any worker or file is touched: a bad
        # calibration or mask fails at once with the file and JSON path named.
        self._calibration, self._attachments = load_payload(calibration, attachments)
        self._cal: Calibration = load_calibration(self._calibration)
        check_budget(self._cal)
        template = build_integrator(self._cal, self._attachments, with_std=self.with_std)
        self._templates: list[Curve] = template.integrate(np.zeros(template.shape, np.float32))
        del template  # the operators can be large; the workers hold their own
        self.calibration_id = calibration_id(self._calibration, self._attachments)

        self.layout = OutputLayout.make(directory, out_dir, relpath)
        self.zarr_path = Path(os.path.abspath(zarr_path)) if zarr_path else self.layout.stack()
        self.options = TaskOptions(write_chi=write_chi, keep_existing_chi=not self._cal.overwrite_files,
                                   write_svg=write_svg, write_png=write_png)
        self.plugin_name = f"{PLUGIN_NAME}-{self.queue_id}"
        self._filelist_base = filelist_base
        self.store: RunStore | None = None
        self.dispatcher = Dispatcher(self.link, self.queue_id, self.options, self._on_results,
                                     self._on_failed, batch_size=batch_size,
                                     max_in_flight=max_in_flight, retries=retries,
                                     retry_delay=retry_delay)
        self.history_sink = HistorySink([c.key for c in self._templates], history_limit)
        self._lock = threading.RLock()
        self._state = "new"  # new -> running -> closing -> closed (or aborted)
        self._aborted = False
        self._walks: list[WalkSource] = []
        self._watch: WatchSource | None = None
        self._sinks: list[Any] = []
        self._failures: FailureSink | None = None
        self._stack: StackSink | None = None
        self._tick_stop = threading.Event()
        self._tick: threading.Thread | None = None
        self.start_time = time.time()
        self.first_result: float | None = None
        self._processed = self._accepted = self._skipped = 0
        self._last_stats = (self.start_time, 0)

    # -- properties ------------------------------------------------------------------------

    calibration_dict = property(lambda self: self._calibration)
    attachments = property(lambda self: self._attachments)
    directory = property(lambda self: self.layout.directory)
    outputs_dir = property(lambda self: self.layout.root)
    closed = property(lambda self: self._state == "closed")
    aborted = property(lambda self: self._aborted)
    curve_keys = property(lambda self: [c.key for c in self._templates])

    @property
    def failures_log(self) -> Path:
        return self.layout.failures_log()

    def manifest(self) -> dict[str, Any]:
        """What a restarted server needs to run this queue again."""
        return {"calibration": self._calibration, "attachments": self._attachments,
                "directory": str(self.directory), "queue_id": self.queue_id,
                "start_time": self.start_time}

    # -- life cycle ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Take the stack's writer lock and open its ledger (StackLockedError names the
        run holding it). :meth:`start` does this when it was not done."""
        if self.store is not None:
            return
        specs = CurveSpec.from_curves(self._templates)
        self.store = RunStore.open(self.zarr_path, specs, self.calibration_id, self.manifest())
        self.zarr_path = self.store.stack

    def start(self) -> None:
        """Open the outputs, register the plugins, start the dispatcher and the watcher;
        with ``resume``, take again what the ledger has pending."""
        with self._lock:
            if self._state != "new":
                if self._state == "running":
                    return
                raise QueueClosedError(f"queue {self.queue_id} is {self._state}")
            self._state = "running"
        self.prepare()
        assert self.store is not None
        self.link.start()
        self.link.get()  # waits for a cluster still starting; raises when it cannot
        self.link.add_hook(self.plugin_name, self._register_plugins)
        writer = self.store.open_writer(self._calibration, CurveSpec.from_curves(self._templates))
        self._stack = StackSink(writer, self.store.ledger, self._templates)
        self._failures = FailureSink(self.store.ledger, self.failures_log, self.queue_id,
                                     self._stats_event)
        self._sinks = [self._stack, self.history_sink]
        if self._cal.live_filelisting:
            self._sinks.append(FileListSink(self.layout.filelist(self._filelist_base),
                                            self.directory, truncate=not self.resume))
        self.start_time = time.time()
        self._last_stats = (self.start_time, 0)
        self.dispatcher.start()
        self._tick = threading.Thread(target=self._ticker, name=f"saxs-tick-{self.queue_id}",
                                      daemon=True)
        self._tick.start()
        if self.resume:
            self._take_pending()
        if self.watch:
            self._watch = WatchSource(self.directory, self.pattern, self._offer, poll=self.poll,
                                      stable_time=self.stable_time).start()
        log.info("queue %s started on %s (outputs %s, stack %s)", self.queue_id, self.directory,
                 self.layout.root, self.zarr_path)

    def _register_plugins(self, client: Any) -> None:
        client.register_plugin(SaxsStats())
        client.register_plugin(IntegratorPlugin(self._calibration, self._attachments,
                                                queue_id=self.queue_id, with_std=self.with_std),
                               name=self.plugin_name)

    def _stats_event(self, record: dict[str, Any]) -> None:
        if self.link.status.connected:
            self.link.get(timeout=1).log_event(PROGRESS_TOPIC, {
                "queue": self.queue_id, "failed": 1, "time": record["time"]})

    def _ticker(self) -> None:
        while not self._tick_stop.wait(0.25):
            try:
                if self._stack is not None:
                    self._stack.tick()
            except Exception:
                log.exception("queue %s: flushing the curve stack failed", self.queue_id)

    def close(self, wait: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Stop taking frames (watcher, walks), finish what is queued, flush and commit
        the stack. With ``wait=False`` the finishing happens in the background. After
        ``timeout`` seconds, or at once while the scheduler is lost, what is left stays
        pending in the ledger (``--resume`` redoes it) and the queue closes."""
        with self._lock:
            start = self._state == "running"
            if start:
                self._state = "closing"
            elif self._state == "new":
                self._state = "closed"
        if start:
            self._stop_sources()
            finisher = threading.Thread(target=self._finish, args=(timeout,),
                                        name=f"saxs-close-{self.queue_id}", daemon=True)
            finisher.start()
            if wait:
                finisher.join()
        elif wait:
            self.dispatcher.wait_idle(0)
        return self.stats()

    def abort(self) -> dict[str, Any]:
        """Stop taking frames and drop everything queued (it stays pending in the
        ledger); tasks already running finish on their worker, results discarded."""
        with self._lock:
            if self._state in ("closed", "new"):
                self._state = "closed"
                return self.stats()
            self._aborted = True
            self._state = "closing"
        self._stop_sources()
        dropped = self.dispatcher.cancel_all()
        log.info("queue %s aborted: %d frame(s) dropped", self.queue_id, len(dropped))
        self._shutdown("aborted")
        return self.stats()

    def _stop_sources(self) -> None:
        for w in list(self._walks):
            w.stop()
        if self._watch is not None:
            self._watch.stop()

    def _finish(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.dispatcher.idle():
            if deadline is not None and time.monotonic() >= deadline:
                break
            status = self.link.status
            if not status.connected and time.time() - status.since > 2.0:
                break  # nothing finishes while the scheduler is gone: do not hang
            self.dispatcher.wait_idle(0.2)
        left = self.dispatcher.queue_length()
        if left:
            log.warning("queue %s: closing with %d frame(s) not integrated (%s); they stay "
                        "pending in %s: --resume completes them", self.queue_id, left,
                        self.link.status.describe(), self.store.ledger.path if self.store else "")
            self.dispatcher.cancel_all()
        self._shutdown("closed" if not left else "incomplete")

    def _shutdown(self, status: str) -> None:
        self.dispatcher.stop()
        self._tick_stop.set()
        if self._tick is not None:
            self._tick.join(5)
        try:
            if self.store is not None:
                self.store.close(status)
        finally:
            self.link.remove_hook(self.plugin_name)
            if self.link.status.connected:
                try:
                    self.link.get(timeout=1).unregister_worker_plugin(self.plugin_name)
                except Exception as exc:  # workers gone, client closing: nothing to clean up
                    log.debug("unregistering %s failed: %s", self.plugin_name, exc)
            if self._own_link:
                self.link.close()  # only the monitor: the client is the caller's
            with self._lock:
                self._state = "closed"
        log.info("queue %s %s: %s", self.queue_id, status, self._counts())

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every frame taken so far is finished (or failed) and no walk is
        running; True if so."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while any(w.running for w in self._walks) or not self.dispatcher.idle():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.dispatcher.wait_idle(0.1)
            time.sleep(0.02)
        return True

    # -- taking frames ---------------------------------------------------------------------

    def _offer(self, paths: list[str], why: Why) -> int:
        """The ledger's decision for offered paths; returns how many were taken."""
        with self._lock:
            if self._state != "running" or self.store is None:
                return 0
        refs: dict[FrameRef, tuple[str, Any, int | None]] = {}
        for p in paths:
            source = self.layout.source(p)
            if source is None or not matches(source, self.pattern):
                continue
            ref = FrameRef.of(source)
            path = self.layout.frame_path(ref)
            fp = fingerprint(path)
            if why is not Why.WALK and self.dispatcher.touch(ref, fp):
                continue  # on its way already; changed files are run once more after
            if self.dispatcher.active(ref):
                continue
            # a row given out but not yet committed (looked at before the ledger, which
            # gets the row only when it is committed)
            refs[ref] = (str(path), fp, self._stack.buffered_row(ref) if self._stack else None)
        known = self.store.ledger.lookup(refs)
        takes = [Take(ref, fp, self.layout.output(ref)) for ref, (_, fp, _) in refs.items()
                 if wanted(known.get(ref), fp, why, self._cal.overwrite_files)]
        refused = {r.ref: r.reason for r in self.store.ledger.take(takes)}
        jobs = []
        for t in takes:
            path, _, buffered = refs[t.ref]
            if t.ref in refused:
                assert self._failures is not None
                self._failures.fail(t.ref, refused[t.ref], 0, path)
                continue
            entry = known.get(t.ref)
            row = entry.row if entry is not None and entry.row is not None else buffered
            jobs.append(Job(t.ref, path, str(self.layout.basename(t.ref)), row=row,
                            fingerprint=t.fingerprint))
        self.dispatcher.put(jobs)
        with self._lock:
            self._accepted += len(jobs)
            self._skipped += len(refs) - len(takes)
        return len(jobs)

    def _take_pending(self) -> None:
        assert self.store is not None
        pending = self.store.ledger.entries(State.PENDING)
        if pending:
            log.info("queue %s: %d frame(s) pending in the ledger are taken again",
                     self.queue_id, len(pending))
            self._offer([str(self.layout.frame_path(e.ref)) for e in pending], Why.RESUME)

    def submit_paths(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Offer frames (feeder events, explicit files). Paths outside the directory, not
        matching the pattern, already on their way or done and unchanged are ignored.
        Returns the number taken."""
        with self._lock:
            if self._state != "running":
                return 0
        return self._offer([os.path.abspath(os.fspath(p)) for p in paths], Why.EVENT)

    def readdir(self, wait: bool = False, *, why: Why | None = None,
                since: float | None = None) -> None:
        """Walk the directory tree and offer every frame: "redo all images" (``why``
        WALK, also frames done before: rows and files are updated, not doubled), or with
        ``resume`` only those not done. In a background thread unless ``wait``."""
        with self._lock:
            if self._state != "running":
                raise QueueClosedError(f"queue {self.queue_id} is not taking frames "
                                       f"({self._state})")
            why = why or (Why.RESUME if self.resume else Why.WALK)
            if why is Why.WALK:
                self.history_sink.clear()
            root = self.layout.root
            walk = WalkSource(self.directory, self.pattern, self._offer, why,
                              wait_for_room=self.dispatcher.wait_for_room, since=since,
                              skip=root if root != self.directory else None)
            self._walks = [w for w in self._walks if w.running] + [walk]
        walk.run() if wait else walk.start()

    # -- results ---------------------------------------------------------------------------

    def _on_results(self, pairs: list[tuple[Job, FrameResult]]) -> None:
        ok = [(j, r) for j, r in pairs if r.status == "ok"]
        for sink in self._sinks:
            try:
                sink.add(ok)
            except Exception:
                log.exception("queue %s: %s failed", self.queue_id, type(sink).__name__)
        if self._failures is not None:
            self._failures.clear([j.ref for j, _ in ok])
        for job, r in pairs:
            if r.status != "ok":
                self._on_failed(job, r.error or r.status)
        with self._lock:
            if ok and self.first_result is None:
                self.first_result = time.time()
            self._processed += len(ok)

    def _on_failed(self, job: Job, reason: str) -> None:
        if self._failures is not None:
            self._failures.fail(job.ref, reason, job.attempt, job.path)

    # -- reading ---------------------------------------------------------------------------

    def _counts(self) -> str:
        failed = self._failures.count if self._failures else 0
        return (f"{self._processed} processed, {failed} failed, "
                f"{self.dispatcher.queue_length()} queued")

    def stats(self) -> dict[str, Any]:
        """The ``stat`` reply (the original's four keys first), plus frames per second
        since the previous call (``pics`` frames in ``time interval`` s), failures, frames
        skipped as done, and the cluster's state."""
        now = time.time()
        with self._lock:
            last_time, last_count = self._last_stats
            interval = max(now - last_time, 0.0)
            pics = self._processed - last_count
            self._last_stats = (now, self._processed)
            return {
                "images processed": self._processed,
                "queue length": self.dispatcher.queue_length(),
                "time": now,
                "start time": self.start_time,
                "frames per sec": pics / interval if interval > 0 else 0.0,
                "time interval": interval,
                "pics": pics,
                "failed": self._failures.count if self._failures else 0,
                "skipped": self._skipped,
                "cluster": self.link.status.describe(),
            }

    def progress(self) -> dict[str, Any]:
        """For progress bars: frames finished (processed or failed) of those taken, and
        whether a walk is still finding frames."""
        with self._lock:
            failed = self._failures.count if self._failures else 0
            return {"done": self._processed + failed, "total": self._accepted,
                    "walking": any(w.running for w in self._walks), "failed": failed,
                    "processed": self._processed, "skipped": self._skipped,
                    "queued": self.dispatcher.queue_length(),
                    "cluster": self.link.status}

    def latest(self) -> dict[str, Any] | None:
        """The last integrated frame: ``{"filename": output base name, "graphs": [...],
        "Image": frame path}``, or None before the first."""
        latest = self.history_sink.latest
        if latest is None or latest[1].curves is None:
            return None
        job, r = latest
        raw = self._calibration
        masks, slices = raw.get("Masks", []), raw.get("Slices", [])
        graphs = []
        for c in curves_of(self._templates, r.curves):
            conf = masks[c.calnum] if c.kind == "Radial" else slices[c.calnum - len(masks)]
            graphs.append(c.to_graph(raw, conf))
        return {"filename": job.output, "graphs": graphs, "Image": job.path}

    def history(self) -> dict[str, Any]:
        return self.history_sink.snapshot()

    def failures(self) -> list[dict[str, Any]]:
        """The frames of this run whose latest try failed, with the reason."""
        return self._failures.records() if self._failures is not None else []

    def fileslist(self) -> dict[str, list[str]]:
        """The ``.chi`` files of every frame in the curve stack, per curve
        (``{"Radial0": [...], "Slice2": [...]}``), ordered by base name."""
        from saxs_pipeline.io.stackread import read_frames

        if self._stack is not None and not self.closed:
            self._stack.writer.flush()
        try:
            refs = read_frames(self.zarr_path)
        except FileNotFoundError:
            refs = []
        bases = sorted(str(self.layout.basename(FrameRef.of(name, idx)))
                       for name, idx in refs)
        return {f"{t.kind}{t.calnum}": [str(chi_path(b, t.suffix())) for b in bases]
                for t in self._templates}

    def __enter__(self) -> ImageQueue:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()
