"""``saxs-stream-sim``: replay frames as a DECTRIS Stream V2 series on a ZeroMQ PUSH socket.

Frames come from files (any format :func:`saxs_pipeline.frames.registry.open_frames` reads, all
frames of each file in order) or from the EIGER demo generator
(:func:`saxs_pipeline.demo.eiger.demo_frames`, in memory). The series is one ``start``
message, one ``image`` message per frame (bitshuffle-LZ4 or uncompressed) at the given
rate, and an ``end`` message -- unless told to drop image numbers or to stop after some
images without ``end``, for testing receivers. Sends time out (``send_timeout``) rather
than block forever when no receiver is connected.

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

__all__ = ["SimReport", "StreamSimulator", "file_frames", "main"]

log = logging.getLogger(__name__)


@dataclass
class SimReport:
    """What one :meth:`StreamSimulator.send_series` call sent."""

    sent: list[int] = field(default_factory=list)  # image numbers sent
    dropped: list[int] = field(default_factory=list)
    ended: bool = False


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
        with ``stop_after`` only that many images are considered and no ``end`` is sent."""
        it = iter(frames)
        first = next(it)
        report = SimReport()
        skip = set(drop)
        period = 1.0 / rate if rate else 0.0
        self._send(encode_start(
            series_id, number_of_images=n_frames, image_shape=first.shape,
            arm_date=datetime.now(UTC), frame_time=period, count_time=period,
            saturation_value=int(np.iinfo(first.dtype).max - 1) if first.dtype.kind == "u" else None,
        ), "start message")
        t0 = time.monotonic()
        last = n_frames if stop_after is None else min(stop_after, n_frames)
        for i, frame in zip(range(last), itertools.chain([first], it), strict=False):
            if period:
                time.sleep(max(0.0, t0 + i * period - time.monotonic()))
            if i in skip:
                report.dropped.append(i)
                continue
            self._send(encode_image(series_id, i, frame, compression=compression,
                                    start_time=i * period, frame_time=period or None), f"image {i}")
            report.sent.append(i)
        if stop_after is None:
            self._send(encode_end(series_id), "end message")
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
            report = sim.send_series(frames, n, series_id=args.series_id, rate=args.rate,
                                     compression=args.compression, drop=args.drop, stop_after=args.stop_after)
    except (TimeoutError, OSError, ValueError) as exc:
        print(f"saxs-stream-sim: error: {exc}", file=sys.stderr)
        return 1
    log.info("series %d: %d images sent, dropped %s, %s", args.series_id, len(report.sent),
             report.dropped, "end sent" if report.ended else "no end message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
