"""A frame as a small picture a person looks at (the live page): block means over
``block x block`` pixels, at most ``LONG_SIDE`` picture pixels on the long side, on a log
scale as uint8 levels, with two levels reserved for what must stand out:

* ``NO_DATA`` (0): a block without one valid pixel (module gap, the detector's invalid
  marker, a negative or NaN value);
* ``SATURATED`` (255): a block holding a saturated pixel (at or above the detector's count
  cutoff), whatever its mean: one such pixel makes its whole block untrustworthy.

Levels ``LOWEST``..``HIGHEST`` (1..254) stand for the block mean ``m`` on a log scale
between ``low`` and ``high`` (counts per pixel): ``1 + round(253 log(m/low) / log(high/low))``,
clipped; a mean at or below zero is ``LOWEST``. Without a given range, ``low`` and ``high``
are the 0.5th and 99.9th percentiles of the positive means of the blocks the mask leaves
(of all blocks without a mask, or where it leaves none), widened to the next tenth of a
decade: the scale spans what is integrated, a few hot blocks do not darken the rest, the
beam stop's shadow (0.4 counts/pixel beside 30-270 on the real Pilatus buffer frame) does
not squeeze it into a few levels, and frames alike share one scale (their colours do not
flicker, nor does the page redraw its colour bar). Row 0 of the picture is the frame's row 0 (the top of the image as
the detector writes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["HIGHEST", "LONG_SIDE", "LOWEST", "NO_DATA", "SATURATED", "FramePicture",
           "block_factor", "block_sums", "frame_picture"]

LONG_SIDE = 256
NO_DATA, LOWEST, HIGHEST, SATURATED = 0, 1, 254, 255
PERCENTILES = (0.5, 99.9)
STEPS_PER_DECADE = 10  # the default range's ends are multiples of 10**(1/10)


@dataclass(frozen=True)
class FramePicture:
    """The picture of one frame (see the module doc). ``mask``: the blocks at least half
    covered by the calibration's mask (None without one). ``shape``: the frame's (rows,
    cols); picture pixel (i, j) covers frame rows ``i*block`` .. and columns ``j*block`` ..
    (the last row and column of blocks may be narrower)."""

    levels: np.ndarray  # (h, w) uint8
    mask: np.ndarray | None  # (h, w) bool
    block: int
    shape: tuple[int, int]
    low: float  # counts per pixel at LOWEST
    high: float  # counts per pixel at HIGHEST
    saturated: int  # saturated pixels in the frame


def block_factor(shape: tuple[int, ...], long_side: int = LONG_SIDE) -> int:
    """The smallest block that brings the long side to at most ``long_side``."""
    return max(1, -(-max(shape) // long_side))


def block_sums(a: np.ndarray, block: int, dtype: type = np.float64) -> np.ndarray:
    """Sums of ``a`` over ``block x block`` blocks (the last ones narrower), summed in
    ``dtype``."""
    return _sums_along_rows(_sums_along_rows(a, block, dtype).T, block, dtype).T


def _sums_along_rows(a: np.ndarray, block: int, dtype: type) -> np.ndarray:
    # a reshape and a sum for the whole blocks, then the narrower last one: 3-5 times as
    # fast as np.add.reduceat on a Pilatus 1M frame
    whole = a.shape[0] // block * block
    out = a[:whole].reshape(-1, block, *a.shape[1:]).sum(axis=1, dtype=dtype)
    if whole < a.shape[0]:
        out = np.concatenate([out, a[whole:].sum(axis=0, dtype=dtype)[None]])
    return out


def frame_picture(image: np.ndarray, *, invalid: float | None = None,
                  saturation: float | None = None, mask: np.ndarray | None = None,
                  long_side: int = LONG_SIDE,
                  scale: tuple[float, float] | None = None) -> FramePicture:
    """The picture of ``image`` (2-D counts). ``invalid``: the value marking invalid
    pixels (besides negative and NaN ones); ``saturation``: the count from which a pixel
    is saturated (None: none is); ``mask``: True where the calibration masks a pixel;
    ``scale``: (low, high) counts per pixel, else from the percentiles (module doc)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"a frame picture needs a 2-D image, not shape {image.shape}")
    block = block_factor(image.shape, long_side)
    kind = image.dtype.kind
    # unsigned data have no negative pixels: one pass less over a 4M frame
    bad = np.zeros(image.shape, bool) if kind == "u" else image < 0
    if kind == "f":
        bad |= ~np.isfinite(image)
    if invalid is not None:
        bad |= image == invalid
    good = ~bad
    counts = block_sums(good, block, np.int32)
    values = image.astype(np.float32)
    values[bad] = 0
    # float32 sums: a picture needs 3 digits, and float64's take twice the time
    sums = block_sums(values, block, np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    n_saturated, sat_blocks = 0, None
    if saturation is not None:
        sat = good & (image >= saturation)
        n_saturated = int(np.count_nonzero(sat))
        if n_saturated:
            sat_blocks = block_sums(sat, block, np.int32) > 0
    shown_mask = None
    if mask is not None:
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the frame's {image.shape}")
        area = np.outer(np.diff(np.r_[np.arange(0, image.shape[0], block), image.shape[0]]),
                        np.diff(np.r_[np.arange(0, image.shape[1], block), image.shape[1]]))
        shown_mask = 2 * block_sums(mask, block, np.int32) >= area
    positive = (counts > 0) & (mean > 0)
    used = positive if shown_mask is None else positive & ~shown_mask
    low, high = _range(mean[used] if used.any() else mean[positive], scale)
    levels = np.full(mean.shape, LOWEST, np.uint8)
    span = math.log(high / low)
    levels[positive] = (LOWEST + np.rint(np.clip(np.log(mean[positive] / low) / span, 0, 1)
                                         * (HIGHEST - LOWEST))).astype(np.uint8)
    levels[counts == 0] = NO_DATA
    if sat_blocks is not None:
        levels[sat_blocks] = SATURATED
    return FramePicture(levels, shown_mask, block, (int(image.shape[0]), int(image.shape[1])),
                        low, high, n_saturated)


def _range(means: np.ndarray, scale: tuple[float, float] | None) -> tuple[float, float]:
    if scale is not None:
        low, high = float(scale[0]), float(scale[1])
        if not (0 < low < high):
            raise ValueError(f"a picture's scale needs 0 < low < high, not {scale}")
        return low, high
    if not means.size:
        return 1.0, 10.0  # nothing positive to show: any range draws every block LOWEST
    low, high = (math.log10(v) * STEPS_PER_DECADE for v in np.percentile(means, PERCENTILES))
    low, high = math.floor(low), max(math.ceil(high), math.floor(low) + 1)  # a flat frame too
    return 10.0 ** (low / STEPS_PER_DECADE), 10.0 ** (high / STEPS_PER_DECADE)
