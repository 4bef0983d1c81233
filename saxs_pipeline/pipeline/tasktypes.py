"""What the driver sends to a worker task and what the task returns, as small typed values.

The driver (:mod:`.dispatcher`, :mod:`.sinks`) and the task's parts on the worker
(:mod:`.task`, :mod:`.reading`) all speak these, so none of them imports another to learn
the shapes of its messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saxs_pipeline.integrator import Curve
from saxs_pipeline.ops.picture import FramePicture

__all__ = ["CurveData", "FrameResult", "FrameTask", "TaskOptions"]


@dataclass(frozen=True)
class FrameTask:
    """One frame to integrate: where to read it and the output base name (no ``.chi``)."""

    path: str
    output: str
    index: int = 0


@dataclass(frozen=True)
class TaskOptions:
    """Per-queue output options every task carries. ``keep_existing_chi``: a ``.chi``
    that exists is not replaced (``OverwriteFiles: false``; the curve still goes to the
    stack); ``write_chi`` false writes none (the stack only)."""

    write_chi: bool = True
    keep_existing_chi: bool = False
    write_svg: bool = False
    write_png: bool = False
    dataset: str | None = None  # the 3-D dataset of plain HDF5 files
    # where HDF5 links may lead, as the workers see them (frames.hdf5links); empty: the
    # frame file's own directory
    data_roots: tuple[str, ...] = ()


@dataclass
class CurveData:
    """The per-frame part of a :class:`Curve` (axes and labels stay with the driver's
    template), float32 like the curve stack."""

    key: str
    mean: np.ndarray
    poisson: np.ndarray
    std: np.ndarray | None
    integparams: dict[str, float]
    sums: Any = None  # BinSums (float64: exact re-binning and averaging) or None

    @classmethod
    def from_curve(cls, c: Curve) -> CurveData:
        return cls(c.key, np.asarray(c.mean, np.float32), np.asarray(c.poisson, np.float32),
                   None if c.std is None else np.asarray(c.std, np.float32),
                   {k: float(v) for k, v in c.integparams.items()}, c.sums)


@dataclass
class FrameResult:
    """What a task reports per frame. ``status``: ``"ok"``, ``"incomplete"`` (still being
    written: retry later; ``size`` is how many bytes were there), ``"error"`` or
    ``"nospace"`` (its outputs found the disk full: the run stops, the frame stays pending).
    ``fingerprint`` is (size, mtime_ns) of the file as it was read."""

    status: str
    error: str | None = None
    size: int | None = None
    fingerprint: tuple[int, int] | None = None
    image_time: float | None = None
    processed_time: float = 0.0
    chi: list[str] = field(default_factory=list)
    curves: list[CurveData] | None = None
    integration_time: float | None = None  # s of integration, the frame's share of its group
    nonfinite_pixels: int = 0  # +inf, -inf and NaN pixels of a float frame (excluded)
    worker: str | None = None  # the name of the worker that ran it (stat: frames by worker)
    picture: FramePicture | None = None  # the frame as the live page shows it, when asked
