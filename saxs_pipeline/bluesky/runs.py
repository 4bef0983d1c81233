"""Following Bluesky runs through their documents: which frames each run has, where they
are, and when the run is over -- as the small values of :mod:`saxs_pipeline.bluesky.actions`
for the consumer to act on. No sockets, no cluster, no pixels here.

A frame is keyed by (run uid, stream, frame index), the frame index counted from the
event sequence numbers: ``(seq_num - 1) * frames_per_event + k``, the same whether its
location came in one StreamDatum per event, in one for a whole run (a replay), in a Datum,
or in the event itself (filled). Its location is a row of an HDF5 dataset:

* StreamDatum: rows ``indices.start ... indices.stop`` of its StreamResource's file for the
  events ``seq_nums.start ... seq_nums.stop``; held until the events come (their time);
* Datum (ophyd v1 ``AD_HDF5``): rows ``point_number * frame_per_point`` on;
* filled events: the array itself (the consumer spools it into a file of its own).

A file's rows follow its frames one to one, so rows a StreamDatum skips (documents the
proxy dropped, or sent while the consumer was down) are taken from the file too, and at
the end of the run every row the file has beyond the last one seen (:meth:`RunTracker.sweep`).
A run ends with its stop document, or after ``idle`` seconds without any document (and
is taken up again if documents still come). What to do is said with the values of
:mod:`saxs_pipeline.bluesky.actions`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import event_model
import numpy as np

from saxs_pipeline.bluesky.actions import Action, Closed, Filled, Located, Opened, Resourced
from saxs_pipeline.bluesky.documents import (
    FileResource,
    ImageStream,
    RunStart,
    file_resource,
    image_stream,
    run_start,
    validate,
    what,
)
from saxs_pipeline.bluesky.wire import DocumentError
from saxs_pipeline.pipeline.frames import FrameAt, FrameRef

__all__ = ["RunTracker", "hdf5_rows"]

log = logging.getLogger(__name__)

MAX_ROWS = 100_000  # rows one document may name: a hostile number must not fill the memory




@dataclass
class _Run:
    start: RunStart
    seen: float
    streams: dict[str, ImageStream] = field(default_factory=dict)  # descriptor -> stream
    others: set[str] = field(default_factory=set)  # descriptors without the image field
    files: dict[str, FileResource] = field(default_factory=dict)  # resources of frames
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)  # v1 resources, read on use
    skipped: set[str] = field(default_factory=set)  # stream resources of other fields
    datums: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> resource, point
    offset: dict[str, int] = field(default_factory=dict)  # resource -> frame index - row
    next_row: dict[str, int] = field(default_factory=dict)
    stream_of: dict[str, str] = field(default_factory=dict)  # resource -> stream name
    # (descriptor, seq_num) -> (dataset, frames) located by a StreamDatum, until the event
    waiting: dict[tuple[str, int], tuple[str, list[FrameAt]]] = field(default_factory=dict)


def hdf5_rows(path: str, dataset: str) -> int:
    """Frames in ``dataset`` of ``path`` now (0 when it cannot be read); metadata only."""
    from saxs_pipeline.frames.hdf5 import open_hdf5

    try:
        with open_hdf5(path) as f:
            return int(f[dataset].shape[0])
    except Exception as exc:  # a missing or unreadable file has no rows to sweep
        log.warning("%s:%s cannot be read for its frame count: %s", path, dataset, exc)
        return 0


class RunTracker:
    """See the module doc. ``field``: the image field (None: the first 2-D field)."""

    def __init__(self, field: str | None = None, idle: float = 120.0,
                 rows_in: Callable[[str, str], int] = hdf5_rows,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.field, self.idle_after, self.rows_in, self.clock = field, idle, rows_in, clock
        self.runs: dict[str, _Run] = {}
        self._by_descriptor: dict[str, str] = {}  # descriptor uid -> run uid
        self._by_resource: dict[str, str] = {}
        self.unknown: set[str] = set()  # runs whose start was not seen (reported once)
        # runs closed for silence, kept (with their uid maps) in case documents still come
        self.dormant: dict[str, _Run] = {}
        self._revived: list[Action] = []

    # -- documents -------------------------------------------------------------------------

    def handle(self, name: str, doc: dict[str, Any]) -> list[Action]:
        """The actions one document calls for; DocumentError when it cannot be used."""
        if name == "event_page":
            validate(name, doc)
            return [a for ev in event_model.unpack_event_page(doc) for a in self.handle("event", ev)]
        if name == "datum_page":
            validate(name, doc)
            return [a for d in event_model.unpack_datum_page(doc) for a in self.handle("datum", d)]
        validate(name, doc)
        actions = getattr(self, f"_{name}")(doc)
        if self._revived:
            actions, self._revived = [*self._revived, *actions], []
        return actions

    def _run(self, uid: str | None, name: str, doc: dict[str, Any]) -> _Run | None:
        run = self.runs.get(uid) if uid else None
        if run is None and uid in self.dormant:
            run = self.runs[uid] = self.dormant.pop(uid)
            log.warning("run %s (%s): documents after it was closed for silence; taken up "
                        "again", uid, run.start.name)
            if run.streams:
                self._revived.append(Opened(run.start, next(iter(run.streams.values()))))
        if run is None:
            key = uid or what(name, doc)
            if key not in self.unknown and len(self.unknown) < 10_000:
                self.unknown.add(key)
                log.warning("%s belongs to run %s, whose start this consumer did not see; "
                            "its documents are ignored", what(name, doc), uid or "?")
            return None
        run.seen = self.clock()
        return run

    def _start(self, doc: dict[str, Any]) -> list[Action]:
        start = run_start(doc)
        if start.uid in self.runs:
            raise DocumentError(f"{what('start', doc)}: a second start of a run in progress")
        self.runs[start.uid] = _Run(start, self.clock())
        return []

    def _descriptor(self, doc: dict[str, Any]) -> list[Action]:
        run = self._run(doc["run_start"], "descriptor", doc)
        if run is None:
            return []
        self._by_descriptor[doc["uid"]] = run.start.uid
        stream = image_stream(doc, self.field)
        if stream is None:
            run.others.add(doc["uid"])
            return []
        first = next(iter(run.streams.values()), None)
        if first is not None and first.shape != stream.shape:
            run.others.add(doc["uid"])
            raise DocumentError(f"{what('descriptor', doc)}: stream {stream.stream!r} has frames "
                                f"of {stream.shape}, stream {first.stream!r} of {first.shape}; "
                                "only the first is reduced")
        run.streams[doc["uid"]] = stream
        return [] if first is not None else [Opened(run.start, stream)]

    def _stream_resource(self, doc: dict[str, Any]) -> list[Action]:
        run = self._run(doc.get("run_start"), "stream_resource", doc)
        if run is None:
            return []
        self._by_resource[doc["uid"]] = run.start.uid
        fields = {s.field for s in run.streams.values()}
        if doc.get("data_key") not in fields:
            run.skipped.add(doc["uid"])
            return []
        res = file_resource("stream_resource", doc)
        run.files[res.uid] = res
        return [Resourced(run.start.uid, res, None)]

    def _resource(self, doc: dict[str, Any]) -> list[Action]:
        run = self._run(doc.get("run_start"), "resource", doc)
        if run is not None:
            self._by_resource[doc["uid"]] = run.start.uid
            run.raw[doc["uid"]] = doc  # read when an event of the image field needs it
        return []

    def _datum(self, doc: dict[str, Any]) -> list[Action]:
        run = self._run(self._by_resource.get(doc["resource"]), "datum", doc)
        if run is not None:
            point = (doc.get("datum_kwargs") or {}).get("point_number")
            if isinstance(point, int) and point >= 0:
                run.datums[doc["datum_id"]] = (doc["resource"], point)
        return []

    def _stream_datum(self, doc: dict[str, Any]) -> list[Action]:
        run = self._run(self._by_resource.get(doc["stream_resource"]), "stream_datum", doc)
        if run is None or doc["stream_resource"] in run.skipped:
            return []
        stream = run.streams.get(doc["descriptor"])
        res = run.files.get(doc["stream_resource"])
        if stream is None or res is None:
            raise DocumentError(f"{what('stream_datum', doc)}: its descriptor or stream "
                                "resource is not one of the run's image streams")
        s0, s1 = doc["seq_nums"]["start"], doc["seq_nums"]["stop"]
        i0, i1 = doc["indices"]["start"], doc["indices"]["stop"]
        if not (1 <= s0 < s1 and 0 <= i0 < i1) or i1 - i0 != (s1 - s0) * stream.per_event:
            raise DocumentError(f"{what('stream_datum', doc)}: rows [{i0}, {i1}) for events "
                                f"[{s0}, {s1}) are not {stream.per_event} frame(s) per event")
        if i1 - i0 > MAX_ROWS:
            raise DocumentError(f"{what('stream_datum', doc)}: {i1 - i0} rows in one document "
                                f"(at most {MAX_ROWS} are taken)")
        actions = self._place(run, res, stream.stream, (s0 - 1) * stream.per_event - i0, i0)
        for row in range(i0, i1):
            at = self._frame(stream.stream, res, row, row + run.offset[res.uid])
            key = (doc["descriptor"], s0 + (row - i0) // stream.per_event)
            run.waiting.setdefault(key, (res.dataset, []))[1].append(at)
        run.next_row[res.uid] = max(run.next_row.get(res.uid, 0), i1)
        return actions

    def _place(self, run: _Run, res: FileResource, stream: str, offset: int,
               row: int) -> list[Action]:
        """Record where a resource's rows begin in the frame count; rows skipped before
        ``row`` are located at once (their documents were lost)."""
        actions: list[Action] = []
        if res.uid not in run.offset:
            run.offset[res.uid], run.stream_of[res.uid] = offset, stream
            actions.append(Resourced(run.start.uid, res, offset))
        elif run.offset[res.uid] != offset:
            raise DocumentError(f"resource {res.uid}: rows no longer follow the frames "
                                f"({offset - run.offset[res.uid]:+d})")
        gap = range(run.next_row.get(res.uid, 0), row)
        if len(gap) > MAX_ROWS:
            raise DocumentError(f"resource {res.uid}: rows from {row} on, {len(gap)} rows after "
                                f"the last one seen (at most {MAX_ROWS} are taken from the file)")
        frames = [self._frame(stream, res, r, r + offset) for r in gap if r + offset >= 0]
        if frames:
            log.warning("run %s: %d frame(s) of %s had no document; taken from the file",
                        run.start.uid, len(frames), res.path)
            actions.append(Located(run.start.uid, res.dataset, frames))
        return actions

    @staticmethod
    def _frame(stream: str, res: FileResource, row: int, index: int,
               when: float | None = None) -> FrameAt:
        return FrameAt(FrameRef(stream, index, True), res.path, row, when)

    def _event(self, doc: dict[str, Any]) -> list[Action]:
        run = self._run(self._by_descriptor.get(doc["descriptor"]), "event", doc)
        stream = run.streams.get(doc["descriptor"]) if run is not None else None
        if run is None or stream is None:
            return []
        seq, when = doc["seq_num"], float(doc["time"])
        waiting = run.waiting.pop((doc["descriptor"], seq), None)
        if waiting is not None:
            dataset, frames = waiting
            return [Located(run.start.uid, dataset,
                            [FrameAt(f.ref, f.path, f.index, when) for f in frames])]
        value = doc["data"].get(stream.field)
        if value is None:
            return []  # a StreamDatum event whose datum was lost: the sweep takes it
        if isinstance(value, str):
            return self._datum_frames(run, stream, doc, value, seq, when)
        array = np.asarray(value)
        if array.dtype.kind not in "biuf" or array.shape[-2:] != stream.shape or \
                array.ndim not in (2, 3):
            raise DocumentError(f"{what('event', doc)}: {stream.field} is {array.dtype} "
                                f"{array.shape}, not frames of {stream.shape}")
        array = array.reshape(-1, *stream.shape)
        return [Filled(run.start.uid, stream.stream, (seq - 1) * array.shape[0], when, array)]

    def _datum_frames(self, run: _Run, stream: ImageStream, doc: dict[str, Any], datum_id: str,
                      seq: int, when: float) -> list[Action]:
        if datum_id not in run.datums:
            raise DocumentError(f"{what('event', doc)}: datum {datum_id[:60]} of "
                                f"{stream.field} was not seen")
        uid, point = run.datums.pop(datum_id)
        res = run.files.get(uid)
        actions: list[Action] = []
        if res is None:
            res = file_resource("resource", run.raw[uid])
            run.files[uid] = res
        first = point * res.per_point
        actions += self._place(run, res, stream.stream, (seq - 1) * res.per_point - first, first)
        frames = [self._frame(stream.stream, res, r, r + run.offset[uid], when)
                  for r in range(first, first + res.per_point)]
        run.next_row[uid] = max(run.next_row.get(uid, 0), first + res.per_point)
        return [*actions, Located(run.start.uid, res.dataset, frames)]

    def _stop(self, doc: dict[str, Any]) -> list[Action]:
        run = self._run(doc["run_start"], "stop", doc)
        if run is None:
            return []
        status = doc.get("exit_status", "?")
        reason = f": {doc['reason']}" if doc.get("reason") else ""
        return self._close(run, f"stop document ({status}{reason})", clean=True)

    # -- ends, restarts --------------------------------------------------------------------

    def idle(self) -> list[Action]:
        """Close the runs without a document for ``idle`` seconds."""
        now = self.clock()
        actions: list[Action] = []
        for run in [r for r in self.runs.values() if now - r.seen >= self.idle_after]:
            actions += self._close(run, f"no document for {self.idle_after:g} s and no stop "
                                   "document", clean=False)
        return actions

    def _close(self, run: _Run, how: str, *, clean: bool) -> list[Action]:
        del self.runs[run.start.uid]
        if clean:
            self._forget(run.start.uid)
        else:  # a long pause is silence too: documents may still come
            self.dormant[run.start.uid] = run
            while len(self.dormant) > 100:
                self._forget(self.dormant.pop(next(iter(self.dormant))).start.uid)
        actions: list[Action] = []
        for dataset, frames in run.waiting.values():  # events that never came: frames all the same
            actions.append(Located(run.start.uid, dataset, frames))
        actions += self.sweep(run)
        return [*actions, Closed(run.start.uid, how, clean, bool(run.streams))]

    def _forget(self, uid: str) -> None:
        for maps in (self._by_descriptor, self._by_resource):
            for key in [k for k, v in maps.items() if v == uid]:
                del maps[key]

    def sweep(self, run: _Run) -> list[Action]:
        """The frames each file of the run holds beyond the last row located."""
        actions: list[Action] = []
        for uid, offset in run.offset.items():
            res = run.files[uid]
            rows = range(run.next_row.get(uid, 0), self.rows_in(res.path, res.dataset))
            frames = [self._frame(run.stream_of[uid], res, r, r + offset) for r in rows
                      if r + offset >= 0]
            run.next_row[uid] = max(run.next_row.get(uid, 0), rows.stop)
            if frames:
                actions.append(Located(run.start.uid, res.dataset, frames))
        return actions

    def touch(self) -> None:
        """Count the runs' silence from now (after the consumer was busy setting up)."""
        now = self.clock()
        for run in self.runs.values():
            run.seen = now

    def restore(self, start: RunStart, streams: list[ImageStream],
                files: list[tuple[FileResource, int | None]]) -> list[Action]:
        """Take up a run a previous consumer was reducing (from its record): its frames
        found in its files now, and its later documents followed as if seen."""
        run = _Run(start, self.clock())
        self.runs[start.uid] = run
        for s in streams:
            run.streams[s.descriptor] = s
            self._by_descriptor[s.descriptor] = start.uid
        for res, offset in files:
            run.files[res.uid] = res
            self._by_resource[res.uid] = start.uid
            if offset is not None:
                run.offset[res.uid] = offset
                run.stream_of[res.uid] = streams[0].stream
        return [Opened(start, streams[0]), *self.sweep(run)]

