"""The Bluesky source: documents from a 0MQ proxy in, one reduced run per Bluesky run out.

One thread receives documents (:class:`~saxs_pipeline.bluesky.wire.BlueskyReceiver`),
follows the runs (:class:`~saxs_pipeline.bluesky.runs.RunTracker`) and acts on what they
call for. Each run with an image field becomes an :class:`~saxs_pipeline.pipeline.queue.ImageQueue`
of its own -- its folder ``<work>/<scan…>-<uid…>/`` holds the ``.chi`` files, the curve
stack, its ledger (frames keyed by stream and frame index: each reduced once) and the
run's record -- fed with the frames' locations; the workers read the HDF5 rows
themselves. With a :class:`~saxs_pipeline.tiled.publisher.TiledPublisher` each stack is
published to Tiled as it grows. Which calibration a run is reduced with, and what its
start metadata may override, is :mod:`saxs_pipeline.bluesky.geometry`'s.

A document that cannot be used is reported in one error line naming it, and the consumer
goes on. At start the runs a previous consumer left unfinished are taken up from their
records: frames their files hold are offered again and the ledger takes those not done;
their later documents are followed as usual, and a run whose stop never comes is closed
after ``idle`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saxs_pipeline.bluesky.actions import Closed, Filled, Located, Opened, Resourced
from saxs_pipeline.bluesky.documents import AD_DATASET, RunStart, what
from saxs_pipeline.bluesky.geometry import (
    GeometryError,
    GeometryOptions,
    RunCalibration,
    run_calibration,
)
from saxs_pipeline.bluesky.record import RECORD, RunRecord, open_records
from saxs_pipeline.bluesky.runs import RunTracker
from saxs_pipeline.bluesky.spool import spool
from saxs_pipeline.bluesky.wire import BlueskyReceiver, DocumentError
from saxs_pipeline.tiled.publisher import MARKER, Publication, TiledPublisher

__all__ = ["BlueskyConsumer", "ConsumerOptions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerOptions:
    address: str  # the proxy's out address, tcp://host:port
    work: Path  # where each run's folder goes
    # for runs whose start names none: a file, or a dict with its masks in ``attachments``
    calibration: Path | Mapping[str, Any] | None = None
    field: str | None = None  # the image field (None: the first 2-D one)
    idle: float = 120.0  # s without a document after which a run without stop is closed
    write_chi: bool = True
    batch_size: int = 32
    close_timeout: float | None = None  # s a finishing run may take (None: as long as needed)
    data_roots: tuple[Path, ...] = ()  # where HDF5 links may lead besides the frames' folder
    attachments: tuple[Mapping[str, Any], ...] | None = None  # the masks of a dict calibration
    calibrations: Path | None = None  # the folder of calibrations named by id
    overrides: tuple[tuple[str, str], ...] = ()  # (energy|distance, start-metadata key)


class _Reduction:
    """A run being reduced: its record, its queue once frames came, its start."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.queue: Any = None
        self.dataset: str | None = None
        self.ending: str | None = None


