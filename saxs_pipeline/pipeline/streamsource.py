"""A DECTRIS Stream V2 source: image messages from a detector (or ``saxs-stream-sim``)
become frames of the run, their raw messages the tasks' payloads.

Frames are addressed as ``(stream/<series>, image number)`` (the series' unique id when
the start message gives one, else its number), so the ledger records every image number
exactly once; a repeated image is ignored. The driver reads only the messages' headers
(:func:`saxs_pipeline.stream.codec.peek`); the workers decode and decompress the images.
A gap in the image numbers and a series that ends early (its end message missing after
``idle_timeout`` s of silence, or fewer images than its start message announced) are
reported as failures of the images that never came, with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from saxs_pipeline.pipeline.cpuparts import DRIVER
from saxs_pipeline.pipeline.frames import FrameRef
from saxs_pipeline.stream.codec import StreamDecodeError, decode_message, peek
from saxs_pipeline.stream.messages import SeriesTracker, StartMessage
from saxs_pipeline.stream.receiver import StreamReceiver

__all__ = ["StreamSource", "series_source"]

log = logging.getLogger(__name__)

OfferStream = Callable[[list[tuple[FrameRef, bytes]]], int]
Missing = Callable[[FrameRef, str], None]


def series_source(series_id: int, unique: str | None) -> str:
    return f"stream/{unique or series_id}"


class StreamSource:
    """See the module doc. ``offer`` takes (frame, message) pairs; ``missing`` reports an
    image that never came; the images waiting are offered together, up to ``batch`` at a
    time, as soon as no other is waiting: a backlog makes large offers, a slow stream
    one image each, never held back (a wait of 50 ms for more had added up to 50 ms to
    a frame's latency, and at 50 images/s an offer waited for ``batch`` images).
    ``series_limit``: stop after
    that many series (``saxsdog --stream`` without ``-w`` takes one)."""

    def __init__(self, endpoint: str, offer: OfferStream, missing: Missing, *,
                 idle_timeout: float = 5.0, batch: int = 16, series_limit: int | None = None) -> None:
        self.endpoint, self.offer, self.missing = endpoint, offer, missing
        self.series_limit = series_limit  # stop after this many series (None: keep going)
        self.idle_timeout, self.batch = idle_timeout, batch
        self.receiver = StreamReceiver(endpoint)
        self.series = 0
        self.images = 0
        self.errors = 0
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

    def _run(self) -> None:
        with DRIVER.owned("file event"):
            self._receive()

    def _receive(self) -> None:
        try:
            while not self.receiver.stopped:
                self._one_series()
                if self.series_limit is not None and self.series >= self.series_limit:
                    break
        except Exception:
            log.exception("stream %s: receiving failed", self.endpoint)
        finally:
            self.receiver.close()

    def _one_series(self) -> None:
        tracker: SeriesTracker | None = None
        pending: list[tuple[FrameRef, bytes]] = []
        source = ""
        wait = 1.0  # between series: short waits so stop() is seen at once
        while True:
            frame = self.receiver.receive_raw(wait if tracker is None else
                                              (0.0 if pending else self.idle_timeout))
            if frame is None:
                if pending:
                    self._offer(pending)
                    pending = []
                    continue
                if tracker is not None and not self.receiver.stopped:
                    self._report(tracker, source, ended=False)
                return
            try:
                head = peek(frame)
                if head.type == "start":
                    if tracker is not None:
                        self._offer(pending)
                        self._report(tracker, source, ended=False)
                        pending = []
                    msg = decode_message(frame)
                    assert isinstance(msg, StartMessage)
                    tracker, source = SeriesTracker(msg), series_source(msg.series_id,
                                                                        msg.series_unique_id)
                    self.series += 1
                    log.info("stream: series %s started (%s images announced)", msg.series_id,
                             msg.number_of_images)
                elif tracker is None:
                    log.warning("stream: %s of series %s before its start message; dropped",
                                head.type, head.series_id)
                elif head.type == "image":
                    assert head.image_number is not None
                    skipped = tracker.add(head.image_number)
                    if skipped:
                        log.warning("stream: series %s: images %s skipped", head.series_id,
                                    skipped[:10])
                    self.images += 1
                    pending.append((FrameRef(source, head.image_number, True), frame))
                    if len(pending) >= self.batch:
                        self._offer(pending)
                        pending = []
                else:  # end
                    self._offer(pending)
                    self._report(tracker, source, ended=True)
                    return
            except StreamDecodeError as exc:
                self.errors += 1
                log.warning("stream %s: %s", self.endpoint, exc)

    def _offer(self, pending: list[tuple[FrameRef, bytes]]) -> None:
        if pending:
            with DRIVER.charge("ledger"):
                self.offer(pending)

    def _report(self, tracker: SeriesTracker, source: str, *, ended: bool) -> None:
        missing = tracker.missing()
        how = "its end message" if ended else f"{self.idle_timeout:g} s of silence without an end message"
        if missing:
            log.warning("stream %s: series %s ended (%s) with %d image(s) missing", self.endpoint,
                        source, how, len(missing))
        for n in missing:
            self.missing(FrameRef(source, n, True),
                         f"image {n} of series {source} never arrived (the series ended after {how})")
