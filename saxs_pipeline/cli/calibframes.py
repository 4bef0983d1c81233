"""Frames for the calibration commands: read through the project's frame readers (any
format), summed, with the detector's invalid pixels and its pixel mask, and the pixel
size from the file where it says so."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from saxs_pipeline.frames.registry import open_frames

__all__ = ["FrameSet", "UsageError", "load_frames", "write_mask"]


class UsageError(ValueError):
    """A command line that cannot be carried out (exit 2 with the message)."""


@dataclass(frozen=True)
class FrameSet:
    """Every frame of the given files (stored dtype), the detector's pixel mask (True =
    bad) when a file carries one, the pixel size (um, [y, x]) from the files or None, and
    the files' names."""

    frames: list[np.ndarray]
    pixel_mask: np.ndarray | None
    pixel_um: tuple[float, float] | None
    names: list[str]

    def summed(self) -> np.ndarray:
        """The sum of all frames, NaN where any frame has an invalid value."""
        from saxs_pipeline.ops.datamask import invalid_values

        total = np.zeros(self.frames[0].shape)
        bad = np.zeros(self.frames[0].shape, dtype=bool)
        for f in self.frames:
            invalid = invalid_values(f)
            bad |= invalid
            total += np.where(invalid, 0.0, f)
        total[bad] = np.nan
        return total


def _pixel_size(meta: dict) -> tuple[float, float] | None:
    """Pilatus headers: ``Pixel_size`` (x, y) in m; NeXus: ``x_pixel_size``/``y_pixel_size``."""
    if "Pixel_size" in meta:
        size = meta["Pixel_size"]
        x, y = (size, size) if np.isscalar(size) else size[:2]
        scale = 1e6 if meta.get("Pixel_size_unit", "m") == "m" else 1.0
        return float(y) * scale, float(x) * scale
    if "x_pixel_size" in meta and "y_pixel_size" in meta:
        return float(meta["y_pixel_size"]) * 1e6, float(meta["x_pixel_size"]) * 1e6
    return None


def load_frames(paths: Sequence[str], pixel_um: float | None = None, dataset: str | None = None) -> FrameSet:
    """All frames of ``paths``; ``pixel_um`` (the ``--pixel-size`` flag) when the files do
    not say (it also overrides them)."""
    frames: list[np.ndarray] = []
    mask = None
    size = None
    for path in paths:
        with open_frames(path, dataset=dataset) as src:
            n = src.frame_count()
            data = src.read(0, n)
            meta = src.metadata(0, 1)
            pm = src.pixel_mask()
        if frames and data.shape[1:] != frames[0].shape:
            raise UsageError(f"{path}: frames of {data.shape[1]} x {data.shape[2]} px, the first file's are "
                             f"{frames[0].shape[0]} x {frames[0].shape[1]}")
        frames.extend(data)
        if pm is not None:
            mask = pm.astype(bool) if mask is None else mask | pm.astype(bool)
        if size is None and meta:
            size = _pixel_size(meta[0])
    if pixel_um is not None:
        size = (float(pixel_um), float(pixel_um))
    return FrameSet(frames, mask, size, [str(p) for p in paths])


def write_mask(path: str, valid: np.ndarray) -> None:
    """A mask file by extension: FIT2D ``.msk``, ``.npy`` or ``.tif`` (nonzero = masked,
    what :func:`saxs_pipeline.config.masks.read_mask` reads back)."""
    from saxs_pipeline.config.masks import write_fit2d_msk

    low = path.lower()
    if low.endswith(".msk"):
        write_fit2d_msk(path, valid)
    elif low.endswith(".npy"):
        np.save(path, (~valid).astype(np.uint8))
    elif low.endswith((".tif", ".tiff")):
        import tifffile

        tifffile.imwrite(path, (~valid).astype(np.uint8))
    else:
        raise UsageError(f"{path}: a mask is written as .msk, .npy or .tif")
