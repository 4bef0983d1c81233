"""The reduction chain of one sample from a curve stack: average its frames (outliers
rejected), optionally subtract an averaged buffer, and what to write (``.chi``,
NXcanSAS, or a group of the zarr stack, which is the stack writer's job).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.ops.average import AverageResult, Correction, Test, average_frames, subtract
from saxs_pipeline.stack.select import StackCurves, load_curves

__all__ = ["Reduction", "Selection", "reduce_stack", "write_chi", "write_nxcansas"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Selection:
    """Frames of a stack (:mod:`saxs_pipeline.stack.select`, a union): positions in
    acquisition order (``"0-9,12"``) and patterns on the frame names (``"sample_*"``).
    Neither selects every frame."""

    indices: str | None = None
    names: Sequence[str] = ()

    def load(self, stack: PathLike, key: str) -> StackCurves:
        return load_curves(stack, key, indices=self.indices, patterns=list(self.names))


@dataclass(frozen=True, eq=False)
class Reduction:
    """The reduced curve: ``q`` (1/nm), ``intensity`` and ``error``, the integral
    parameters (the mean of the kept frames' I0/I1/I2, minus the buffer's: they are
    linear in I), the stack's calibration and ``notes``, a JSON-able record of what was
    kept, rejected and why (also the NXcanSAS process notes)."""

    key: str
    q: np.ndarray
    intensity: np.ndarray
    error: np.ndarray
    integparams: dict[str, float]
    calibration: dict[str, Any] | None
    notes: dict[str, Any] = field(default_factory=dict)
    title: str = ""


def _record(curves: StackCurves, result: AverageResult) -> dict[str, Any]:
    return {
        "test": result.test, "alpha": result.alpha, "correction": result.correction,
        "kept": [curves.names[i] for i in result.kept],
        "rejected": [{"frame": curves.names[r.frame], "reason": r.reason,
                      "p_adjusted": r.p_adjusted} for r in result.rejected],
    }


def _params(curves: StackCurves, kept: Sequence[int]) -> dict[str, float]:
    return {k: float(np.nanmean(v[list(kept)])) for k, v in curves.integparams.items()}


def reduce_stack(
    stack: PathLike,
    key: str = "R0",
    sample: Selection | None = None,
    *,
    buffer: Selection | None = None,
    buffer_stack: PathLike | None = None,
    test: Test = "cormap",
    alpha: float = 0.01,
    correction: Correction = "bonferroni",
) -> Reduction:
    """Average the ``sample`` frames of curve ``key`` (all frames by default); with a
    ``buffer`` selection or a ``buffer_stack`` (the buffer frames' stack, default the same
    stack; alone it means all of its frames), average those too and subtract. Both
    averages reject outliers (``ops.average``). ``notes["result"]`` says what was
    subtracted from what; the kept and rejected frames are named in ``notes["sample"]``
    and ``notes["buffer"]``."""
    curves = (sample or Selection()).load(stack, key)
    avg = average_frames(curves.intensity, curves.error, test=test, alpha=alpha,
                         correction=correction)
    source = f"{os.fspath(stack)} curve {key}"
    notes: dict[str, Any] = {"source": source, "sample": _record(curves, avg)}
    intensity, error = avg.intensity, avg.error
    params = _params(curves, avg.kept)
    title = f"average of {len(avg.kept)} frames"
    notes["result"] = f"the average of {len(avg.kept)} frames of {source}"
    if buffer is None and buffer_stack is not None:
        buffer = Selection()  # a buffer stack alone: all of its frames
    if buffer is not None:
        bstack = buffer_stack if buffer_stack is not None else stack
        bcurves = buffer.load(bstack, key)
        if bcurves.q.shape != curves.q.shape or not np.array_equal(bcurves.q, curves.q):
            raise ValueError(f"buffer curves in {os.fspath(bstack)} are on another q grid "
                             f"than the sample's")
        bavg = average_frames(bcurves.intensity, bcurves.error, test=test, alpha=alpha,
                              correction=correction)
        intensity, error = subtract(intensity, error, bavg.intensity, bavg.error)
        bparams = _params(bcurves, bavg.kept)
        params = {k: params[k] - bparams[k] for k in params}
        bsource = f"{os.fspath(bstack)} curve {key}"
        notes["buffer"] = {"source": bsource, **_record(bcurves, bavg)}
        title += f" minus buffer average of {len(bavg.kept)} frames"
        notes["result"] += (f" minus the average of {len(bavg.kept)} buffer frames of "
                            f"{bsource}")
    return Reduction(key, curves.q, intensity, error, params, curves.calibration, notes, title)


def write_chi(reduction: Reduction, path: PathLike) -> Path:
    """The reduced curve as a ``.chi`` file (the original's layout), the names of the
    frames averaged beside I0/I1/I2 (``frames``, ``buffer_frames``)."""
    from saxs_pipeline.curves import chi

    # the frames averaged (and subtracted) go on the I0/I1/I2 line: the header keeps the
    # original's four lines, which every reader skips
    frames = {"frames": reduction.notes["sample"]["kept"]}
    if "buffer" in reduction.notes:
        frames["buffer_frames"] = reduction.notes["buffer"]["kept"]
    chi.write_chi(path, reduction.q, reduction.intensity, reduction.error,
                  config_json=json.dumps(reduction.calibration or {}),
                  integparams={**reduction.integparams, **frames})
    return Path(path)


def write_nxcansas(reduction: Reduction, path: PathLike, *, q_units: str = "1/nm",
                   run: str = "") -> Path:
    """The reduced curve as NXcanSAS, the notes in its SASprocess group."""
    from saxs_pipeline.curves.nxcansas import q_from_per_nm
    from saxs_pipeline.curves.nxcansas import write_nxcansas as write

    return write(path, q_from_per_nm(reduction.q, q_units), reduction.intensity, reduction.error,
                 title=reduction.title, run=run or reduction.notes.get("source", ""),
                 q_units=q_units, calibration=reduction.calibration,
                 process_notes={"reduction": reduction.notes})
