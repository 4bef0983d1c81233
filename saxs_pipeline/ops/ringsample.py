"""Every calibrant ring a geometry predicts in view, measured in sectors on the frame.

For a trial geometry each usable pixel gets its model 2theta and azimuth; ring ``j`` is
then the set of pixels near ``2theta_j``, binned along the model's 2theta scaled to radial
pixels -- so a tilted detector's elliptical ring is a straight, sharp peak in every
sector's profile. A sector's fitted peak offset turns back into a detector point through
the model's closed-form ray (:func:`ringmodel.ray_points`); those points, not the model,
go to the refinement, which is why a few pixels of model error do not bias the result.

The window of a ring is at most 0.45 of the gap to its neighbours (so no pixel serves two
rings), and a ring that is not resolved from its neighbour (window under 2.5 px) is
dropped with that reason. Sectors are ~``arc_px`` long: enough pixels per profile for a
clean fit, many independent points per ring; a faint ring that gives too few points in
fine sectors is tried again in coarser ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from saxs_pipeline.ops.calibrants import Calibrant, Reflection
from saxs_pipeline.ops.georefine import RingPointSet
from saxs_pipeline.ops.ringmodel import (
    Frame,
    Params,
    azimuth,
    radial_scale,
    ray_points,
    two_theta_at,
)
from saxs_pipeline.ops.ringpoints import sector_points

__all__ = ["Extraction", "Pixels", "extract_rings"]


@dataclass(frozen=True)
class Pixels:
    """The usable pixels of a frame: centres in image coordinates and their counts."""

    u: np.ndarray
    v: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray, usable: np.ndarray) -> Pixels:
        vv, uu = np.nonzero(usable)
        return cls(uu + 0.5, vv + 0.5, image[vv, uu].astype(np.float64))


@dataclass(frozen=True)
class Extraction:
    """Rings in view (``reflections``, their 2theta in rad and mean radius in px), the
    points measured on them (ring index = position in ``reflections``), the rings with
    enough points (``used``) and those dropped with the reason."""

    reflections: list[Reflection]
    two_theta: list[float]
    radius_px: list[float]
    points: RingPointSet
    used: list[int]
    dropped: list[tuple[Reflection, str]]
    width_px: float


def _in_view(tth_pix: np.ndarray, calibrant: Calibrant, wavelength_a: float):
    lo, hi = float(tth_pix.min()), float(tth_pix.max())
    return [(r, t) for r, t in calibrant.visible(wavelength_a) if lo < t < hi]


def extract_rings(pix: Pixels, p: Params, frame: Frame, calibrant: Calibrant, *, width_px: float = 1.5,
                  arc_px: float = 20.0, min_points: int = 6, max_sectors: int = 180,
                  window_px: float | None = None) -> Extraction:
    """Measure every ring of ``calibrant`` that geometry ``p`` puts on the usable pixels."""
    tth = two_theta_at(pix.u, pix.v, p, frame)
    phi = azimuth(pix.u, pix.v, p, frame)
    view = _in_view(tth, calibrant, p.wavelength_a)
    empty = RingPointSet(np.zeros(0), np.zeros(0), np.zeros(0, int), np.zeros(0), np.zeros(0))
    if not view:
        return Extraction([], [], [], empty, [], [], width_px)
    refl = [r for r, _ in view]
    t = np.array([x for _, x in view])
    probe = np.linspace(-math.pi, math.pi, 16, endpoint=False)
    scale = np.array([float(np.mean(radial_scale(tj, probe, p, frame))) for tj in t])
    cu, cv = p.centre_uv(frame)
    radius = []
    for tj in t:
        ru, rv = ray_points(np.full(probe.size, tj), probe, p, frame)
        radius.append(float(np.mean(np.hypot(ru - cu, rv - cv))))
    gap = np.full(t.size, np.inf)
    if t.size > 1:
        d = np.diff(t)
        gap[:-1] = np.minimum(gap[:-1], d)
        gap[1:] = np.minimum(gap[1:], d)
    gap_px = gap * scale
    # +-4 sigma of the ring: its tails and enough background on both sides for the slope
    wide = window_px if window_px is not None else float(np.clip(4.0 * width_px, 6.0, 40.0))
    hw = np.minimum(wide, 0.45 * gap_px)
    sectors = np.clip(np.round(2 * math.pi * np.array(radius) / arc_px), 8, max_sectors).astype(int)
    dropped: list[tuple[Reflection, str]] = []
    resolved = hw >= 2.5
    for k in np.flatnonzero(~resolved):
        dropped.append((refl[k], f"not resolved from its neighbour ({gap_px[k]:.1f} px apart)"))
    ks = np.flatnonzero(resolved)
    rad = np.array(radius)
    pts = sector_points(tth, phi, pix.values, t[ks], hw[ks], sectors[ks], width0=width_px, scales=scale[ks],
                        radii=rad[ks])
    ring = ks[pts.ring] if len(pts) else np.zeros(0, int)
    counts = np.bincount(ring, minlength=t.size)
    # faint rings: coarser sectors collect more pixels per profile
    retry = [k for k in ks if counts[k] < min_points and sectors[k] > 8]
    if retry:
        r_ks = np.array(retry)
        coarse = np.maximum(sectors[r_ks] // 4, 8)
        more = sector_points(tth, phi, pix.values, t[r_ks], hw[r_ks], coarse, width0=width_px, scales=scale[r_ks],
                             radii=rad[r_ks])
        more_ring = r_ks[more.ring] if len(more) else np.zeros(0, int)
        more_counts = np.bincount(more_ring, minlength=t.size)
        better = [k for k in retry if more_counts[k] > counts[k]]
        keep_old = ~np.isin(ring, better)
        keep_new = np.isin(more_ring, better)
        pts = _merge(pts, keep_old, more, keep_new)
        ring = np.concatenate([ring[keep_old], more_ring[keep_new]])
        counts = np.bincount(ring, minlength=t.size)
        sectors = sectors.copy()
        for k in better:
            sectors[k] = max(sectors[k] // 4, 8)
    used = [int(k) for k in ks if counts[k] >= min_points]
    for k in ks:
        if counts[k] < min_points:
            dropped.append((refl[k], f"too few points: {counts[k]} of {sectors[k]} sectors show the ring"))
    take = np.isin(ring, used)
    ring, off, sig, ph = ring[take], pts.offset[take], pts.sigma[take], pts.phi[take]
    t_meas = t[ring] + off / scale[ring]
    u, v = ray_points(t_meas, ph, p, frame)
    sigma_px = sig / scale[ring] * radial_scale(t[ring], ph, p, frame)
    width = float(np.median(pts.width[take])) if take.any() else width_px
    points = RingPointSet(u=u, v=v, ring=ring, sigma=sigma_px, d_a=np.array([r.d_a for r in refl]))
    return Extraction(refl, [float(x) for x in t], radius, points, used, dropped, width)


def _merge(a, keep_a, b, keep_b):
    """Concatenate two SectorPoints' selected entries (only the fields used here)."""
    from saxs_pipeline.ops.ringpoints import SectorPoints

    def cat(name):
        return np.concatenate([getattr(a, name)[keep_a], getattr(b, name)[keep_b]])

    return SectorPoints(ring=cat("ring"), phi=cat("phi"), offset=cat("offset"), sigma=cat("sigma"),
                        width=cat("width"), snr=cat("snr"), npix=cat("npix"), sectors=a.sectors)
