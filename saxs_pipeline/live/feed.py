"""The driver's side of the live view: :class:`LiveFeed`, a result sink that gathers
what the page and the metrics show and pushes it to the scheduler's ``SaxsLive`` plugin.

The results path only appends to a buffer (under a lock, O(frames)); a thread of its own
sends the buffer every ``interval`` seconds (``saxs_live_push`` RPC), so a slow or lost
scheduler never slows the integration. Curves come from the results the driver already
has: nothing is read again from files. Counters are cumulative, so a lost push loses
only the curves in it, never the counts. Paths go out relative to the run's data root
(:func:`relative_paths`): the page is for whoever reaches the dashboard, and the machine's
directory layout is not theirs to read. The frame's picture is made by the worker that
integrated it, when :meth:`LiveFeed.picture_due` said so as the task was submitted: at
most one every ``PICTURE_INTERVAL`` seconds per queue, however many workers run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.live import PUSH_HANDLER
from saxs_pipeline.live.picture import to_message
from saxs_pipeline.ops.picture import FramePicture
from saxs_pipeline.stack.layout import INTENSITY_UNITS, CurveSpec

__all__ = ["LiveFeed", "calibration_summary", "intensity_unit", "relative_paths"]

log = logging.getLogger(__name__)

MAX_CURVES_PER_PUSH = 32  # the map shows a few hundred; more per push would only cost
PICTURE_INTERVAL = 0.5  # s between pictures asked of the workers: the page's push interval


def _f32(a: Any) -> bytes:
    return np.ascontiguousarray(a, dtype=np.float32).tobytes()


def relative_paths(text: str, root: str | os.PathLike[str],
                   others: Sequence[str | os.PathLike[str]] = ()) -> str:
    """``text`` (a file name, an error message) with every path under ``root`` or one of
    ``others`` (the outputs) written relative to ``root``."""
    root = os.path.abspath(root)
    bases = {os.path.abspath(b) for b in (root, *others)}
    for base in sorted(bases, key=len, reverse=True):  # the innermost first
        rel = os.path.relpath(base, root)
        if base != os.sep:
            text = text.replace(base + os.sep, "" if rel == os.curdir else rel + os.sep)
    return text


def intensity_unit(calibration: dict[str, Any]) -> str:
    """The unit of the curves' I: 1/cm on the absolute scale, else the stack's."""
    normalisation = calibration.get("Normalisation", {}) or {}
    return "1/cm" if normalisation.get("AbsoluteScale") is not None else INTENSITY_UNITS


def calibration_summary(calibration: dict[str, Any], calibration_id: str) -> dict[str, Any]:
    """What the page says about the calibration in use (small: it goes with every push)."""
    geometry = calibration.get("Geometry", {}) or {}
    out: dict[str, Any] = {"id": calibration_id, "I_unit": intensity_unit(calibration)}
    for key, value in (("distance_mm", geometry.get("DedectorDistanceMM")),
                       ("beam_center", geometry.get("BeamCenter")),
                       ("wavelength", calibration.get("Wavelength")),
                       ("masks", len(calibration.get("Masks", []) or [])),
                       ("slices", len(calibration.get("Slices", []) or []))):
        if value is not None:
            out[key] = value
    return out


class LiveFeed:
    """Sink for ``(job, result)`` pairs and failure records; see the module doc.
    ``client()`` gives the current Dask client or raises; ``counts()`` the queue's
    ``backlog`` and ``retried``; ``roots``: the run's data root, then its outputs, the
    paths shown relative to the first."""

    def __init__(self, queue_id: str, client: Callable[[], Any], templates: Sequence[Any],
                 calibration: dict[str, Any], counts: Callable[[], dict[str, int]],
                 interval: float = 0.5, roots: Sequence[Path] = ()) -> None:
        self.queue_id, self._client, self._counts = queue_id, client, counts
        self._roots = list(roots)
        self.interval = float(interval)
        first = templates[0] if templates else None
        self.curve_key = first.key if first is not None else ""
        self._q = _f32(first.radial) if first is not None else b""
        spec = CurveSpec.from_curve(first) if first is not None else None
        self._axis = [spec.axis_name, spec.axis_units] if spec is not None else ["q", "1/nm"]
        self._calibration = calibration
        self._lock = threading.Lock()
        self._frames: list[dict[str, Any]] = []
        self._curves: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        self._picture: tuple[str, FramePicture] | None = None  # the latest, not yet pushed
        self._picture_asked = -PICTURE_INTERVAL  # time.monotonic() of the last ask
        self.processed = self.failed = 0
        self._sent_q = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._url: str | None = None

    # -- sink ----------------------------------------------------------------------------

    def picture_due(self) -> bool:
        """Whether the task submitted now should bring its last frame's picture (True at
        most once per ``PICTURE_INTERVAL``; called by the dispatcher per task)."""
        now = time.monotonic()
        with self._lock:
            if now - self._picture_asked < PICTURE_INTERVAL:
                return False
            self._picture_asked = now
            return True

    def add(self, pairs: Sequence[tuple[Any, Any]]) -> None:
        frames, curves = [], []
        picture = None
        for job, r in pairs:
            if r.status != "ok" or r.curves is None:
                continue
            if r.picture is not None:
                picture = (str(job.output).rsplit("/", 1)[-1], r.picture)
            c = next((c for c in r.curves if c.key == self.curve_key), None)
            params = c.integparams if c is not None else {}
            # "file closed" is the file's mtime as the task read it; a stream frame has
            # no file, its detector time stands in.
            closed = r.fingerprint[1] / 1e9 if r.fingerprint else r.image_time
            done = r.processed_time or time.time()
            frames.append({"done": done, "latency": done - closed if closed else None,
                           "integration": getattr(r, "integration_time", None),
                           "I0": params.get("I0", 0.0), "I1": params.get("I1", 0.0),
                           "I2": params.get("I2", 0.0)})
            if c is not None:
                curves.append({"name": str(job.output).rsplit("/", 1)[-1],
                               "I": c.mean, "err": c.poisson})
        with self._lock:
            self.processed += len(frames)
            self._frames += frames
            self._curves = (self._curves + curves)[-MAX_CURVES_PER_PUSH:]
            if picture is not None:
                self._picture = picture

    def fail(self, record: dict[str, Any]) -> None:
        shown = {k: record.get(k) for k in ("file", "frame", "error", "time")}
        if self._roots:
            for k in ("file", "error"):
                if isinstance(shown[k], str):
                    shown[k] = relative_paths(shown[k], self._roots[0], self._roots[1:])
        with self._lock:
            self.failed += record.get("count", 1)  # a range of stream images: all of them
            self._failures.append(shown)

    # -- pushing -------------------------------------------------------------------------

    def start(self) -> LiveFeed:
        self._thread = threading.Thread(target=self._run, name=f"saxs-live-{self.queue_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, push: bool = True) -> None:
        """Stop the thread, then a last push that marks the queue closed (``push``
        False: the scheduler is gone, do not wait for it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if push:
            self.push(closed=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()

    def message(self, closed: bool = False) -> dict[str, Any]:
        """Take what gathered since the last push (the counters are totals)."""
        with self._lock:
            frames, curves, failures = self._frames, self._curves, self._failures
            self._frames, self._curves, self._failures = [], [], []
            picture, self._picture = self._picture, None
            processed, failed = self.processed, self.failed
        counts = self._counts()
        msg: dict[str, Any] = {
            "queue": self.queue_id, "processed": processed, "failed": failed,
            "retried": int(counts.get("retried", 0)), "backlog": int(counts.get("backlog", 0)),
            "calibration": self._calibration, "curve_key": self.curve_key, "axis": self._axis,
            "frames": frames, "failures": failures, "closed": closed,
            "curves": [{"name": c["name"], "I": _f32(c["I"]), "err": _f32(c["err"])}
                       for c in curves],
        }
        if not self._sent_q:
            msg["q"] = self._q
        if picture is not None:
            msg["picture"] = to_message(*picture)
        return msg

    def push(self, closed: bool = False) -> bool:
        msg = self.message(closed)
        try:
            client = self._client()
            reply = client.sync(getattr(client.scheduler, PUSH_HANDLER), msg=msg,
                                callback_timeout=5)
        except Exception as exc:  # the view is informative: never fail the run for it
            if not self._warned:
                log.info("queue %s: live view not updated (%s)", self.queue_id, exc)
                self._warned = True
            self._sent_q = False  # a new scheduler needs the axis again
            return False
        # a scheduler that restarted (or got the axis lost) asks for the axis again
        self._sent_q, self._warned = bool(reply and reply.get("has_q")), False
        if reply and reply.get("url"):
            self._url = reply["url"]
        return True

    def url(self) -> str | None:
        """The SAXS page's URL (from the last push, else asked), None without a page."""
        if self._url is None:
            from saxs_pipeline.live.plugin import dashboard_url

            try:
                self._url = dashboard_url(self._client())
            except Exception as exc:  # no cluster now: no URL to give
                log.debug("no dashboard URL: %s", exc)
        return self._url
