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

from saxs_pipeline.pipeline import heap
from saxs_pipeline.pipeline.cluster import ClusterLink
from saxs_pipeline.pipeline.dispatcher import Dispatcher
from saxs_pipeline.pipeline.finder import FrameFinder
from saxs_pipeline.pipeline.frames import FrameAt
from saxs_pipeline.pipeline.intake import Intake, StreamOptions, WatchOptions
from saxs_pipeline.pipeline.jobs import Job
from saxs_pipeline.pipeline.ledger import Why
from saxs_pipeline.pipeline.naming import DEFAULT_RELPATH, OutputLayout
from saxs_pipeline.pipeline.nospace import DiskGuard
from saxs_pipeline.pipeline.outlets import Outlets
from saxs_pipeline.pipeline.preflight import check_run
from saxs_pipeline.pipeline.runplugins import RunPlugins
from saxs_pipeline.pipeline.runstate import RunState
from saxs_pipeline.pipeline.sinks import FileListSink
from saxs_pipeline.pipeline.status import RunStatus
from saxs_pipeline.pipeline.store import RunStore
from saxs_pipeline.pipeline.taker import Taker
from saxs_pipeline.pipeline.tasktypes import FrameResult, TaskOptions
from saxs_pipeline.plugins.worker import prepare
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
        self.pattern, self.resume = pattern, resume
        self.watch = WatchOptions(poll, stable_time) if watch else None
        self.stream = StreamOptions(stream, stream_series, stream_idle,
                                    stream_max_images) if stream else None
        self.with_std = write_svg if with_std is None else bool(with_std)

        p = prepare(calibration, attachments, with_std=self.with_std)
        self._calibration, self._attachments, self._cal = p.calibration, p.attachments, p.parsed
        self._templates, self.calibration_id = p.templates, p.id

        self.layout = OutputLayout.make(directory, out_dir, relpath)
        self.finder = FrameFinder(self.layout, pattern, dataset,
                                  [os.path.abspath(os.fspath(r)) for r in data_roots],
                                  task_frames=batch_size)
        self.zarr_path = Path(os.path.abspath(zarr_path)) if zarr_path else self.layout.stack()
        self.options = TaskOptions(write_chi=write_chi, keep_existing_chi=not self._cal.overwrite_files,
                                   write_svg=write_svg, write_png=write_png, dataset=dataset,
                                   data_roots=tuple(self.link.path_map.to_worker(r)
                                                    for r in self.finder.roots))
        self.plugins = RunPlugins(self.link, self.queue_id, p, self.with_std)
        self._filelist_base = filelist_base
        self.store: RunStore | None = None
        self.run = RunState()
        self.disk = DiskGuard(self.layout.root, self.zarr_path, self.abort, self.queue_id)
        self.intake = Intake(directory, pattern, self.run.taking, self.disk)
        self.outlets = Outlets(self.queue_id, self.link, self._templates, self._calibration,
                               self.disk, history_limit)
        self.dispatcher = Dispatcher(self.link, self.queue_id, self.options, self._on_results,
                                     self.outlets.failed, batch_size=batch_size,
                                     max_in_flight=max_in_flight, retries=retries,
                                     retry_delay=retry_delay, want_picture=self.outlets.picture_due)
        self.nxcansas = nxcansas  # layout of the NXcanSAS file written at the end, or None
        self.status = RunStatus(self.dispatcher, self.link, lambda: self.intake.finding)

    # -- properties ------------------------------------------------------------------------

    calibration_dict = property(lambda self: self._calibration)
    start_time = property(lambda self: self.status.start_time)
    first_result = property(lambda self: self.status.first_result)
    attachments = property(lambda self: self._attachments)
    directory = property(lambda self: self.layout.directory)
    outputs_dir = property(lambda self: self.layout.root)
    closed = property(lambda self: self.run.closed)
    stopped = property(lambda self: self.disk.message)  # why it stopped by itself (full disk)
    aborted = property(lambda self: self.run.aborted)
    curve_keys = property(lambda self: [c.key for c in self._templates])
    failures_log = property(lambda self: self.layout.failures_log())
    stream_failure = property(lambda self: self.intake.stream_failure)
    live = property(lambda self: self.outlets.live)  # LiveFeed | None: the page's data

    def manifest(self) -> dict[str, Any]:
        """What a restarted server needs to run this queue again."""
        return {"calibration": self._calibration, "attachments": self._attachments,
                "directory": str(self.directory), "queue_id": self.queue_id,
                "start_time": self.start_time}

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
        was = self.run.begin()
        if was == "running":
            return
        if was != "new":
            raise QueueClosedError(f"queue {self.queue_id} is {was}")
        self.prepare()
        assert self.store is not None
        self.link.start()
        self.link.get()  # waits for a cluster still starting; raises when it cannot
        self.plugins.install()
        filelist = FileListSink(self.layout.filelist(self._filelist_base), self.directory,
                                truncate=not self.resume) if self._cal.live_filelisting else None
        self.outlets.open(self.store, self.calibration_id, self.failures_log,
                          lambda: {"backlog": self.dispatcher.queue_length(),
                                   "retried": self.dispatcher.counters()["retried"]},
                          [self.directory, self.layout.root], filelist)
        taker = Taker(self.layout, self.finder, self.store.ledger, self.dispatcher,
                      self.outlets.stack, self.outlets.failures,
                      overwrite=self._cal.overwrite_files,
                      stream=self.stream.url if self.stream else None,
                      clock=self.status.clock)
        self.status.taker, self.status.failures = taker, self.outlets.failures
        self.status.started()
        self.dispatcher.start()
        self.outlets.live.start()
        self.status.stream = self.intake.start(
            taker, resume=self.resume, watch=self.watch, stream=self.stream,
            shape=self._cal.geometry.image_shape, batch=self.dispatcher.batch_size)
        heap.freeze()  # last: a start that fails freezes nothing (saxs_pipeline.pipeline.heap)
        log.info("queue %s started on %s (outputs %s, stack %s)", self.queue_id, self.directory,
                 self.layout.root, self.zarr_path)

    def close(self, wait: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Stop taking frames (watcher, walks), finish what is queued, flush and commit
        the stack. With ``wait=False`` the finishing happens in the background. After
        ``timeout`` seconds, or at once while the scheduler is lost, what is left stays
        pending in the ledger (``--resume`` redoes it) and the queue closes. A run that
        stopped for a full disk is waited for until it has closed."""
        if wait:
            self.disk.join(30)
        was = self.run.close()
        if was == "new" and self.store is not None:  # prepared, never started: the lock goes
            self.store.close("closed")
        if was == "running":
            self.intake.stop()
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
        if not self.run.abort():
            return self.stats()
        self.intake.stop()
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
        self.outlets.stop()
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
            self.plugins.remove()
            if self._own_link:
                self.link.close()  # only the monitor: the client is the caller's
            self.run.ended()
        log.info("queue %s %s: %s", self.queue_id, status, self.status.summary())

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every frame taken so far is finished (or failed) and no walk is
        running; True if so."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.intake.finding or not self.dispatcher.idle():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.dispatcher.wait_idle(0.1)
            time.sleep(0.02)
        return True

    # -- taking frames ---------------------------------------------------------------------

    def submit_paths(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Offer frames (feeder events, explicit files). Paths outside the directory, not
        matching the pattern, already on their way or done and unchanged are ignored.
        Returns the number taken."""
        return self.intake.offer([os.path.abspath(os.fspath(p)) for p in paths], Why.EVENT)

    def offer_frames(self, frames: list[FrameAt]) -> int:
        """Offer frames a source located in their files (a Bluesky run's StreamDatum or
        Datum documents); those the ledger has done or on their way are ignored. Returns
        the number taken."""
        return self.intake.offer_frames(frames)

    def readdir(self, wait: bool = False, *, why: Why | None = None,
                since: float | None = None) -> None:
        """Walk the directory tree and offer every frame: "redo all images" (``why``
        WALK, also frames done before: rows and files are updated, not doubled), or with
        ``resume`` only those not done. In a background thread unless ``wait``."""
        with self.run:  # no close meanwhile: the walk is stopped with the other sources
            if not self.run.taking():
                raise QueueClosedError(f"queue {self.queue_id} is not taking frames "
                                       f"({self.run.now})")
            why = why or (Why.RESUME if self.resume else Why.WALK)
            if why is Why.WALK:
                self.outlets.history.clear()
            root = self.layout.root
            walk = self.intake.walk(why, skip=root if root != self.directory else None,
                                    since=since, wait_for_room=self.dispatcher.wait_for_room)
        walk.run() if wait else walk.start()

    # -- results ---------------------------------------------------------------------------

    def _on_results(self, pairs: list[tuple[Job, FrameResult]]) -> None:
        ok = self.outlets.add(pairs)
        if ok is None:  # the disk is full: not committed, the ledger keeps them pending
            return
        if self.intake.taker is not None:
            self.intake.taker.relist(ok)
        for job, r in pairs:
            if r.status != "ok":
                self.outlets.failed(job, r.error or r.status)
        self.status.count(len(ok))

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
        return self.outlets.latest()

    def history(self) -> dict[str, Any]:
        return self.outlets.history.snapshot()

    def failures(self) -> list[dict[str, Any]]:
        """The frames of this run whose latest try failed, with the reason."""
        return self.outlets.failure_records()

    def fileslist(self) -> dict[str, list[str]]:
        """The ``.chi`` files of every frame in the curve stack, per curve
        (``{"Radial0": [...], "Slice2": [...]}``), ordered by base name."""
        return self.outlets.fileslist(self.zarr_path, self.layout, flush=not self.closed)

    def __enter__(self) -> ImageQueue:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()