class BlueskyConsumer:
    """See the module doc; ``link`` is the run's :class:`~saxs_pipeline.pipeline.cluster.ClusterLink`."""

    def __init__(self, link: Any, options: ConsumerOptions,
                 publisher: TiledPublisher | None = None) -> None:
        self.link, self.options, self.publisher = link, options, publisher
        self.tracker = RunTracker(options.field, options.idle)
        self.geometry = GeometryOptions(options.calibration, options.attachments,
                                        options.calibrations, options.overrides)
        self.receiver: BlueskyReceiver | None = None
        self.runs: dict[str, _Reduction] = {}
        self.ignored: set[str] = set()  # runs that cannot be reduced (reported once)
        self.closing: list[_Reduction] = []
        self.finished: list[dict[str, Any]] = []  # what each ended run reported
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="saxs-bluesky", daemon=True)
        self._first = True
        self._closing = threading.Lock()
        self.latest_queue: Any = None  # the queue of the run that began last

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> BlueskyConsumer:
        self.options.work.mkdir(parents=True, exist_ok=True)
        self.receiver = BlueskyReceiver(self.options.address)
        if self.publisher is not None:
            self._catch_up_published()
        for record in open_records(self.options.work):
            log.warning("run %s (%s) was not finished by the last consumer: taken up",
                        record.start.uid, record.start.name)
            self.runs[record.start.uid] = _Reduction(record)
            self._apply(self.tracker.restore(record.start, record.streams,
                                             list(record.files.values())))
        self.tracker.touch()
        self._thread.start()
        log.info("receiving Bluesky documents from %s; runs are reduced into %s",
                 self.options.address, self.options.work)
        return self

    def stop(self, timeout: float | None = 10.0, *, abort: bool = False) -> None:
        """Stop receiving; runs in progress stay open in their records (a restarted
        consumer takes them up), what is not integrated stays pending in their ledgers.
        The runs' queued frames finish within ``timeout``, or are dropped with ``abort``."""
        self._stop.set()
        receiver = self.receiver
        if receiver is not None:
            receiver.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for red in [*self.runs.values(), *self.closing]:
            if red.queue is None or red.queue.closed or red.queue.aborted:
                continue
            if abort:
                red.queue.abort()
            else:
                red.queue.close(timeout=timeout)
        self._reap()
        with self._closing:  # an abort may cut a stop short from another thread: once
            receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def progress(self) -> list[dict[str, Any]]:
        """Every run seen: the ended ones' reports (``state`` "reduced"), then those
        being reduced or closing, with their frames so far. Read from other threads (the
        server's ``stat``)."""
        active = []
        for red in [*list(self.runs.values()), *list(self.closing)]:
            start, q = red.record.start, red.queue
            st = q.stats() if q is not None else {}
            active.append({"uid": start.uid, "name": start.name, "how": red.ending,
                           "state": "closing" if red.ending else "reducing",
                           "frames": int(st.get("images processed", 0)),
                           "failed": int(st.get("failed", 0)),
                           "queue length": int(st.get("queue length", 0)),
                           "stack": str(q.zarr_path) if q is not None else None})
        # the ended ones read last: a run reaped meanwhile is listed once, as ended
        out = [dict(r, state="reduced") for r in list(self.finished)]
        ended = {r["uid"] for r in out}
        return out + [r for r in active if r["uid"] not in ended]

    def _loop(self) -> None:
        receiver = self.receiver
        assert receiver is not None
        while not self._stop.is_set():
            try:
                got = receiver.receive(0.25)
            except DocumentError as exc:
                self._reject(exc.kind, exc)
                continue
            if got is not None:
                if self._first:
                    self._first = False
                    log.info("documents arrive from %s", self.options.address)
                self.handle(*got)
            else:  # silence only now: documents queued while a run was set up came first
                self._apply(self.tracker.idle())
            self._reap()

    def handle(self, name: str, doc: dict[str, Any]) -> None:
        """One document: never raises (what is wrong with it is logged, naming it)."""
        try:
            actions = self.tracker.handle(name, doc)
        except DocumentError as exc:
            self._reject(name, exc)
            return
        except Exception:
            self.errors += 1
            log.exception("%s could not be handled", what(name, doc))
            return
        self._apply(actions)

    def _reject(self, kind: str, exc: DocumentError) -> None:
        """One error line naming the document; a flood of one kind is rate-limited, one
        kind does not hide another (a logger per kind)."""
        self.errors += 1
        logging.getLogger(f"{__name__}.rejected.{kind}").error("rejected: %s", exc)

    # -- actions -----------------------------------------------------------------------------

    def _apply(self, actions: list[Any]) -> None:
        for action in actions:
            try:
                self._act(action)
            except Exception:
                self.errors += 1
                log.exception("run %s: %s failed", getattr(action, "run", "?"),
                              type(action).__name__)

    def _act(self, action: Any) -> None:
        if isinstance(action, Opened):
            self._open(action)
            return
        if action.run in self.ignored or action.run not in self.runs:
            if isinstance(action, Closed):
                self._report_ignored(action)
            return
        red = self.runs[action.run]
        if isinstance(action, Resourced):
            red.record.files[action.resource.uid] = (action.resource, action.offset)
            red.record.save()
        elif isinstance(action, Located):
            queue = self._queue(red, action.dataset, action.frames[0].path)
            if queue is not None:
                queue.offer_frames(action.frames)
        elif isinstance(action, Filled):
            frames = spool(red.record.folder, action.stream, action.first, action.time,
                           action.array)
            queue = self._queue(red, AD_DATASET, frames[0].path)
            if queue is not None:
                queue.offer_frames(frames)
        elif isinstance(action, Closed):
            self._close(red, action)

    def _open(self, action: Opened) -> None:
        start = action.start
        if start.uid in self.runs:  # taken up from its record: the record is there
            red = self.runs[start.uid]
            if not red.record.streams:
                red.record.streams.append(action.stream)
                red.record.save()
            return
        calibration = self._calibration(start)
        if calibration is None or not self._fits(start, calibration, action.stream.shape):
            self.ignored.add(start.uid)
            return
        folder = self.options.work / start.name
        self._settle(start.uid)
        try:  # a run closed for silence whose documents came after all: its record goes on
            record = RunRecord.load(folder / RECORD)
        except (OSError, ValueError, TypeError, KeyError):
            record = RunRecord(folder, start, [action.stream])
        record.closed = None
        record.save()
        self.runs[start.uid] = _Reduction(record)
        log.info("run %s (%s): frames of %s in stream %s, %dx%d; reduced into %s with "
                 "calibration %s", start.uid, start.name, action.stream.field,
                 action.stream.stream, *action.stream.shape, folder, calibration.source)
        if calibration.override:
            log.info("run %s (%s): geometry from its start metadata: %s", start.uid, start.name,
                     calibration.override)

    def _settle(self, uid: str) -> None:
        """Wait (bounded) for an earlier queue of run ``uid`` to finish closing: one
        writer per stack."""
        deadline = time.monotonic() + 120
        while any(r.record.start.uid == uid and not r.queue.closed for r in self.closing):
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {uid}: its earlier queue did not close in 120 s")
            time.sleep(0.05)
        self._reap()

    def _calibration(self, start: RunStart) -> RunCalibration | None:
        try:
            return run_calibration(start, self.geometry)
        except GeometryError as exc:
            log.error("run %s (%s): %s; not reduced", start.uid, start.name, exc)
            return None

    @staticmethod
    def _fits(start: RunStart, calibration: RunCalibration, shape: tuple[int, int]) -> bool:
        """Whether the run's frames are the calibration's size (checked before any
        frame is read)."""
        from saxs_pipeline.config.calibschema import CalibrationError

        try:
            expected = calibration.parsed().geometry.image_shape
        except CalibrationError as exc:
            log.error("run %s (%s): calibration %s: %s; not reduced", start.uid, start.name,
                      calibration.source, exc)
            return False
        if tuple(expected) != tuple(shape):
            log.error("run %s (%s): frames of %dx%d, but Imagesize of %s is %s; not reduced",
                      start.uid, start.name, *shape, calibration.source, list(expected))
            return False
        return True

    def _queue(self, red: _Reduction, dataset: str, path: str) -> Any:
        if red.queue is not None:
            if dataset != red.dataset:
                log.error("run %s: frames in dataset %s, the run's are in %s; not reduced",
                          red.record.start.uid, dataset, red.dataset)
                return None
            return red.queue
        from saxs_pipeline.pipeline.queue import ImageQueue

        start = red.record.start
        calibration = self._calibration(start)
        if calibration is None:
            return None
        folder = red.record.folder
        # the detector's folder: its files are read, and links in them may lead there
        roots = [Path(path).parent, *self.options.data_roots]
        queue = ImageQueue(self.link, calibration.calibration, folder, relpath=".",
                           attachments=calibration.attachments,
                           zarr_path=folder / f"{start.name}.zarr", dataset=dataset,
                           write_chi=self.options.write_chi, batch_size=self.options.batch_size,
                           queue_id=start.name, data_roots=roots)
        queue.start()
        red.queue, red.dataset = queue, dataset
        self.latest_queue = queue
        if self.publisher is not None:
            self.publisher.add(Publication(start.uid, queue.zarr_path,
                                           self._tiled_start(start, calibration)))
        return queue

    @staticmethod
    def _tiled_start(start: RunStart, calibration: RunCalibration | None) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if calibration is not None:
            extra["calibration_source"] = calibration.source  # "calibration" is the dict
            if calibration.override:
                extra["geometry_override"] = calibration.override
        return {"scan_id": start.scan_id, "raw_time": start.time, "name": start.name,
                "saxs_calibration": start.calibration, **extra}

    def _close(self, red: _Reduction, action: Closed) -> None:
        start = red.record.start
        del self.runs[action.run]
        red.ending = action.how
        red.record.closed = action.how
        if not action.clean:
            log.warning("run %s (%s) closed: %s (did the RunEngine stop?)", start.uid,
                        start.name, action.how)
        if red.queue is None:
            red.record.save()
            log.warning("run %s (%s) ended (%s) without frames to reduce", start.uid,
                        start.name, action.how)
            return
        red.queue.close(wait=False, timeout=self.options.close_timeout)
        self.closing.append(red)

    def _report_ignored(self, action: Closed) -> None:
        if action.run in self.ignored:
            self.ignored.discard(action.run)
            return
        field = self.options.field or "a 2-D field"
        log.info("run %s ended (%s): no stream has %s; ignored", action.run, action.how, field)

    def _reap(self) -> None:
        for red in [r for r in self.closing if r.queue.closed]:
            self.closing.remove(red)
            start, stats = red.record.start, red.queue.stats()
            red.record.save()  # closed only now: a consumer killed before takes it up again
            report = {"uid": start.uid, "name": start.name, "how": red.ending,
                      "frames": stats["images processed"], "failed": stats["failed"],
                      "stack": str(red.queue.zarr_path)}
            self.finished.append(report)
            log.info("run %s (%s) reduced: %d frame(s), %d failed; ended by %s; stack %s",
                     start.uid, start.name, report["frames"], report["failed"], red.ending,
                     red.queue.zarr_path)
            if self.publisher is not None:
                self.publisher.finish(start.uid, {"exit_status": "success" if not
                                                  report["failed"] else "partial",
                                                  "reason": red.ending, "time": time.time()})

    def _catch_up_published(self) -> None:
        """Runs reduced before that Tiled has not got whole (it was down, or the last
        consumer stopped first): published again from their stacks."""
        assert self.publisher is not None
        for path in sorted(self.options.work.glob("*/bluesky-run.json")):
            folder = path.parent
            if (folder / MARKER).exists():
                continue
            try:
                record = RunRecord.load(path)
            except (OSError, ValueError, TypeError, KeyError):
                continue  # open_records reports it
            stack = folder / f"{record.start.name}.zarr"
            try:
                calibration = run_calibration(record.start, self.geometry)
            except GeometryError:
                calibration = None  # reduced with it before; its stack holds it
            self.publisher.add(Publication(record.start.uid, stack,
                                           self._tiled_start(record.start, calibration)))
            if record.closed is not None:
                self.publisher.finish(record.start.uid, {"exit_status": "success",
                                                         "reason": record.closed,
                                                         "time": time.time()})
