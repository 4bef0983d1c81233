"""Where results go in the driver: the curve stack and its ledger commit, the live file
list, the failures record, the recent history that ``plot`` shows, and the report of
frames with non-finite pixels.

Each sink consumes ``(job, result)`` pairs of frames a task finished; the run decides
which sinks it has. The ``.chi`` files are written by the tasks themselves, on the
workers, in parallel.
"""

from __future__ import annotations

import bisect
import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from saxs_pipeline.integrator import Curve
from saxs_pipeline.pipeline.cpuparts import DRIVER
from saxs_pipeline.pipeline.frames import Fingerprint, FrameRef, FrameSpan, stream_series
from saxs_pipeline.pipeline.jobs import Job
from saxs_pipeline.pipeline.ledger import Ledger
from saxs_pipeline.pipeline.naming import filelist_entry
from saxs_pipeline.pipeline.nospace import is_no_space
from saxs_pipeline.pipeline.tasktypes import CurveData, FrameResult
from saxs_pipeline.stack.writer import CurveStackWriter

__all__ = ["FailureSink", "FileListSink", "HistorySink", "NonfiniteSink", "StackSink", "curves_of"]

log = logging.getLogger(__name__)

HISTORY_SECONDS = 100.0  # the original's "plot" history window


def curves_of(templates: Sequence[Curve], data: Sequence[CurveData]) -> list[Curve]:
    """Full curves from a task's per-frame values and the driver's templates (axes,
    labels)."""
    by_key = {c.key: c for c in templates}
    out = []
    for d in data:
        t = by_key[d.key]
        out.append(Curve(t.kind, t.calnum, t.radial, d.mean, d.poisson, d.std, d.integparams,
                         t.labels, t.phi, t.chi, d.sums))
    return out


class StackSink:
    """Curves into the stack; every flush commits its rows to the ledger (the commit
    protocol of :mod:`saxs_pipeline.pipeline.ledger`). ``stops(exc)`` is asked about a
    timed flush's error: True (a full disk) ends the timed flushes."""

    cpu_part = "stack row"  # its CPU in the driver (saxs_pipeline.pipeline.cpuparts)

    def __init__(self, writer: CurveStackWriter, ledger: Ledger, templates: Sequence[Curve],
                 stops: Callable[[Exception], bool] | None = None) -> None:
        self.writer, self.ledger, self.templates = writer, ledger, list(templates)
        self.stops = stops
        writer.on_commit = self._commit
        self._lock = threading.Lock()
        # frames whose rows are given out but not committed: (row, fingerprint, when)
        self._buffered: dict[FrameRef, tuple[int, Fingerprint | None, float]] = {}
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def _commit(self, written: list[tuple[Any, int]], n_rows: int) -> None:
        self.ledger.commit([(ref, row, fp) for (ref, fp), row in written], n_rows)
        with self._lock:  # only now: a frame taken again meanwhile finds the row here
            for (ref, _), row in written:
                if self._buffered.get(ref, (None,))[0] == row:
                    del self._buffered[ref]

    def buffered(self, ref: FrameRef) -> tuple[int, Fingerprint | None, float] | None:
        """(row, fingerprint, time done) of a frame whose curves are done but not yet
        committed (the ledger still has it pending)."""
        with self._lock:
            return self._buffered.get(ref)

    def add(self, pairs: Sequence[tuple[Job, FrameResult]]) -> None:
        for job, r in pairs:
            if r.status != "ok" or r.curves is None:
                continue
            fp = Fingerprint(*r.fingerprint) if r.fingerprint else None
            when = r.image_time if r.image_time is not None else job.image_time
            job.row = self.writer.add(job.ref.source, curves_of(self.templates, r.curves),
                                      when, r.processed_time, frame_index=job.ref.index,
                                      row=job.row, token=(job.ref, fp))
            with self._lock:
                self._buffered[job.ref] = (job.row, fp, time.time())

    def start(self, every: float = 0.25) -> StackSink:
        """Flush due rows on a thread every ``every`` s, so a live stack lags that much."""
        self._flusher = threading.Thread(target=self._flush_loop, args=(every,),
                                         name="saxs-stack-flush", daemon=True)
        self._flusher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(5)

    def _flush_loop(self, every: float) -> None:
        with DRIVER.owned(self.cpu_part):
            while not self._stop.wait(every):
                try:
                    self.writer.maybe_flush()
                except Exception as exc:
                    if self.stops is not None and self.stops(exc):
                        return  # the run stops: no flushing into a full disk every 0.25 s
                    log.exception("flushing the curve stack failed")


