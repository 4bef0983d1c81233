"""Choose frames of a zarr curve stack and load their curves (for export and averaging).

Frames are chosen in **acquisition order**, the order :func:`~saxs_pipeline.stack.read.open_dataset`
shows (source file, numbers in names compared as numbers, then frame index), never by
stack row (rows are stored as frames complete). A selection is the union of positions in
that order (``"0-9,12,-1"``: ranges inclusive, negative positions from the end) and of
shell-style patterns on the frame names (``sample_*``). A frame's name is its source file
relative to the run's directory, with ``#<index>`` for frames of multi-frame files
(``run_master.h5#3``); a pattern matching the file name selects all of its frames. No
selection means every frame; something that selects nothing is an error. The curves come
back in acquisition order.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from saxs_pipeline.stack.read import frame_names, read_stack

__all__ = ["StackCurves", "frame_names", "load_curves", "parse_indices", "select_frames"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, eq=False)
class StackCurves:
    """The selected frames of one curve key, in acquisition order: ``q`` (``axis_units``),
    ``intensity`` and ``error`` (the Poisson column) as float64 ``(n_frames, n_q)``, the
    frames' names (module doc), stack rows, image times (s since 1970, NaN unknown) and
    I0/I1/I2, and the stack's calibration (raw JSON dict)."""

    key: str
    q: np.ndarray
    axis_units: str
    intensity: np.ndarray
    error: np.ndarray
    names: list[str]
    rows: list[int]
    image_time: np.ndarray
    integparams: dict[str, np.ndarray]
    calibration: dict[str, Any] | None


def parse_indices(text: str, n: int) -> list[int]:
    """Positions from ``"0-9,12,-1"`` among ``n`` frames."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise ValueError(f"frame selection {part!r} is not a position or a range a-b") from None
        for i in (first, last):
            if not -n <= i < n:
                raise ValueError(f"frame {i} is outside the stack's {n} frames (0-{n - 1})")
        first, last = first % n, last % n
        if last < first:
            raise ValueError(f"frame range {part!r} runs backwards")
        out.extend(range(first, last + 1))
    return out


def _matches(name: str, pattern: str) -> bool:
    # a frame of a multi-frame file also answers to its file's name
    return any(n == pattern or fnmatch.fnmatchcase(n, pattern)
               for n in (name, name.partition("#")[0]))


def select_frames(
    names: Sequence[str],
    *,
    indices: str | Sequence[int] | None = None,
    patterns: Sequence[str] | None = None,
) -> list[int]:
    """Positions in ``names`` (frame names in acquisition order) chosen by ``indices`` and
    ``patterns`` (module doc), ascending."""
    n = len(names)
    if indices is None and not patterns:
        if n == 0:
            raise ValueError("the stack has no frames")
        return list(range(n))
    chosen: set[int] = set()
    if indices is not None:
        text = indices if isinstance(indices, str) else ",".join(str(int(i)) for i in indices)
        chosen.update(parse_indices(text, n))
    for pattern in patterns or ():
        hits = [i for i, name in enumerate(names) if _matches(name, pattern)]
        if not hits:
            raise ValueError(f"no frame in the stack is named or matches {pattern!r}")
        chosen.update(hits)
    if not chosen:
        raise ValueError("the frame selection is empty")
    return sorted(chosen)


def load_curves(
    path: PathLike,
    key: str = "R0",
    *,
    indices: str | Sequence[int] | None = None,
    patterns: Sequence[str] | None = None,
) -> StackCurves:
    """The curves of ``key`` for the selected frames of the stack at ``path``."""
    stack = read_stack(path)
    curves = stack["curves"]
    if key not in curves:
        raise ValueError(f"curve stack {os.fspath(path)} has no curve {key!r} "
                         f"(it has {sorted(curves)})")
    entry = curves[key]
    order = stack["order"]  # rows in acquisition order
    names = frame_names(stack["filename"][order], stack["frame_index"][order])
    rows = [int(order[i]) for i in select_frames(names, indices=indices, patterns=patterns)]
    return StackCurves(
        key=key,
        q=np.asarray(entry["axis"], dtype=np.float64),
        axis_units=str(entry["axis_units"]),
        intensity=np.asarray(entry["I"][rows], dtype=np.float64),
        error=np.asarray(entry["poisson"][rows], dtype=np.float64),
        names=frame_names(stack["filename"][rows], stack["frame_index"][rows]),
        rows=rows,
        image_time=np.asarray(stack["image_time"][rows], dtype=np.float64),
        integparams={k: np.asarray(entry[k][rows], dtype=np.float64) for k in ("I0", "I1", "I2")},
        calibration=stack["calibration"],
    )
