"""What the scheduler keeps of a queue's live data: bounded buffers filled by the
driver's pushes (:mod:`saxs_pipeline.live.feed`), read by the page and the metrics.

Everything here runs on the scheduler's event loop (the push handler, the Bokeh
callbacks and the ``/metrics`` handler all do), so there are no locks.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from saxs_pipeline.live.picture import from_message
from saxs_pipeline.ops.picture import FramePicture

__all__ = [
    "INTEGRATION_BUCKETS",
    "LATENCY_BUCKETS",
    "Histogram",
    "LiveQueues",
    "QueueLive",
    "decode",
]

# Seconds. Latency file closed -> curve written: a healthy run is well under a second, a
# run falling behind goes to minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Seconds of a worker's integration per frame: milliseconds for a Pilatus 1M.
INTEGRATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
OVERLAY = 8  # previous curves drawn fading behind the latest
WATERFALL = 300  # curves in the frame x q map
SERIES = 5000  # I0/I1/I2 points
FAILURES = 20  # failures listed with their reason
LATENCY_SAMPLES = 1000  # the last frames' latencies, for p50 / p99
FPS_WINDOW = 5.0  # seconds


def decode(data: bytes | None) -> np.ndarray:
    """A float32 array pushed as bytes (compact in msgpack)."""
    return np.frombuffer(data, dtype=np.float32) if data else np.zeros(0, np.float32)


@dataclass
class Histogram:
    """Cumulative-ready bucket counts, as Prometheus exposes them."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            acc += n
            out.append((bound, acc))
        return out


class QueueLive:
    """One queue's live data. ``version`` grows with every push that changed it (a push
    of an idle queue changes nothing), so a page redraws only what is new."""

    def __init__(self, queue_id: str) -> None:
        self.queue_id = queue_id
        self.version = 0
        self.processed = self.failed = self.retried = self.backlog = 0
        self.calibration: dict[str, Any] = {}
        self.curve_key = ""
        self.axis = ("q", "1/nm")  # the curves' axis: name and unit
        self.q = np.zeros(0, np.float32)
        self.latest_name = ""
        self.curves: deque[tuple[str, np.ndarray, np.ndarray]] = deque(maxlen=OVERLAY + 1)
        self.waterfall: deque[np.ndarray] = deque(maxlen=WATERFALL)
        self.series: deque[tuple[float, float, float, float]] = deque(maxlen=SERIES)
        self.series_total = 0  # points ever added: a page streams only the new ones
        self.curves_total = 0  # curves ever added: a page sends curves and map when it grew
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.done_times: deque[tuple[float, int]] = deque()
        self.failures: deque[dict[str, Any]] = deque(maxlen=FAILURES)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.integration = Histogram(INTEGRATION_BUCKETS)
        self.picture: FramePicture | None = None  # the latest frame's picture
        self.picture_name = ""
        self.pictures_total = 0  # pictures ever received: a page redraws the frame when it grew
        self.closed = False
        self.last_push = time.time()

    def push(self, msg: dict[str, Any]) -> None:
        """Take one push of the driver (see :class:`saxs_pipeline.live.feed.LiveFeed`)."""
        now = time.time()
        self.last_push = now
        before = self._shown_state()
        for k in ("processed", "failed", "retried", "backlog"):
            if k in msg:
                setattr(self, k, int(msg[k]))
        if msg.get("calibration"):
            self.calibration = dict(msg["calibration"])
        if msg.get("curve_key"):
            self.curve_key = str(msg["curve_key"])
        if msg.get("axis"):
            self.axis = (str(msg["axis"][0]), str(msg["axis"][1]))
        picture = from_message(msg["picture"]) if msg.get("picture") else None
        if picture is not None:
            self.picture_name, self.picture = picture
            self.pictures_total += 1
        if msg.get("q"):
            q = decode(msg["q"])
            if len(q) != len(self.q):  # another calibration: old rows do not fit the map
                self.waterfall.clear()
                self.curves.clear()
            self.q = q
        frames = msg.get("frames") or []
        for f in frames:
            latency = f.get("latency")
            if latency is not None:
                self.latency.observe(max(float(latency), 0.0))
                self.latencies.append(float(latency))
            if f.get("integration") is not None:
                self.integration.observe(float(f["integration"]))
            self.series.append((float(f.get("done") or now), float(f.get("I0", 0.0)),
                                float(f.get("I1", 0.0)), float(f.get("I2", 0.0))))
            self.series_total += 1
        if frames:
            self.done_times.append((now, len(frames)))
        for c in msg.get("curves") or []:
            intensity = decode(c.get("I"))
            if len(intensity) != len(self.q):
                continue
            self.curves.append((str(c.get("name", "")), intensity, decode(c.get("err"))))
            self.waterfall.append(intensity)
            self.curves_total += 1
            self.latest_name = str(c.get("name", ""))
        self.failures.extend(msg.get("failures") or [])
        self.closed = bool(msg.get("closed", False))
        if self._shown_state() != before:
            self.version += 1

    def _shown_state(self) -> tuple[Any, ...]:
        return (self.processed, self.failed, self.retried, self.backlog, self.closed,
                self.series_total, self.curves_total, len(self.q), self.curve_key,
                self.axis, self.pictures_total,
                tuple(sorted(self.calibration.items(), key=str)), len(self.failures),
                self.failures[-1] if self.failures else None)

    # -- reading -------------------------------------------------------------------------

    def fps(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        while self.done_times and self.done_times[0][0] < now - FPS_WINDOW:
            self.done_times.popleft()
        return sum(n for _, n in self.done_times) / FPS_WINDOW

    def latency_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of the last frames' latencies in seconds, NaN before any."""
        if not self.latencies:
            return float("nan"), float("nan")
        p50, p99 = np.percentile(np.fromiter(self.latencies, float), [50, 99])
        return float(p50), float(p99)

    def summary(self) -> dict[str, Any]:
        p50, p99 = self.latency_percentiles()
        return {"queue": self.queue_id, "processed": self.processed, "failed": self.failed,
                "retried": self.retried, "backlog": self.backlog, "fps": self.fps(),
                "latency_p50": p50, "latency_p99": p99, "latest": self.latest_name,
                "points": len(self.series), "calibration": self.calibration,
                "closed": self.closed}


class LiveQueues(Protocol):
    """What the page and the metrics read of the scheduler plugin: its queues' buffers.
    (The plugin starts them; typing them against this keeps them from importing it.)"""

    queues: dict[str, QueueLive]