class FileListSink:
    """The original's live file list: a line ``"<chi path>, I0, I1, I2"`` per curve."""

    def __init__(self, path: Path, directory: Path, *, truncate: bool) -> None:
        self.path, self.directory = path, directory
        if not path.parent.is_dir():
            log.info("Live-Filelisting: creating %s", path.parent)
            path.parent.mkdir(parents=True, exist_ok=True)
        if truncate:
            path.write_text("")  # a new queue starts a new list, as the original's "new"

    def add(self, pairs: Sequence[tuple[Job, FrameResult]]) -> None:
        lines = []
        for _job, r in pairs:
            if r.status != "ok":
                continue
            params = [c.integparams for c in r.curves] if r.curves else [{}] * len(r.chi)
            lines += [filelist_entry(chi, self.directory, p)
                      for chi, p in zip(r.chi, params, strict=False)]
        if lines:
            with open(self.path, "a") as fh:
                fh.write("".join(line + "\n" for line in lines))


class FailureSink:
    """Failed frames: the ledger (state and reason), ``failures.log`` (JSON lines beside
    the outputs), an event for the scheduler's statistics, and the run's current
    failures (a frame that succeeds later, e.g. once its writer finished it, is cleared).
    A stream frame's record names its series (``series``); a range of stream images that
    never arrived is one record with its first frame, ``stop`` and ``count``."""

    def __init__(self, ledger: Ledger, log_path: Path, queue_id: str, event: Any = None) -> None:
        self.ledger, self.log_path, self.queue_id = ledger, log_path, queue_id
        self.event = event  # callable(record) or None
        self._lock = threading.Lock()
        self._failed: dict[FrameRef, dict[str, Any]] = {}
        self._spans: dict[str, dict[int, dict[str, Any]]] = {}  # source -> start -> record
        self._span_starts: dict[str, list[int]] = {}  # source -> its ranges' starts, sorted
        self._span_frames = 0

    @property
    def count(self) -> int:
        """Frames failed, a range's frames each counted."""
        with self._lock:
            return len(self._failed) + self._span_frames

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [*self._failed.values(), *(r for by_start in self._spans.values()
                                              for r in by_start.values())]

    def clear(self, refs: Sequence[FrameRef]) -> None:
        with self._lock:
            for ref in refs:
                self._failed.pop(ref, None)
                if ref.source in self._spans:
                    self._cut(ref)

    def _cut(self, ref: FrameRef) -> None:
        """Take a frame that came after all out of its range (a series sent again)."""
        by_start, starts = self._spans[ref.source], self._span_starts[ref.source]
        k = bisect.bisect_right(starts, ref.index) - 1
        rec = by_start[starts[k]] if k >= 0 else None
        if rec is None or ref.index >= rec["stop"]:
            return
        del by_start[starts.pop(k)]
        self._span_frames -= 1
        for lo, hi in ((rec["frame"], ref.index), (ref.index + 1, rec["stop"])):
            if lo < hi:
                by_start[lo] = dict(rec, frame=lo, stop=hi, count=hi - lo)
                bisect.insort(starts, lo)

    def fail(self, ref: FrameRef, error: str, attempts: int, path: str = "") -> None:
        record = _failure(ref, error, attempts, path)
        with self._lock:
            self._failed[ref] = record
        self.ledger.fail([(ref, error, attempts)])
        log.warning("queue %s: %s failed after %d attempt(s): %s", self.queue_id,
                    ref if "series" in record else path or ref, attempts, error)
        self._publish(record)

    def fail_span(self, span: FrameSpan, error: str) -> int:
        """Frames that never arrived, as ranges (in the ledger too); returns how many
        frames were recorded (those the ledger knew already are not)."""
        recorded = self.ledger.fail_span(span, error)
        for s in recorded:
            record = dict(_failure(FrameRef(s.source, s.start, True), error, 0), stop=s.stop,
                          count=s.count)
            with self._lock:
                self._spans.setdefault(s.source, {})[s.start] = record
                bisect.insort(self._span_starts.setdefault(s.source, []), s.start)
                self._span_frames += s.count
            log.warning("queue %s: %s frames %d..%d (%d) failed: %s", self.queue_id, s.source,
                        s.start, s.stop - 1, s.count, error)
            self._publish(record)
        return sum(s.count for s in recorded)

    def _publish(self, record: dict[str, Any]) -> None:
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(dict(record, queue=self.queue_id)) + "\n")
        except OSError as exc:
            if is_no_space(exc):
                raise  # not one frame's trouble: the run stops (pipeline.nospace)
            log.error("cannot write %s: %s", self.log_path, exc)
        if self.event is not None:
            try:
                self.event(record)
            except Exception as exc:  # the stats are informative; the ledger is the record
                log.debug("stats event failed: %s", exc)


