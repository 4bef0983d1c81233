"""The rows of a curve stack: a frame's curves checked against the stack's curve specs,
and a block of rows as one array per (group, array) for the writer
(:mod:`saxs_pipeline.stack.writer`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from saxs_pipeline.stack.layout import CURVE_ARRAYS, PARAM_ARRAYS, SUM_ARRAYS, SUM_FIELDS, CurveSpec

if TYPE_CHECKING:
    from saxs_pipeline.integrator import Curve

__all__ = ["StackRow", "columns", "make_row"]


@dataclass
class StackRow:
    """A frame's row of the stack, buffered until the writer flushes it."""

    filename: str
    frame_index: int
    image_time: float
    processed_time: float
    token: Any
    # key -> (mean, poisson, std or None, (I0, I1, I2), the bin sums or None)
    curves: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def make_row(specs: Mapping[str, CurveSpec], filename: str, frame_index: int,
             curves: Sequence[Curve], image_time: float | None, processed_time: float,
             token: Any) -> StackRow:
    """One frame's row, its curves checked against the stack's specs (points, sums)."""
    entry = StackRow(str(filename), int(frame_index),
                     math.nan if image_time is None else float(image_time),
                     float(processed_time), token)
    for c in curves:
        spec = specs.get(c.key)
        if spec is None:
            raise ValueError(f"{filename}: curve {c.key} is not in the stack ({list(specs)})")
        arrays = [c.mean, c.poisson] + ([c.std] if c.std is not None else [])
        n = int(np.prod(spec.shape))
        if any(np.size(a) != n for a in arrays):
            raise ValueError(
                f"{filename}: curve {c.key} has {np.size(c.mean)} points, the stack {n}"
            )
        arrays = [np.reshape(a, spec.shape) for a in arrays]
        params = tuple(float(c.integparams.get(k, math.nan)) for k in PARAM_ARRAYS)
        sums = None
        if spec.sums:
            if c.sums is None:
                raise ValueError(f"{filename}: curve {c.key} has no bin sums, the stack stores them")
            sums = [np.reshape(np.asarray(getattr(c.sums, f), np.float64), spec.shape)
                    for f in SUM_FIELDS]
        entry.curves[c.key] = (arrays[0], arrays[1],
                               arrays[2] if c.std is not None else None, params, sums)
    return entry


def columns(specs: Mapping[str, CurveSpec], rows: Sequence[StackRow]
            ) -> dict[tuple[str | None, str], np.ndarray]:
    """The values of ``rows`` per (group, array); group None is the root."""
    out: dict[tuple[str | None, str], np.ndarray] = {
        (None, "filename"): np.array([r.filename for r in rows], dtype=object),
        (None, "frame_index"): np.array([r.frame_index for r in rows], dtype=np.int64),
        (None, "image_time"): np.array([r.image_time for r in rows], dtype=np.float64),
        (None, "processed_time"): np.array([r.processed_time for r in rows], dtype=np.float64),
    }
    for key, spec in specs.items():
        cols = {name: np.full((len(rows), *spec.shape), np.nan, dtype=np.float32)
                for name in CURVE_ARRAYS}
        params = np.full((len(rows), 3), np.nan, dtype=np.float64)
        sums = {name: np.zeros((len(rows), *spec.shape)) for name in SUM_ARRAYS} if spec.sums else {}
        for i, r in enumerate(rows):
            entry = r.curves.get(key)
            if entry is None:
                continue
            for name, values in zip(CURVE_ARRAYS, entry[:3], strict=True):
                if values is not None:
                    cols[name][i] = values
            params[i] = entry[3]
            for name, values in zip(sums, entry[4] or (), strict=False):
                sums[name][i] = values
        out.update({(key, name): values for name, values in sums.items()})
        for name in CURVE_ARRAYS:
            out[key, name] = cols[name]
        for j, name in enumerate(PARAM_ARRAYS):
            out[key, name] = params[:, j]
    return out
