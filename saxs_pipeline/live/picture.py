"""A frame's picture (:class:`~saxs_pipeline.ops.picture.FramePicture`) as the driver
pushes it to the scheduler (plain values and bytes, compact in msgpack: a Pilatus 1M
frame is 209 x 197 levels, 41 kB, and its mask as bits, 5 kB), and where the page draws it.

The page's coordinates are the calibration's, FIT2D's: X in pixels from the left edge, Y
from the *bottom* edge, so the beam centre is drawn at ``(BeamCenter[1], BeamCenter[0])``
as it stands in the calibration. The frame's row 0 is its top (numpy row ``r`` spans Y =
rows - r - 1 .. rows - r, :mod:`saxs_pipeline.ops.geometry`), and Bokeh draws an image's
row 0 at the bottom, so the picture is drawn flipped, its top edge at Y = rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from saxs_pipeline.ops.picture import FramePicture

__all__ = ["beam_xy", "from_message", "placement", "to_message"]


def to_message(name: str, p: FramePicture) -> dict[str, Any]:
    h, w = p.levels.shape
    return {"name": name, "h": h, "w": w, "levels": np.ascontiguousarray(p.levels).tobytes(),
            "mask": b"" if p.mask is None else np.packbits(p.mask).tobytes(),
            "block": p.block, "shape": list(p.shape), "low": p.low, "high": p.high,
            "saturated": p.saturated}


def from_message(msg: dict[str, Any]) -> tuple[str, FramePicture] | None:
    """(frame name, picture), None for a message that does not hold one whole."""
    try:
        h, w = int(msg["h"]), int(msg["w"])
        levels = np.frombuffer(msg["levels"], np.uint8)
        if levels.size != h * w:
            return None
        mask = None
        if msg.get("mask"):
            mask = np.unpackbits(np.frombuffer(msg["mask"], np.uint8), count=h * w).astype(bool)
            mask = mask.reshape(h, w)
        rows, cols = (int(v) for v in msg["shape"])
        return str(msg.get("name", "")), FramePicture(
            levels.reshape(h, w), mask, int(msg["block"]), (rows, cols), float(msg["low"]),
            float(msg["high"]), int(msg.get("saturated", 0)))
    except (KeyError, TypeError, ValueError):
        return None


def placement(p: FramePicture) -> dict[str, float]:
    """Where the flipped picture goes on the page's axes (module doc): picture pixel (i, j)
    covers frame rows ``i*block``.. and columns ``j*block``.., so its top edge is at Y =
    rows; where the last blocks are narrower the drawing reaches below Y = 0 and beyond
    X = cols by less than a block."""
    h, w = p.levels.shape
    return {"x": 0.0, "y": float(p.shape[0] - h * p.block), "dw": float(w * p.block),
            "dh": float(h * p.block)}


def beam_xy(calibration: dict[str, Any]) -> tuple[float, float] | None:
    """(X, Y) of the beam centre on the page's axes, from the calibration summary's
    ``beam_center`` (FIT2D's BeamCenter [Y, X]); None without one."""
    centre = calibration.get("beam_center")
    if not isinstance(centre, list | tuple) or len(centre) != 2:
        return None
    return float(centre[1]), float(centre[0])
