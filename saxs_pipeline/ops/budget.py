"""How much memory an operator build needs, known before it starts (and grids with more
bins than the detector has pixels, refused as not meant).

A calibration with ``RadialBins: 2e9`` or ``PixelPerRadialElement: 1e-7`` is valid JSON
whose build would try to allocate tens of GiB. :func:`check_budget` estimates the build's
peak from the calibration alone and refuses past a limit, naming the JSON path to fix.

The estimate follows the build (:mod:`saxs_pipeline.ops.operator`): per sub-pixel, its
bin coordinate and splitting fractions (float64); per pixel, the weights of the few bins
it reaches ("span"); per bin, edges and sums. Measured peaks (tracemalloc) on the
Pilatus 1M: ov 1/2/3/4 point split 97/242/441/733 MiB, ov 3 linear 1000/5000 bins
760/998 MiB, ov 2 linear 20000 bins 1502 MiB, ov 2 phi-mode 345 bins 6270 MiB, 360 x 500
cakes at ov 2/3 643/1431 MiB, a 90 deg wedge at ov 3 706 MiB; this estimate is 10-40 %
above each.
"""

from __future__ import annotations

import math
import os

from saxs_pipeline.config.calibration import Calibration, Geometry, MaskConfig
from saxs_pipeline.config.calibschema import CalibrationError

__all__ = ["BudgetError", "build_limit", "check_budget", "operator_bytes"]

GiB = 2**30
LIMIT_ENV = "SAXS_PIPELINE_MAX_BUILD_MEMORY"


class BudgetError(CalibrationError):
    """A calibration whose operator would not fit the memory limit."""


def build_limit() -> int:
    """Bytes one build may use: ``$SAXS_PIPELINE_MAX_BUILD_MEMORY`` (bytes, or with a
    ``K``/``M``/``G`` suffix), else half of this machine's memory."""
    text = os.environ.get(LIMIT_ENV, "").strip().upper().removesuffix("B").removesuffix("I")
    if text:
        scale = {"K": 2**10, "M": 2**20, "G": GiB}.get(text[-1], 1)
        return int(float(text.rstrip("KMG")) * scale)
    import psutil

    return int(psutil.virtual_memory().total // 2)


def _bins(geometry: Geometry, mc: MaskConfig) -> tuple[float, float]:
    """(number of bins, bin width in 1/nm) the mask entry's grid will have."""
    rows, cols = geometry.image_shape
    ps = geometry.pixel_size_um[0] * 1e-3
    by = max(geometry.beam_center_y, rows - geometry.beam_center_y)
    bx = max(geometry.beam_center_x, cols - geometry.beam_center_x)
    rmax_px = math.hypot(by, bx)
    two_theta = math.atan(rmax_px * ps / geometry.distance_mm) + math.radians(abs(geometry.tilt_angle_deg))
    qmax = 4 * math.pi / (geometry.wavelength_a / 10) * math.sin(min(two_theta, math.pi) / 2)
    if mc.phi_mode:
        n = rmax_px * ps / math.pi / mc.pixels_per_radial_element * 2 * math.pi
        return n, 2 * math.pi / max(n, 1e-300)
    if mc.radial_edges is not None:
        edges = mc.radial_edges
        return len(edges) - 1, min(b - a for a, b in zip(edges, edges[1:], strict=False))
    if mc.radial_bins is not None:
        lo, hi = mc.radial_range if mc.radial_range is not None else (0.0, qmax)
        return mc.radial_bins, (hi - lo) / mc.radial_bins
    n = rmax_px / mc.pixels_per_radial_element
    return n, qmax / max(n, 1e-300)


def operator_bytes(geometry: Geometry, mc: MaskConfig) -> tuple[int, float]:
    """(estimated peak bytes of the build, number of bins)."""
    rows, cols = geometry.image_shape
    npix = rows * cols
    ov = mc.oversampling
    nbins, width = _bins(geometry, mc)
    ps = geometry.pixel_size_um[0] * 1e-3
    # q changes fastest per pixel near the beam: dq/dr <= (2 pi / lambda) / d
    dq_pixel = 2 * math.pi / (geometry.wavelength_a / 10) * ps * math.sqrt(2) / geometry.distance_mm
    # phi: the sub-pixels of the pixel under the beam reach every bin, and the build's
    # per-pixel weight rows are as wide as the widest pixel's
    per_pixel = nbins if mc.phi_mode else dq_pixel / max(width, 1e-300)
    linear = not mc.phi_mode and (mc.pixel_splitting == "linear" or (
        mc.pixel_splitting is None and (mc.radial_edges is not None or mc.radial_bins is not None)))
    edges = math.ceil(per_pixel / ov) + 1 if linear else 0
    span = math.ceil(per_pixel) + (edges if linear else 1)
    per_sub = 48 + (8 * (edges + 1) if linear else 0)
    if mc.azimuth_bins is not None:
        # A cake's (pixel, bin) pairs go through a COO list (row, column, weight) and its
        # CSC copy, plus each sub-pixel's azimuth and chi bin.
        per_sub += 120
        nbins *= mc.azimuth_bins
    total = 64 * 2**20 + npix * ov * ov * per_sub + npix * span * 24 + nbins * 200
    return int(min(total, 2**62)), nbins


def check_budget(cal: Calibration, limit: int | None = None) -> None:
    """Raise :class:`BudgetError` (naming the mask entry's JSON path) when a mask entry's
    operator would need more than ``limit`` bytes (default :func:`build_limit`) to build,
    and :class:`CalibrationError` when its curve would have more bins than the detector
    has pixels (most bins empty: not a grid anyone means)."""
    limit = build_limit() if limit is None else limit
    rows, cols = cal.geometry.image_shape
    for mc in cal.masks:
        need, nbins = operator_bytes(cal.geometry, mc)
        where = f"$.Masks[{mc.index}]"
        what = ("RadialBins" if mc.radial_bins is not None else
                "RadialEdges" if mc.radial_edges is not None else "PixelPerRadialElement")
        if need > limit:
            raise BudgetError(
                "calibration", f"{where}.{what}",
                f"{nbins:.3g} bins at Oversampling {mc.oversampling} would need about "
                f"{need / GiB:.1f} GiB to build (limit {limit / GiB:.1f} GiB; raise it with "
                f"{LIMIT_ENV} if this is intended)")
        curve_bins = _bins(cal.geometry, mc)[0]  # of one curve: a cake's are per azimuth
        if curve_bins > rows * cols:
            raise CalibrationError(
                "calibration", f"{where}.{what}",
                f"{curve_bins:.3g} {'phi' if mc.phi_mode else 'q'} bins for a {rows} x {cols} "
                f"pixel detector ({rows * cols} pixels): more bins than pixels leaves most of "
                "them empty")