def _failure(ref: FrameRef, error: str, attempts: int, path: str = "") -> dict[str, Any]:
    """A failure record: a stream frame is named by its series, not the stream's URL."""
    series = stream_series(ref.source)
    record = {"file": ref.source if series is not None else path or ref.source,
              "frame": ref.index, "error": error, "attempts": attempts, "time": time.time()}
    if series is not None:
        record["series"] = series
    return record


class NonfiniteSink:
    """Frames with non-finite pixels (+inf, -inf, NaN; excluded like invalid ones): the
    run's first is a warning, the others are counted (``frames``) and logged at debug
    level."""

    def __init__(self, queue_id: str) -> None:
        self.queue_id = queue_id
        self.frames = 0

    def add(self, pairs: Sequence[tuple[Job, FrameResult]]) -> None:
        for job, r in pairs:
            if not r.nonfinite_pixels:
                continue
            self.frames += 1
            log.log(logging.WARNING if self.frames == 1 else logging.DEBUG,
                    "queue %s: %s has %d non-finite pixels (inf, NaN), excluded like invalid "
                    "ones (later frames with them are logged at debug level)", self.queue_id,
                    job.ref, r.nonfinite_pixels)


class HistorySink:
    """The latest frame and the last frames' integral parameters (the ``plot`` reply),
    bounded to ``limit`` frames."""

    def __init__(self, keys: Sequence[str], limit: int = 20_000) -> None:
        self.keys, self.limit = list(keys), limit
        self._lock = threading.Lock()
        self.latest: tuple[Job, FrameResult] | None = None
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.finished: collections.deque[float] = collections.deque(maxlen=self.limit)
            self.params = {
                k: {f: collections.deque(maxlen=self.limit) for f in ("time", "file", "I0", "I1", "I2")}
                for k in self.keys
            }

    def add(self, pairs: Sequence[tuple[Job, FrameResult]]) -> None:
        now = time.time()
        with self._lock:
            for job, r in pairs:
                if r.status != "ok" or r.curves is None:
                    continue
                self.finished.append(now)
                self.latest = (job, r)
                for c in r.curves:
                    entry = self.params.get(c.key)
                    if entry is None:
                        continue
                    entry["time"].append(r.image_time)
                    entry["file"].append(job.output)
                    for k in ("I0", "I1", "I2"):
                        entry[k].append(c.integparams.get(k, 0.0))

    def latest_graphs(self, templates: Sequence[Curve], calibration: dict[str, Any]) -> dict[str, Any] | None:
        """The last integrated frame as the ``plot`` reply shows it: ``{"filename": output
        base name, "graphs": [...], "Image": frame path}``, or None before the first."""
        latest = self.latest
        if latest is None or latest[1].curves is None:
            return None
        job, r = latest
        masks, slices = calibration.get("Masks", []), calibration.get("Slices", [])
        graphs = []
        for c in curves_of(templates, r.curves):
            conf = masks[c.calnum] if c.kind == "Radial" else slices[c.calnum - len(masks)]
            graphs.append(c.to_graph(calibration, conf))
        return {"filename": job.output, "graphs": graphs, "Image": job.path}

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            while self.finished and self.finished[0] < now - HISTORY_SECONDS:
                self.finished.popleft()
            return {
                "history": list(self.finished),
                "IntegralParameters": {k: {f: list(v) for f, v in e.items()}
                                       for k, e in self.params.items()},
            }
