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

from saxs_pipeline.live.feed import LiveFeed, calibration_summary
from saxs_pipeline.live.plugin import SaxsLive
from saxs_pipeline.pipeline import heap
from saxs_pipeline.pipeline.cluster import ClusterLink
from saxs_pipeline.pipeline.cpuparts import DRIVER
from saxs_pipeline.pipeline.dispatcher import Dispatcher
from saxs_pipeline.pipeline.finder import FrameFinder
from saxs_pipeline.pipeline.frames import FrameAt
from saxs_pipeline.pipeline.jobs import Job
from saxs_pipeline.pipeline.ledger import Why
from saxs_pipeline.pipeline.naming import DEFAULT_RELPATH, OutputLayout
from saxs_pipeline.pipeline.nospace import DiskGuard
from saxs_pipeline.pipeline.preflight import check_run
from saxs_pipeline.pipeline.sinks import (
    FailureSink,
    FileListSink,
    HistorySink,
    NonfiniteSink,
    StackSink,
)
from saxs_pipeline.pipeline.sources import SourceSet, WalkSource, WatchSource
from saxs_pipeline.pipeline.status import RunStatus
from saxs_pipeline.pipeline.store import RunStore, stack_fileslist
from saxs_pipeline.pipeline.streamsource import StreamSource
from saxs_pipeline.pipeline.taker import Taker
from saxs_pipeline.pipeline.tasktypes import FrameResult, TaskOptions
from saxs_pipeline.plugins.stats import PROGRESS_TOPIC, SaxsStats
from saxs_pipeline.plugins.worker import PLUGIN_NAME, IntegratorPlugin, prepare
from saxs_pipeline.stack.layout import CurveSpec
from saxs_pipeline.stream.messages import DEFAULT_MAX_IMAGES

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
        batch_size: int = 32,
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
        dataset: str | None = None,
        stream: str | None = None,
        stream_series: int | None = None,
        stream_idle: float = 5.0,
        stream_max_images: int = DEFAULT_MAX_IMAGES,
        nxcansas: str | None = None,
        data_roots: Iterable[str | os.PathLike[str]] = (),
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

        p = prepare(calibration, attachments, with_std=self.with_std)
        self._calibration, self._attachments, self._cal = p.calibration, p.attachments, p.parsed
        self._templates, self.calibration_id = p.templates, p.id
        self._corrections, self._normalisation = p.corrections, p.normalisation

        self.layout = OutputLayout.make(directory, out_dir, relpath)
        self.finder = FrameFinder(self.layout, pattern, dataset,
                                  [os.path.abspath(os.fspath(r)) for r in data_roots],
                                  task_frames=batch_size)
        self.zarr_path = Path(os.path.abspath(zarr_path)) if zarr_path else self.layout.stack()
        self.options = TaskOptions(write_chi=write_chi, keep_existing_chi=not self._cal.overwrite_files,
                                   write_svg=write_svg, write_png=write_png, dataset=dataset,
                                   data_roots=tuple(self.link.path_map.to_worker(r)
                                                    for r in self.finder.roots))
        self.plugin_name = f"{PLUGIN_NAME}-{self.queue_id}"
        self._filelist_base = filelist_base
        self.store: RunStore | None = None
        self.dispatcher = Dispatcher(self.link, self.queue_id, self.options, self._on_results,
                                     self._on_failed, batch_size=batch_size,
                                     max_in_flight=max_in_flight, retries=retries,
                                     retry_delay=retry_delay, want_picture=self._picture_due)
        self.history_sink = HistorySink([c.key for c in self._templates], history_limit)
        self._lock = threading.RLock()
        self._state = "new"  # new -> running -> closing -> closed (or aborted)
        self._aborted = False
        self.disk = DiskGuard(self.layout.root, self.zarr_path, self.abort, self.queue_id)
        self.sources = SourceSet()
        self.stream, self._stream_series, self._stream_idle = stream, stream_series, stream_idle
        self._stream_max_images = stream_max_images
        self._stream_source: StreamSource | None = None
        self.taker: Taker | None = None
        self.nxcansas = nxcansas  # layout of the NXcanSAS file written at the end, or None
        self._sinks: list[Any] = []
        self._failures: FailureSink | None = None
        self._stack: StackSink | None = None
        self.live: LiveFeed | None = None  # the page's and the metrics' data, to the scheduler
        self.status = RunStatus(self.dispatcher, self.link, lambda: self.sources.finding)

    # -- properties ------------------------------------------------------------------------

    calibration_dict = property(lambda self: self._calibration)
    start_time = property(lambda self: self.status.start_time)
    first_result = property(lambda self: self.status.first_result)
    attachments = property(lambda self: self._attachments)
    directory = property(lambda self: self.layout.directory)
    outputs_dir = property(lambda self: self.layout.root)
    closed = property(lambda self: self._state == "closed")
    stopped = property(lambda self: self.disk.message)  # why it stopped by itself (full disk)
    aborted = property(lambda self: self._aborted)
    curve_keys = property(lambda self: [c.key for c in self._templates])
    failures_log = property(lambda self: self.layout.failures_log())

    @property
    def stream_failure(self) -> str | None:
        """Why the stream receiver stopped by itself (None: no stream, running, or ended
        as asked)."""
        return self._stream_source.failure if self._stream_source is not None else None

    def manifest(self) -> dict[str, Any]:
        """What a restarted server needs to run this queue again."""
        return {"calibration": self._calibration, "attachments": self._attachments,
                "directory": str(self.directory), "queue_id": self.queue_id,
                "start_time": self.start_time}

    def _picture_due(self) -> bool:
        """The live page's frame picture: asked of a task now and then (the feed decides)."""
        live = self.live
        return live is not None and live.picture_due()

    # -- life cycle ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Check what needs no cluster (:func:`.preflight.check_run`), take the stack's
        writer lock and open its ledger (StackLockedError names the run holding it).
        :meth:`start` does this when it was not done."""
        if self.store is not None:
            return
        check_run(self.layout, self.pattern, self.options.dataset)
        specs = CurveSpec.from_curves(self._templates)
        self.store = RunStore.open(self.zarr_path, specs, self.calibration_id, self.manifest())
        self.zarr_path = self.store.stack
        self.layout = self.layout.for_run(self.store.suffix)  # outputs named after the run

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
        self._stack = StackSink(writer, self.store.ledger, self._templates,
                                stops=self.disk.check).start()
        self.live = LiveFeed(self.queue_id, lambda: self.link.get(timeout=1), self._templates,
                             calibration_summary(self._calibration, self.calibration_id),
                             lambda: {"backlog": self.dispatcher.queue_length(),
                                      "retried": self.dispatcher.counters()["retried"]},
                             roots=[self.directory, self.layout.root])
        self._failures = FailureSink(self.store.ledger, self.failures_log, self.queue_id,
                                     self._stats_event)
        self.taker = Taker(self.layout, self.finder, self.store.ledger, self.dispatcher,
                           self._stack, self._failures, overwrite=self._cal.overwrite_files,
                           stream=self.stream, clock=self.status.clock)
        self._sinks = [self._stack, self.history_sink, self.live, NonfiniteSink(self.queue_id)]
        if self._cal.live_filelisting:
            self._sinks.append(FileListSink(self.layout.filelist(self._filelist_base),
                                            self.directory, truncate=not self.resume))
        self.status.taker, self.status.failures = self.taker, self._failures
        self.status.started()
        self.dispatcher.start()
        self.live.start()
        if self.resume:  # what the ledger has pending, even where no walk finds it again
            self._offer(self.taker.pending_paths(), Why.RESUME)
        if self.watch and not self.stream:  # a stream's directory holds only its outputs
            self.sources.add(WatchSource(self.directory, self.pattern, self._offer,
                                         poll=self.poll, stable_time=self.stable_time).start())
        if self.stream:
            self._stream_source = StreamSource(
                self.stream, self.taker.offer_stream, self.taker.fail_stream,
                self.taker.missing_stream, shape=self._cal.geometry.image_shape,
                max_images=self._stream_max_images, batch=self.dispatcher.batch_size,
                idle_timeout=self._stream_idle, series_limit=self._stream_series)
            self.status.stream = self._stream_source.counts
            self.sources.add(self._stream_source.start())
        heap.freeze()  # last: a start that fails freezes nothing (saxs_pipeline.pipeline.heap)
        log.info("queue %s started on %s (outputs %s, stack %s)", self.queue_id, self.directory,
                 self.layout.root, self.zarr_path)

    def _register_plugins(self, client: Any) -> None:
        client.loop.add_callback(DRIVER.adopt, "scheduler")  # the driver's CPU by part
        client.register_plugin(SaxsStats())
        client.register_plugin(SaxsLive())
        client.register_plugin(IntegratorPlugin(self._calibration, self._attachments,
                                                queue_id=self.queue_id, with_std=self.with_std,
                                                correction_images=self._corrections,
                                                normalisation=self._normalisation),
                               name=self.plugin_name)

    def _stats_event(self, record: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.fail(record)
        if self.link.status.connected:
            self.link.get(timeout=1).log_event(PROGRESS_TOPIC, {
                "queue": self.queue_id, "failed": record.get("count", 1), "time": record["time"]})

    def close(self, wait: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Stop taking frames (watcher, walks), finish what is queued, flush and commit
        the stack. With ``wait=False`` the finishing happens in the background. After
        ``timeout`` seconds, or at once while the scheduler is lost, what is left stays
        pending in the ledger (``--resume`` redoes it) and the queue closes. A run that
        stopped for a full disk is waited for until it has closed."""
        if wait:
            self.disk.join(30)
        with self._lock:
            start = self._state == "running"
            if start:
                self._state = "closing"
            elif self._state == "new":
                self._state = "closed"
                if self.store is not None:  # prepared, never started: the lock goes
                    self.store.close("closed")
        if start:
            self.sources.stop()
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
        self.sources.stop()
        dropped = self.dispatcher.cancel_all()
        log.info("queue %s aborted: %d frame(s) dropped", self.queue_id, len(dropped))
        self._shutdown("stopped" if self.stopped else "aborted")
        return self.stats()

    def _finish(self, timeout: float | None) -> None:
        left = self.dispatcher.drain(timeout)
        if left:
            log.warning("queue %s: closing with %d frame(s) not integrated (%s); they stay "
                        "pending in %s: --resume completes them", self.queue_id, left,
                        self.link.status.describe(), self.store.ledger.path if self.store else "")
            self.dispatcher.cancel_all()
        self._shutdown("closed" if not left else "incomplete")

    def _shutdown(self, status: str) -> None:
        heap.thaw()  # first: whatever fails below
        self.dispatcher.stop()
        if self._stack is not None:
            self._stack.stop()
        if self.live is not None:  # a last push: the page and /metrics show the final counts
            self.live.stop(push=self.link.status.connected)
        try:
            if self.store is not None:
                self.store.close(status)
                if self.nxcansas and self.status.processed:
                    self.store.export_nxcansas(self._templates, self.nxcansas)
        except Exception as exc:
            # The last flush found the disk full: the ledger is closed and the lock
            # released all the same (RunStore.close), those frames stay pending.
            if not self.disk.check(exc, stop=False):
                raise
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
        log.info("queue %s %s: %s", self.queue_id, status, self.status.summary())

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every frame taken so far is finished (or failed) and no walk is
        running; True if so."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.sources.finding or not self.dispatcher.idle():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.dispatcher.wait_idle(0.1)
            time.sleep(0.02)
        return True

    # -- taking frames ---------------------------------------------------------------------

    def _offer(self, paths: list[str], why: Why, since: float | None = None) -> int:
        with self._lock:
            if self._state != "running" or self.taker is None:
                return 0
        try:
            return self.taker.offer(paths, why, since)
        except Exception as exc:  # the ledger's disk is full: the run stops
            if self.disk.check(exc):
                return 0
            raise

    def submit_paths(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Offer frames (feeder events, explicit files). Paths outside the directory, not
        matching the pattern, already on their way or done and unchanged are ignored.
        Returns the number taken."""
        return self._offer([os.path.abspath(os.fspath(p)) for p in paths], Why.EVENT)

    def offer_frames(self, frames: list[FrameAt]) -> int:
        """Offer frames a source located in their files (a Bluesky run's StreamDatum or
        Datum documents); those the ledger has done or on their way are ignored. Returns
        the number taken."""
        with self._lock:
            if self._state != "running" or self.taker is None:
                return 0
        return self.taker.offer_located(frames)

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
            started = time.time()
            walk = WalkSource(self.directory, self.pattern,
                              lambda paths, why: self._offer(paths, why, started), why,
                              wait_for_room=self.dispatcher.wait_for_room, since=since,
                              skip=root if root != self.directory else None)
            self.sources.add(walk)
        walk.run() if wait else walk.start()

    # -- results ---------------------------------------------------------------------------

    def _on_results(self, pairs: list[tuple[Job, FrameResult]]) -> None:
        full = next((r for _, r in pairs if r.status == "nospace"), None)
        if full is not None:  # a worker's outputs found the disk full: no frame failed
            self.disk.full(full.error or "no space left on device")
            return
        ok = [(j, r) for j, r in pairs if r.status == "ok"]
        for sink in self._sinks:
            try:
                with DRIVER.charge(getattr(sink, "cpu_part", "result")):
                    sink.add(ok)
            except Exception as exc:
                if self.disk.check(exc):
                    return  # not committed: the ledger keeps them pending
                log.exception("queue %s: %s failed", self.queue_id, type(sink).__name__)
        if self._failures is not None:
            self._failures.clear([j.ref for j, _ in ok])
        if self.taker is not None:
            self.taker.relist(ok)
        for job, r in pairs:
            if r.status != "ok":
                self._on_failed(job, r.error or r.status)
        self.status.count(len(ok))

    def _on_failed(self, job: Job, reason: str) -> None:
        if self._failures is not None:
            try:
                self._failures.fail(job.ref, reason, job.attempt, job.path)
            except Exception as exc:
                if not self.disk.check(exc):
                    raise

    # -- reading ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``stat`` reply: see :meth:`RunStatus.stats`; ``stopped`` says why a run
        stopped by itself (a full disk)."""
        stats = self.status.stats()
        if self.stopped is not None:
            stats["stopped"] = self.stopped
        return stats

    def progress(self) -> dict[str, Any]:
        return self.status.progress()

    def latest(self) -> dict[str, Any] | None:
        """The last integrated frame: ``{"filename": output base name, "graphs": [...],
        "Image": frame path}``, or None before the first."""
        return self.history_sink.latest_graphs(self._templates, self._calibration)

    def history(self) -> dict[str, Any]:
        return self.history_sink.snapshot()

    def failures(self) -> list[dict[str, Any]]:
        """The frames of this run whose latest try failed, with the reason."""
        return self._failures.records() if self._failures is not None else []

    def fileslist(self) -> dict[str, list[str]]:
        """The ``.chi`` files of every frame in the curve stack, per curve
        (``{"Radial0": [...], "Slice2": [...]}``), ordered by base name."""
        if self._stack is not None and not self.closed:
            self._stack.writer.flush()
        return stack_fileslist(self.zarr_path, self.layout, self._templates)

    def __enter__(self) -> ImageQueue:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()
