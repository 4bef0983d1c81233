"""A DECTRIS Stream V2 receiver: ZeroMQ PULL, decoded messages, bounded waits.

The detector (or ``saxs-stream-sim``) binds a PUSH socket (port 31001 on a DCU); clients
connect PULL sockets and each message goes to one of them. Every wait here is bounded:
:meth:`StreamReceiver.receive` polls in steps of ``poll_interval`` until its timeout or
:meth:`StreamReceiver.stop`, and :meth:`StreamReceiver.series` ends at the ``end``
message, at ``stop()``, or after ``idle_timeout`` seconds without a message -- a series
that stops without ``end`` does not hang the caller.

The socket belongs to the thread that uses the receiver; ``stop()`` may be called from
any thread (it only sets a flag the polling loop checks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import zmq

from saxs_pipeline.stream.codec import StreamDecodeError, decode_message
from saxs_pipeline.stream.messages import (
    EndMessage,
    ImageMessage,
    ImageRefused,
    Message,
    SeriesTracker,
    StartMessage,
)

__all__ = ["StreamReceiver"]

log = logging.getLogger(__name__)


class StreamReceiver:
    """PULL-connects to ``endpoint`` (e.g. ``tcp://127.0.0.1:31001``)."""

    def __init__(self, endpoint: str, *, poll_interval: float = 0.05, rcvhwm: int = 1000) -> None:
        self.endpoint = endpoint
        self.poll_interval = float(poll_interval)
        self._stop = threading.Event()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self._socket.connect(endpoint)
        self.tracker: SeriesTracker | None = None  # of the last series() call

    def stop(self) -> None:
        """Make the current and all later waits return (thread-safe)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def receive_raw(self, timeout: float) -> bytes | None:
        """The next message's bytes, or None after ``timeout`` seconds or on stop()."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            wait = min(self.poll_interval, max(left, 0.0))
            if self._socket.poll(int(wait * 1000), zmq.POLLIN):
                return self._socket.recv(copy=True)
            if left <= 0:
                return None
        return None

    def receive(self, timeout: float) -> Message | None:
        """The next decoded message, or None on timeout/stop; a message that does not
        decode raises :class:`~saxs_pipeline.stream.codec.StreamDecodeError`."""
        frame = self.receive_raw(timeout)
        return None if frame is None else decode_message(frame)

    def series(self, idle_timeout: float = 5.0, start_timeout: float | None = None) -> Iterator[Message]:
        """Yield the messages of one series: its start, its images, and its end.

        Waits up to ``start_timeout`` (default ``idle_timeout``) for the start message;
        images before it are dropped with a warning. Returns after the end message, on
        stop(), or when no message came for ``idle_timeout`` seconds (then
        ``self.tracker.timed_out``). Messages that do not decode, images of another
        series and image numbers outside the series are logged and listed in
        ``self.tracker.errors``; of a repeated image number the first copy is yielded.
        """
        start: StartMessage | None = None
        wait = idle_timeout if start_timeout is None else start_timeout
        tracker = self.tracker = SeriesTracker(None)
        while True:
            try:
                msg = self.receive(wait)
            except StreamDecodeError as exc:
                log.warning("%s", exc)
                tracker.errors.append(str(exc))
                continue
            if msg is None:
                tracker.timed_out = not self._stop.is_set()
                if start is not None and tracker.timed_out:
                    log.warning("series %s: no message for %.1f s and no end message; missing images %s",
                                start.series_id, idle_timeout, tracker.missing())
                return
            if isinstance(msg, StartMessage):
                if start is not None:
                    tracker.errors.append(f"series {start.series_id}: a new start (series {msg.series_id}) before its end")
                    return
                start = msg
                errors, tracker = tracker.errors, SeriesTracker(start)
                tracker.errors, self.tracker = errors, tracker  # keep what failed before the start
                wait = idle_timeout
                yield msg
            elif start is None:
                log.warning("stream: %s of series %s before any start message; dropped",
                            type(msg).__name__, msg.series_id)
            elif msg.series_id != start.series_id:
                tracker.errors.append(f"{type(msg).__name__} of series {msg.series_id} during series {start.series_id}")
            elif isinstance(msg, ImageMessage):
                if start.image_shape is not None and msg.array.shape != start.image_shape:
                    tracker.errors.append(
                        f"image {msg.image_number} of series {msg.series_id} has shape {msg.array.shape}, "
                        f"the start message {start.image_shape}"
                    )
                    continue
                try:
                    added = tracker.add(msg.image_number)
                except ImageRefused as exc:
                    tracker.errors.append(f"series {msg.series_id}: {exc}")
                    continue
                if added.duplicate:
                    continue  # the first copy counts (tracker.duplicates)
                if added.skipped is not None:
                    log.warning("series %s: images %d..%d missing", msg.series_id,
                                added.skipped[0], added.skipped[1] - 1)
                yield msg
            elif isinstance(msg, EndMessage):
                tracker.ended = True
                yield msg
                return

    def close(self) -> None:
        self._socket.close(0)
        self._context.term()

    def __enter__(self) -> StreamReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
