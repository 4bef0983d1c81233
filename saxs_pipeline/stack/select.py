"""Choose frames of a zarr curve stack and load their curves (for export and averaging).

A selection is the union, in stack order, of frame indices (``"0-9,12,-1"``: ranges
inclusive, negative indices from the end), exact file names and shell-style globs on the
file names. No selection means every frame. Something that selects nothing is an error.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from saxs_pipeline.stack.read import read_stack

__all__ = ["StackCurves", "load_curves", "parse_indices", "select_frames"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, eq=False)
class StackCurves:
    """The selected frames of one curve key: ``q`` (``axis_units``), ``intensity`` and
    ``error`` (the Poisson column) as float64 ``(n_frames, n_q)``, the frames' file names,
    stack rows, image times (s since 1970, NaN unknown) and I0/I1/I2, and the stack's
    calibration (raw JSON dict)."""

    key: str
    q: np.ndarray
    axis_units: str
    intensity: np.ndarray
    error: np.ndarray
    filenames: list[str]
    rows: list[int]
    image_time: np.ndarray
    integparams: dict[str, np.ndarray]
    calibration: dict[str, Any] | None


def parse_indices(text: str, n: int) -> list[int]:
    """Indices from ``"0-9,12,-1"`` for a stack of ``n`` frames."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise ValueError(f"frame selection {part!r} is not an index or a range a-b") from None
        for i in (first, last):
            if not -n <= i < n:
                raise ValueError(f"frame index {i} is outside the stack's {n} frames")
        first, last = first % n, last % n
        if last < first:
            raise ValueError(f"frame range {part!r} runs backwards")
        out.extend(range(first, last + 1))
    return out


def select_frames(
    filenames: Sequence[str],
    *,
    indices: str | Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    globs: Sequence[str] | None = None,
) -> list[int]:
    """Rows of the stack chosen by ``indices``, ``names`` and ``globs`` (module doc)."""
    n = len(filenames)
    if indices is None and not names and not globs:
        if n == 0:
            raise ValueError("the stack has no frames")
        return list(range(n))
    chosen: set[int] = set()
    if indices is not None:
        if isinstance(indices, str):
            chosen.update(parse_indices(indices, n))
        else:
            chosen.update(parse_indices(",".join(str(int(i)) for i in indices), n))
    row_of = {name: i for i, name in enumerate(filenames)}
    for name in names or ():
        if name not in row_of:
            raise ValueError(f"frame {name!r} is not in the stack")
        chosen.add(row_of[name])
    for pattern in globs or ():
        hits = [i for i, name in enumerate(filenames) if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise ValueError(f"no frame in the stack matches {pattern!r}")
        chosen.update(hits)
    if not chosen:
        raise ValueError("the frame selection is empty")
    return sorted(chosen)


def load_curves(
    path: PathLike,
    key: str = "R0",
    *,
    indices: str | Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    globs: Sequence[str] | None = None,
) -> StackCurves:
    """The curves of ``key`` for the selected frames of the stack at ``path``."""
    stack = read_stack(path)
    curves = stack["curves"]
    if key not in curves:
        raise ValueError(f"curve stack {os.fspath(path)} has no curve {key!r} "
                         f"(it has {sorted(curves)})")
    entry = curves[key]
    filenames = [str(f) for f in stack["filename"]]
    rows = select_frames(filenames, indices=indices, names=names, globs=globs)
    return StackCurves(
        key=key,
        q=np.asarray(entry["axis"], dtype=np.float64),
        axis_units=str(entry["axis_units"]),
        intensity=np.asarray(entry["I"][rows], dtype=np.float64),
        error=np.asarray(entry["poisson"][rows], dtype=np.float64),
        filenames=[filenames[i] for i in rows],
        rows=rows,
        image_time=np.asarray(stack["image_time"][rows], dtype=np.float64),
        integparams={k: np.asarray(entry[k][rows], dtype=np.float64) for k in ("I0", "I1", "I2")},
        calibration=stack["calibration"],
    )
