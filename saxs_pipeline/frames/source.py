"""What every frame source offers, and the errors they raise.

Readers (:mod:`saxs_pipeline.frames.tiff`, :mod:`saxs_pipeline.frames.hdf5`,
:mod:`saxs_pipeline.frames.fabioformats`) implement :class:`FrameSource`;
:mod:`saxs_pipeline.frames.registry` picks one for a path. This module imports no reader,
so readers and the registry can all depend on it.

Errors: :class:`ImageIncompleteError` (or its subclass :class:`FrameIncompleteError`) when
the data are most likely still being written -- the pipeline retries these -- and
:class:`ImageError` for broken input. Messages name the file and the frame index.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "FrameIncompleteError",
    "FrameSource",
    "ImageError",
    "ImageIncompleteError",
    "PathLike",
    "check_range",
    "check_shape",
    "invalid_value_for",
]

PathLike = str | os.PathLike[str]


class ImageError(ValueError):
    """A frame that cannot be used: not a TIFF, not a 2-D image, or the wrong shape."""


class ImageIncompleteError(ImageError):
    """A TIFF that is shorter than its own structure declares: most likely still being
    written. ``present`` and ``needed`` are byte counts (``needed`` is a lower bound when
    the header itself is cut)."""

    def __init__(self, source: str, present: int, needed: int, what: str = "data") -> None:
        self.source, self.present, self.needed = source, present, needed
        super().__init__(
            f"frame {source} is incomplete: {present} bytes present, "
            f"{what} needs at least {needed} bytes"
        )


class FrameIncompleteError(ImageIncompleteError):
    """Frames that are most likely still being written (a data file not there yet, an HDF5
    file still open for writing, a frame beyond the current end of a growing dataset).

    ``present`` is the size in bytes of the file concerned now, so the pipeline can tell a
    growing file from a stalled one; ``needed`` is a lower bound (0 when unknown)."""

    def __init__(self, source: str, reason: str, present: int = 0, needed: int = 0) -> None:
        ValueError.__init__(self, f"{source} is incomplete: {reason}")
        self.source, self.present, self.needed = source, present, needed


@runtime_checkable
class FrameSource(Protocol):
    """What every frame reader offers (see the module doc)."""

    path: str
    shape: tuple[int, int]
    dtype: np.dtype
    chunk_frames: int
    invalid_value: int | None

    def frame_count(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...

    def metadata(self, start: int, stop: int) -> list[dict[str, Any]]: ...

    def pixel_mask(self) -> np.ndarray | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> FrameSource: ...

    def __exit__(self, *exc: object) -> None: ...


def invalid_value_for(dtype: np.dtype) -> int | None:
    """The invalid-pixel marker for frames of ``dtype`` (see the module doc)."""
    dt = np.dtype(dtype)
    return int(np.iinfo(dt).max) if dt.kind == "u" else None


def check_range(source: str, start: int, stop: int, count: int) -> None:
    """Raise ImageError unless ``0 <= start < stop <= count``."""
    if not 0 <= start < stop or stop > count:
        raise ImageError(f"{source}: frames [{start}, {stop}) are not a range within its {count} frames")


def check_shape(source: str, shape: tuple[int, int], expected: tuple[int, int] | None) -> None:
    """Raise ImageError when the declared frame ``shape`` is not ``expected`` (Imagesize)."""
    if expected is not None and tuple(shape) != tuple(expected):
        raise ImageError(
            f"{source}: frames have shape ({shape[0]}, {shape[1]}) but Imagesize is "
            f"[{expected[0]}, {expected[1]}]"
        )
