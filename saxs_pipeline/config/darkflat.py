"""The dark and flat images a calibration names (keys ``Dark`` and ``Flat``).

Both are read by :func:`read_mean_image`: any frame file the pipeline reads (TIFF, HDF5,
CBF/EDF, through :func:`saxs_pipeline.frames.registry.open_frames`) or a ``.npy`` array of one
image ``(rows, cols)`` or a stack ``(n, rows, cols)``; a file of several frames gives their
mean. Pixels a frame marks unusable (negative values of integer frames, the invalid value
of unsigned ones, NaN) are NaN in the result, so that they cannot pass for counts. Sizes
are checked before any pixel data are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saxs_pipeline.config.calibration import Calibration
from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.frames.registry import open_frames
from saxs_pipeline.frames.source import ImageError

__all__ = ["CorrectionImages", "MeanImage", "load_correction_images", "read_mean_image"]

PathLike = str | os.PathLike[str]

# Frames summed at a time: bounds the memory of a long dark series (16 EIGER 4M frames
# are 290 MB in float64).
_CHUNK = 16


@dataclass(frozen=True, eq=False)
class MeanImage:
    """The mean ``image`` (float64, NaN where unusable) of ``frames`` frames."""

    image: np.ndarray
    frames: int


@dataclass(frozen=True, eq=False)
class CorrectionImages:
    """What ``Dark``/``Flat`` hold: the mean dark and the number of exposures it averages
    (frames in the file times ``DarkExposures``), and the flat as stored (not normalised)."""

    dark: np.ndarray | None = None
    dark_exposures: int = 1
    flat: np.ndarray | None = None


def _unusable(chunk: np.ndarray, invalid: float | None) -> np.ndarray:
    values = chunk.astype(np.float64)
    if chunk.dtype.kind == "i":
        values[chunk < 0] = np.nan
    elif invalid is not None:
        values[chunk == invalid] = np.nan
    return values


def _from_npy(path: Path, shape: tuple[int, int]) -> MeanImage:
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    if data.ndim not in (2, 3) or tuple(data.shape[-2:]) != tuple(shape):
        raise ImageError(f"{path}: array of shape {data.shape}, need {tuple(shape)} or (n, {shape[0]}, {shape[1]}) "
                         f"(Imagesize is [{shape[0]}, {shape[1]}])")
    stack = data[None] if data.ndim == 2 else data
    if stack.shape[0] == 0 or stack.dtype.kind not in "iuf":
        raise ImageError(f"{path}: holds no image of numbers (shape {data.shape}, dtype {data.dtype})")
    total = np.zeros(shape)
    for start in range(0, stack.shape[0], _CHUNK):
        total += _unusable(np.asarray(stack[start : start + _CHUNK]), None).sum(axis=0)
    return MeanImage(total / stack.shape[0], int(stack.shape[0]))


def read_mean_image(path: PathLike, shape: tuple[int, int]) -> MeanImage:
    """The mean of the frames in ``path`` (see the module doc); ``shape`` is Imagesize.
    Raises :class:`~saxs_pipeline.frames.source.ImageError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if path.suffix.lower() == ".npy":
        return _from_npy(path, shape)
    with open_frames(path, shape=shape) as src:
        n = src.frame_count()
        if n < 1:
            raise ImageError(f"{path}: holds no frames")
        total = np.zeros(shape)
        step = max(_CHUNK, src.chunk_frames)
        for start in range(0, n, step):
            chunk = src.read(start, min(start + step, n))
            total += _unusable(chunk, src.invalid_value).sum(axis=0)
    return MeanImage(total / n, n)


def load_correction_images(cal: Calibration) -> CorrectionImages:
    """The calibration's dark and flat (None where not configured). Raises
    :class:`CalibrationError` naming the key and the file."""
    images: dict[str, MeanImage] = {}
    for key, name in (("Dark", cal.dark), ("Flat", cal.flat)):
        if name is None:
            continue
        try:
            images[key] = read_mean_image(cal.resolve(name), cal.geometry.image_shape)
        except (ImageError, OSError) as exc:
            raise CalibrationError("calibration", f"$.{key}", str(exc)) from None
    dark = images.get("Dark")
    return CorrectionImages(
        dark=None if dark is None else dark.image,
        dark_exposures=(1 if dark is None else dark.frames) * cal.dark_exposures,
        flat=images["Flat"].image if "Flat" in images else None,
    )
