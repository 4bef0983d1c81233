"""A DECTRIS Stream V2 source: image messages from a detector (or ``saxs-stream-sim``)
become frames of the run, their raw messages the tasks' payloads.

Frames are addressed as ``(stream/<series>, image number)`` (the series' unique id when
the start message gives one, else its number), so the ledger records every image number
exactly once. The driver reads only the messages' headers
(:func:`saxs_pipeline.stream.codec.peek`); the workers decode and decompress the images.

No message stops the intake: whatever goes wrong with one message (it does not decode,
its image number lies outside its series, the accounting or the ledger fails) is logged
(rate-limited) with its series and image number, recorded as that image's failure where
it names one, and the next message is read. Of an image number sent more than once the
first copy counts; the repeats are counted (``duplicates``) and reported once per
series. A gap in the image numbers and a series that ends early (its end message missing
after ``idle_timeout`` s of silence, or fewer images than its start message announced)
are failures of the images that never came, recorded as ranges (one ledger row per
range, however large the series). Should the receiving thread end anyway, ``failure``
says why and the log says so at ERROR.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from saxs_pipeline.pipeline.frames import STREAM_PREFIX, FrameRef, FrameSpan
from saxs_pipeline.stream.codec import Peek, StreamDecodeError, decode_message, error_text, peek
from saxs_pipeline.stream.messages import DEFAULT_MAX_IMAGES, SeriesTracker, StartMessage
from saxs_pipeline.stream.receiver import StreamReceiver

__all__ = ["StreamCounts", "StreamSource", "series_source"]

log = logging.getLogger(__name__)

OfferStream = Callable[[list[tuple[FrameRef, bytes]]], int]
FailImage = Callable[[FrameRef, str], None]
Missing = Callable[[FrameSpan, str], None]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def series_source(series_id: int, unique: object) -> str:
    """``stream/<unique id>`` (``stream/<series id>`` without one). The unique id comes
    from the sender and becomes part of output names: only letters, digits, ``_`` and
    ``-`` are kept (others become ``_``; a dot would be taken for a file suffix), at most
    100 characters."""
    name = _UNSAFE.sub("_", unique)[:100] if isinstance(unique, str) else ""
    return f"{STREAM_PREFIX}{name or series_id}"


@dataclass(frozen=True)
class StreamCounts:
    """What the stream source has seen: series started, images taken, repeated images
    ignored, messages that failed, and why the receiver stopped (None while it runs or
    after it ended as asked)."""

    series: int
    images: int
    duplicates: int
    errors: int
    failure: str | None


@dataclass
class _Series:
    tracker: SeriesTracker
    source: str
    pending: list[tuple[FrameRef, bytes]] = field(default_factory=list)

    @property
    def series_id(self) -> int:
        assert self.tracker.start is not None
        return self.tracker.start.series_id


class StreamSource:
    """See the module doc. ``offer`` takes (frame, message) pairs; ``fail`` records an
    image that cannot be taken, ``missing`` a range of images that never came; ``batch``
    images are offered together (or fewer after ``flush_after`` s, so a slow stream is
    not held back). ``shape``: the detector's (the calibration's Imagesize), checked in
    start messages; ``max_images``: the ceiling on image numbers of a series.
    ``series_limit``: stop after that many series (``saxsdog --stream`` without ``-w``
    takes one)."""

    def __init__(self, endpoint: str, offer: OfferStream, fail: FailImage, missing: Missing, *,
                 shape: tuple[int, int] | None = None, max_images: int = DEFAULT_MAX_IMAGES,
                 idle_timeout: float = 5.0, batch: int = 16, flush_after: float = 0.05,
                 series_limit: int | None = None) -> None:
        self.endpoint, self.offer, self.fail, self.missing = endpoint, offer, fail, missing
        self.shape, self.max_images = shape, max_images
        self.series_limit = series_limit  # stop after this many series (None: keep going)
        self.idle_timeout, self.batch, self.flush_after = idle_timeout, batch, flush_after
        self.receiver = StreamReceiver(endpoint)
        self.series = 0
        self.images = 0
        self.errors = 0
        self.duplicates = 0
        self.failure: str | None = None
        self._current: _Series | None = None
        self._thread = threading.Thread(target=self._run, name="saxs-stream", daemon=True)

    def start(self) -> StreamSource:
        self._thread.start()
        log.info("receiving a DECTRIS stream from %s", self.endpoint)
        return self

    def stop(self) -> None:
        self.receiver.stop()
        if self._thread is not threading.current_thread():
            self._thread.join(10)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def counts(self) -> StreamCounts:
        return StreamCounts(self.series, self.images, self.duplicates, self.errors, self.failure)

    def _run(self) -> None:
        try:
            while not self.receiver.stopped:
                self._one_series()
                if self.series_limit is not None and self.series >= self.series_limit:
                    break
        except BaseException as exc:  # whatever it was, the run must know
            self.failure = f"the stream receiver stopped: {error_text(exc)}"
            log.critical("stream %s: %s; no more images are taken from it", self.endpoint,
                         self.failure, exc_info=True)
        finally:
            self.receiver.close()

    def _one_series(self) -> None:
        """Messages until the current series ends (or none began within a second)."""
        while True:
            series = self._current
            wait = 1.0 if series is None else self.flush_after if series.pending else self.idle_timeout
            frame = self.receiver.receive_raw(wait)  # between series: short waits, stop() is seen
            head: Peek | None = None
            try:
                if frame is None:
                    if series is not None and series.pending:
                        self._flush(series)
                        continue
                    if series is not None and not self.receiver.stopped:
                        self._end(series, f"{self.idle_timeout:g} s of silence without an end "
                                          "message")
                    return
                head = peek(frame)
                if self._message(head, frame):
                    return
            except Exception as exc:  # one message never stops the intake (module doc)
                self._failed(head, exc)

    def _message(self, head: Peek, frame: bytes) -> bool:
        """Account for one message; True when it ended the current series."""
        series = self._current
        if head.type == "start":
            if series is not None:
                self._end(series, f"a new start message (series {head.series_id}) without an "
                                  "end message")
            self._begin(head, frame)
            return False
        if series is None or head.series_id != series.series_id:
            self.errors += 1
            where = "outside any series" if series is None else f"during series {series.series_id}"
            log.warning("stream %s: %s of series %s %s; dropped", self.endpoint, head.type,
                        head.series_id, where)
            if head.type == "image" and series is not None:
                self._record(self._ref(head), f"image {head.image_number} of series "
                                              f"{head.series_id} arrived {where}; not integrated")
            return False
        if head.type == "end":
            self._end(series, "its end message")
            return True
        assert head.image_number is not None
        added = series.tracker.add(head.image_number)
        if added.duplicate:
            self.duplicates += 1
            return False
        if added.skipped is not None:
            lo, hi = added.skipped
            log.warning("stream: series %s: images %d..%d skipped", head.series_id, lo, hi - 1)
        self.images += 1
        series.pending.append((FrameRef(series.source, head.image_number, True), frame))
        if len(series.pending) >= self.batch:
            self._flush(series)
        return False

    def _begin(self, head: Peek, frame: bytes) -> None:
        self._current = None
        try:
            start = decode_message(frame, self.shape)
            assert isinstance(start, StartMessage)
        except StreamDecodeError as exc:
            # Its images still come: take them, with the series' size unknown.
            self.errors += 1
            log.error("stream %s: %s; the series' images are taken without it", self.endpoint, exc)
            start = StartMessage(head.series_id, head.series_unique_id)
        tracker = SeriesTracker(start, max_images=self.max_images)
        self._current = _Series(tracker, series_source(start.series_id, start.series_unique_id))
        self.series += 1
        log.info("stream: series %s started (%s images announced)", start.series_id,
                 start.number_of_images)
        if tracker.declared is not None and tracker.declared > self.max_images:
            log.warning("stream: series %s announces %d images, more than the ceiling of %d: "
                        "images beyond it are refused", start.series_id, tracker.declared,
                        self.max_images)
        if self.shape is not None and start.image_shape not in (None, tuple(self.shape)):
            log.warning("stream: series %s announces images of %s, the calibration's Imagesize "
                        "is %s: its images will fail", start.series_id, list(start.image_shape),
                        list(self.shape))

    def _end(self, series: _Series, how: str) -> None:
        """Offer what is pending and report what never came and what came twice."""
        self._current = None
        self._flush(series)
        tracker, sid = series.tracker, series.series_id
        missing = tracker.missing()
        if missing:
            log.warning("stream %s: series %s ended (%s) with %d image(s) missing in %d range(s)",
                        self.endpoint, series.source, how, sum(b - a for a, b in missing),
                        len(missing))
        for lo, hi in missing:
            what = f"image {lo}" if hi == lo + 1 else f"images {lo}..{hi - 1}"
            self.missing(FrameSpan(series.source, lo, hi),
                         f"{what} of series {sid} ({series.source}) never arrived (the series "
                         f"ended after {how})")
        if tracker.duplicates:
            log.warning("stream %s: series %s: %d repeated image(s) ignored, the first copy of "
                        "each kept (image numbers %s)", self.endpoint, sid, tracker.duplicates,
                        tracker.duplicate_numbers)

    def _flush(self, series: _Series) -> None:
        pending, series.pending = series.pending, []
        if not pending:
            return
        try:
            self.offer(pending)
        except Exception as exc:  # the ledger or the dispatcher failed: say so per image
            log.exception("stream %s: offering %d image(s) of series %s failed", self.endpoint,
                          len(pending), series.series_id)
            for ref, _ in pending:
                self._record(ref, f"image {ref.index} of series {series.series_id} could not be "
                                  f"taken: {error_text(exc)}")

    def _failed(self, head: Peek | None, exc: Exception) -> None:
        """A message that failed: logged (rate-limited), its image recorded as failed."""
        self.errors += 1
        if head is None or head.type != "image":
            log.warning("stream %s: %s%s", self.endpoint, "" if head is None else
                        f"{head.type} message of series {head.series_id}: ", error_text(exc))
            return
        reason = f"image {head.image_number} of series {head.series_id}: {error_text(exc)}"
        log.warning("stream %s: %s", self.endpoint, reason)
        self._record(self._ref(head), reason)

    def _ref(self, head: Peek) -> FrameRef:
        assert head.image_number is not None
        current = self._current
        source = current.source if current is not None and current.series_id == head.series_id \
            else series_source(head.series_id, head.series_unique_id)
        return FrameRef(source, head.image_number, True)

    def _record(self, ref: FrameRef, reason: str) -> None:
        try:
            self.fail(ref, reason)
        except Exception:  # the ledger itself failed: the log is all that is left
            log.exception("stream %s: recording the failure of %s failed", self.endpoint, ref)
