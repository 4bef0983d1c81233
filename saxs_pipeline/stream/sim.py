"""``saxs-stream-sim``: replay frames as a DECTRIS Stream V2 series on a ZeroMQ PUSH socket.

Frames come from files (any format :func:`saxs_pipeline.frames.registry.open_frames` reads, all
frames of each file in order) or from the EIGER demo generator
(:func:`saxs_pipeline.demo.eiger.demo_frames`, in memory). The series is one ``start``
message, one ``image`` message per frame (bitshuffle-LZ4 or uncompressed) at the given
rate, and an ``end`` message -- unless told to drop image numbers or to stop after some
images without ``end``, for testing receivers. Sends time out (``send_timeout``) rather
than block forever when no receiver is connected.

Every message is prepared (frames read or generated, compressed, encoded) before the
clock starts, so the rate asked for is the rate sent: generating one EIGER2 X 4M demo
frame takes 0.3 s, which paced the sending to 5 frames/s when done on the way. A series
whose prepared messages would not fit in half the available memory is refused up front.
Image ``i`` goes at ``i / rate`` s after the first (a late one goes at once, the schedule
does not drift); the send queue holds only a few messages, so a receiver that takes them
slower slows the sending, and the report's rate (first to last image sent) is what the
receiver was given. Short of the rate asked by more than 10 %, the simulator says so.

``saxs-stream-sim --bind tcp://127.0.0.1:31001 --demo 20 --shape 512 512 --rate 50``
(or ``python -m saxs_pipeline.stream.sim ...``).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zmq

from saxs_pipeline.frames.registry import frame_count, open_frames
from saxs_pipeline.stream.codec import encode_end, encode_image, encode_start

__all__ = ["PreparedSeries", "SimReport", "StreamSimulator", "file_frames", "main",
           "memory_budget", "prepare_series"]

log = logging.getLogger(__name__)


SHORTFALL = 0.10  # a rate this much below the one asked is reported
SEND_QUEUE = 4  # messages ZeroMQ may hold for the receiver: the sending shows its pace


@dataclass
class SimReport:
    """What one :meth:`StreamSimulator.send_series` call sent, and when (``time.monotonic``
    of the first and the last image sent)."""

    sent: list[int] = field(default_factory=list)  # image numbers sent
    dropped: list[int] = field(default_factory=list)
    ended: bool = False
    asked: float | None = None  # the rate asked for (None: as fast as possible)
    prepare_s: float = 0.0  # seconds spent preparing the messages, before the clock
    first_sent: float | None = None
    last_sent: float | None = None

    def rate(self) -> float | None:
        """Images per second from the first image sent to the last (None: fewer than two
        images, or no time between them)."""
        if len(self.sent) < 2 or self.first_sent is None or self.last_sent is None:
            return None
        span = self.last_sent - self.first_sent
        return (len(self.sent) - 1) / span if span > 0 else None

    def short(self) -> bool:
        """Whether the rate sent fell short of the one asked by more than 10 %."""
        rate = self.rate()
        return self.asked is not None and rate is not None and rate < (1 - SHORTFALL) * self.asked

    def describe(self) -> str:
        rate = self.rate()
        text = (f"{len(self.sent)} images sent at "
                + ("- images/s" if rate is None else f"{rate:.1f} images/s"))
        if self.asked:
            text += f" (asked {self.asked:g})"
        return text + f", prepared in {self.prepare_s:.1f} s before the clock"


@dataclass(frozen=True)
class PreparedSeries:
    """A series' messages, encoded: ``start``, one per image number (None: dropped),
    ``end`` (None: not sent), and the time between images (0: as fast as possible)."""

    start: bytes
    images: list[bytes | None]
    end: bytes | None
    period: float
    prepare_s: float


def memory_budget() -> int:
    """Bytes the prepared messages may take: half the memory available now."""
    import psutil

    return int(psutil.virtual_memory().available // 2)


def prepare_series(
    frames: Iterable[np.ndarray],
    n_frames: int,
    *,
    series_id: int = 1,
    rate: float | None = None,
    compression: str = "bslz4",
    drop: Iterable[int] = (),
    stop_after: int | None = None,
    budget: int | None = None,
) -> PreparedSeries:
    """The messages :meth:`StreamSimulator.send_series` sends (see there), all encoded
    now. Raises MemoryError before preparing them all when, judged by the first image's
    message, they would take more than ``budget`` bytes (default: :func:`memory_budget`)."""
    t0 = time.perf_counter()
    it = iter(frames)
    first = next(it)
    skip = set(drop)
    period = 1.0 / rate if rate else 0.0
    start = encode_start(
        series_id, number_of_images=n_frames, image_shape=first.shape,
        arm_date=datetime.now(UTC), frame_time=period, count_time=period,
        saturation_value=int(np.iinfo(first.dtype).max - 1) if first.dtype.kind == "u" else None,
    )
    last = n_frames if stop_after is None else min(stop_after, n_frames)
    images: list[bytes | None] = []
    for i, frame in zip(range(last), itertools.chain([first], it), strict=False):
        images.append(None if i in skip else encode_image(
            series_id, i, frame, compression=compression, start_time=i * period,
            frame_time=period or None))
        if len(images) == 1 and images[0] is not None:
            need = len(images[0]) * last
            allowed = memory_budget() if budget is None else budget
            if need > allowed:
                raise MemoryError(
                    f"cannot prepare {last} images of {len(images[0]) / 1e6:.1f} MB "
                    f"({need / 1e9:.1f} GB) in memory ({allowed / 1e9:.1f} GB may be used): "
                    "send fewer images per series")
        if i % 50 == 49:
            log.info("prepared %d of %d images", i + 1, last)
    return PreparedSeries(start, images, encode_end(series_id) if stop_after is None else None,
                          period, time.perf_counter() - t0)


def file_frames(paths: Iterable[str | Path]) -> Iterator[np.ndarray]:
    """Every frame of every file in ``paths``, in order, read one at a time."""
    for path in paths:
        with open_frames(path) as src:
            for i in range(src.frame_count()):
                yield src.read(i, i + 1)[0]


class StreamSimulator:
    """A PUSH socket bound to ``endpoint``; ``tcp://127.0.0.1:*`` picks a free port, the
    bound address is ``self.endpoint``."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:*", *, send_timeout: float = 10.0) -> None:
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, SEND_QUEUE)
        self._socket.setsockopt(zmq.LINGER, int(send_timeout * 1000))
        self._socket.setsockopt(zmq.SNDTIMEO, int(send_timeout * 1000))
        self._socket.bind(endpoint)
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.send_timeout = send_timeout

    def _send(self, frame: bytes, what: str) -> None:
        try:
            self._socket.send(frame, copy=False)
        except zmq.Again:
            raise TimeoutError(
                f"stream simulator {self.endpoint}: {what} not taken within {self.send_timeout} s "
                "(is a receiver connected?)"
            ) from None

    def send_series(
        self,
        frames: Iterable[np.ndarray],
        n_frames: int,
        *,
        series_id: int = 1,
        rate: float | None = None,
        compression: str = "bslz4",
        drop: Iterable[int] = (),
        stop_after: int | None = None,
    ) -> SimReport:
        """Send ``start``, images 0 .. ``n_frames - 1`` from ``frames`` at ``rate`` per second
        (as fast as possible when None), and ``end``. Image numbers in ``drop`` are skipped;
        with ``stop_after`` only that many images are considered and no ``end`` is sent.
        All messages are prepared first (:func:`prepare_series`)."""
        prepared = prepare_series(frames, n_frames, series_id=series_id, rate=rate,
                                  compression=compression, drop=drop, stop_after=stop_after)
        return self.send_prepared(prepared, rate)

    def send_prepared(self, series: PreparedSeries, rate: float | None = None) -> SimReport:
        """Send a prepared series, image ``i`` at ``i * period`` s after the first."""
        report = SimReport(asked=rate, prepare_s=series.prepare_s)
        self._send(series.start, "start message")  # waits for a receiver
        t0 = time.monotonic()
        for i, message in enumerate(series.images):
            if series.period:
                time.sleep(max(0.0, t0 + i * series.period - time.monotonic()))
            if message is None:
                report.dropped.append(i)
                continue
            self._send(message, f"image {i}")
            report.last_sent = time.monotonic()
            if report.first_sent is None:
                report.first_sent = report.last_sent
            report.sent.append(i)
        if series.end is not None:
            self._send(series.end, "end message")
            report.ended = True
        return report

    def close(self) -> None:
        self._socket.close()
        self._context.term()

    def __enter__(self) -> StreamSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``saxs-stream-sim``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="saxs-stream-sim", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="tcp://127.0.0.1:31001", help="PUSH endpoint (tcp://127.0.0.1:31001)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--files", nargs="+", type=Path, metavar="PATH", help="frame files to replay")
    source.add_argument("--demo", type=int, metavar="N", help="N frames of the EIGER demo generator")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLS"), default=(2162, 2068),
                        help="detector size for --demo (2162 2068, an EIGER2 X 4M)")
    parser.add_argument("--rate", type=float, default=None, help="images per second (as fast as possible)")
    parser.add_argument("--compression", choices=("bslz4", "none"), default="bslz4")
    parser.add_argument("--series-id", type=int, default=1)
    parser.add_argument("--drop", type=int, nargs="*", default=(), metavar="N", help="image numbers not to send")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="stop after N images, without an end message")
    parser.add_argument("--send-timeout", type=float, default=30.0, help="seconds to wait for a receiver (30)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="saxs-stream-sim: %(message)s")
    try:
        if args.files:
            n, frames = sum(frame_count(p) for p in args.files), file_frames(args.files)
        else:
            from saxs_pipeline.demo.eiger import demo_frames

            n, frames = args.demo, demo_frames(args.demo, shape=tuple(args.shape))
        with StreamSimulator(args.bind, send_timeout=args.send_timeout) as sim:
            print(f"saxs-stream-sim: PUSH {sim.endpoint}", flush=True)
            log.info("preparing %d images before the clock starts ...", n)
            prepared = prepare_series(frames, n, series_id=args.series_id, rate=args.rate,
                                      compression=args.compression, drop=args.drop,
                                      stop_after=args.stop_after)
            log.info("prepared in %.1f s; sending%s", prepared.prepare_s,
                     f" at {args.rate:g} images/s" if args.rate else " as fast as taken")
            report = sim.send_prepared(prepared, args.rate)
    except (TimeoutError, OSError, ValueError, MemoryError) as exc:
        print(f"saxs-stream-sim: error: {exc}", file=sys.stderr)
        return 1
    log.info("series %d: %s; dropped %s, %s", args.series_id, report.describe(),
             report.dropped, "end sent" if report.ended else "no end message")
    if report.short():
        print(f"saxs-stream-sim: warning: sent {report.rate():.1f} images/s, short of the "
              f"{args.rate:g} asked by more than {SHORTFALL:.0%}: the receiver took them no "
              "faster, or this machine cannot send them faster", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
