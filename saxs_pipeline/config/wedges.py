"""Azimuth wedges ``[start, stop]`` of a mask entry (``Azimuth``): their span and the
check of one wedge. The convention is in ``docs/sectors.md`` and
:mod:`saxs_pipeline.ops.binning`."""

from __future__ import annotations

__all__ = ["check_wedge", "wedge_span"]


def wedge_span(start: float, stop: float) -> float:
    """Degrees from ``start`` counter-clockwise to ``stop`` ([330, 30] spans 60)."""
    return stop - start if stop > start else stop - start + 360.0


def check_wedge(w: list[float]) -> tuple[float, float]:
    """``(start, stop)`` of a wedge as floats; ValueError saying why one is not valid."""
    start, stop = float(w[0]), float(w[1])
    if start == stop:
        raise ValueError(f"start equals stop ({start:g} deg): an empty wedge (use [0, 360] "
                         "for the full circle)")
    span = wedge_span(start, stop)
    if not 0 < span <= 360:
        raise ValueError(f"[{start:g}, {stop:g}] spans {span:g} deg; a wedge spans more than 0 "
                         "and at most 360 deg")
    return start, stop
