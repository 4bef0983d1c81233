"""The picture of a task's last frame, made on the worker that integrated it, when the
driver asked for one (at most a few a second per queue: see
:meth:`saxs_pipeline.live.feed.LiveFeed.picture_due`). Tasks that were not asked keep no
frame and pay nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from saxs_pipeline.ops.picture import frame_picture

if TYPE_CHECKING:
    from saxs_pipeline.integrator import Integrator
    from saxs_pipeline.pipeline.tasktypes import FrameResult

__all__ = ["LastFrame", "saturation_of"]


def saturation_of(meta: dict[str, Any]) -> float | None:
    """The count from which a pixel is saturated, where the frame's header says it (the
    Pilatus ``Count_cutoff``); None where it does not."""
    cutoff = meta.get("Count_cutoff")
    return float(cutoff) if isinstance(cutoff, int | float) and cutoff > 0 else None


class LastFrame:
    """Keeps the last frame integrated without error, then puts its picture on its
    result."""

    def __init__(self) -> None:
        self._last: tuple[FrameResult, np.ndarray, float | None, dict[str, Any]] | None = None

    def offer(self, result: FrameResult, image: np.ndarray, invalid: float | None,
              meta: dict[str, Any]) -> None:
        self._last = (result, image, invalid, meta)

    def attach(self, integ: Integrator) -> None:
        if self._last is None:
            return
        result, image, invalid, meta = self._last
        self._last = None
        valid = integ.valid[0] if integ.valid else None
        result.picture = frame_picture(image, invalid=invalid, saturation=saturation_of(meta),
                                       mask=None if valid is None else ~valid)
