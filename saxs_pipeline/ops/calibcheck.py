"""How well a calibration fits a calibrant frame, as numbers (issue 23, item 3).

For every calibrant ring the geometry puts on the detector, the frame is cut into
azimuthal sectors (8 and 12 are the usual choices) and in each sector the ring's
measured radial position is compared with where this geometry predicts it, in radial
pixels: a wrong beam centre shows as an offset that swings with azimuth (+ on one side,
- on the other), a wrong distance as the same offset everywhere growing with the ring's
radius, a wrong tilt as a swing that grows with angle. The spread of the offsets across
sectors is the one figure a person can judge at a glance; the verdict is "fits" when
every measured offset is within the tolerance and every ring is found where predicted.

The measurement is the sector Gaussian fit of :mod:`ringpoints` in the geometry's own
2theta coordinate, with a window wide enough (up to 0.45 of the gap to the next ring) to
catch a ring that sits several pixels away from its prediction. Where a sector's fit
finds the ring, its offset is then the weighted mean of fits in sub-sectors ~``arc_px``
long (those the calibration itself measures; the ones beyond 3 robust sigmas of their
median left out): along a 30 deg arc of an outer ring the profile's height and width
change (a beam wider than high widens the ring's sides), and where a module gap or the
beam stop takes the pixels of one side of the ring from part of the arc, one fit over the
whole arc mixes the profiles of different azimuths unevenly across the ring -- 0.1 px off
on a generated frame of known geometry. A sector none of whose sub-sectors shows the ring
(a faint ring) keeps its own fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from saxs_pipeline.ops import geometry as geo
from saxs_pipeline.ops.calibrants import Calibrant
from saxs_pipeline.ops.ringmodel import (
    Frame,
    Params,
    azimuth,
    radial_scale,
    ray_points,
    two_theta_at,
)
from saxs_pipeline.ops.ringpoints import sector_points

__all__ = ["CalibrationCheck", "RingCheck", "check_calibration"]


@dataclass(frozen=True)
class RingCheck:
    """One ring: label, d (A), predicted mean radius (px), per-sector offset measured -
    predicted (px; NaN where the sector shows no ring) and its 1 sigma, their weighted
    mean, and the spread (max - min) over sectors."""

    label: str
    d_a: float
    radius_px: float
    offsets_px: np.ndarray
    sigmas_px: np.ndarray
    mean_offset_px: float
    spread_px: float
    with_data: int  # sectors whose window at this ring is filled enough to measure

    @property
    def found(self) -> int:
        return int(np.isfinite(self.offsets_px).sum())

    @property
    def worst_px(self) -> float:
        o = self.offsets_px[np.isfinite(self.offsets_px)]
        return float(np.abs(o).max()) if o.size else float("nan")


@dataclass(frozen=True)
class CalibrationCheck:
    """The check of one geometry on one frame: sector edges (deg, FIT2D's azimuth
    convention of :mod:`geometry`), the rings, the largest offset and largest spread (px),
    the tolerance used and the verdict with a sentence saying why.

    A ring is "not found" when fewer than ``min_found`` of the sectors that can measure it
    (their window on usable pixels) show a peak within the window."""

    sectors: int
    rings: tuple[RingCheck, ...]
    worst_px: float
    spread_px: float
    tolerance_px: float
    fits: bool
    message: str

    def as_dict(self) -> dict:
        return {
            "sectors": self.sectors, "tolerance_px": self.tolerance_px, "fits": self.fits,
            "message": self.message, "worst_px": _num(self.worst_px), "spread_px": _num(self.spread_px),
            "rings": [{"order": r.label, "d_A": r.d_a, "radius_px": round(r.radius_px, 2),
                       "offsets_px": [_num(x) for x in r.offsets_px], "sigmas_px": [_num(x) for x in r.sigmas_px],
                       "mean_offset_px": _num(r.mean_offset_px), "spread_px": _num(r.spread_px)}
                      for r in self.rings],
        }


def _num(x: float) -> float | None:
    return round(float(x), 4) if math.isfinite(x) else None


def check_calibration(image: np.ndarray, usable: np.ndarray, geometry: geo.Geometry, calibrant: Calibrant, *,
                      sectors: int = 12, tolerance_px: float = 0.5, width_px: float = 2.0,
                      min_found: float = 0.5, arc_px: float = 20.0) -> CalibrationCheck:
    """Measure every ring ``geometry`` predicts on ``image`` (``usable`` pixels) in
    ``sectors`` azimuthal sectors; see the module docstring for the verdict."""
    frame = Frame(tuple(image.shape), tuple(float(x) for x in geometry.pixel_size_um))
    p = Params.from_geometry(geometry)
    vv, uu = np.nonzero(usable)
    u, v = uu + 0.5, vv + 0.5
    values = image[vv, uu].astype(np.float64)
    tth = two_theta_at(u, v, p, frame)
    phi = azimuth(u, v, p, frame)
    lo, hi = float(tth.min()), float(tth.max())
    view = [(r, t) for r, t in calibrant.visible(geometry.wavelength_a) if lo < t < hi]
    probe = np.linspace(-math.pi, math.pi, 16, endpoint=False)
    cu, cv = p.centre_uv(frame)
    rings: list[RingCheck] = []
    t_all = np.array([t for _, t in view])
    for k, (refl, t) in enumerate(view):
        scale = float(np.mean(radial_scale(t, probe, p, frame)))
        others = np.delete(t_all, k)
        gap = float(np.min(np.abs(others - t)) * scale) if others.size else np.inf
        ru, rv = ray_points(np.full(probe.size, t), probe, p, frame)
        radius = float(np.mean(np.hypot(ru - cu, rv - cv)))
        kw = {"scales": np.array([scale]), "radii": np.array([radius]), "min_fill": 0.6}
        # the ring's width from the whole azimuth first (wide window), then +-4 sigma of it:
        # the window the calibration itself fits in
        wide = min(max(4.0 * width_px, 15.0), 0.45 * gap)
        if wide < 3.0:
            continue
        whole = sector_points(tth, phi, values, np.array([t]), np.array([wide]), np.array([1]), width0=width_px, **kw)
        width = float(whole.width[0]) if len(whole) else width_px
        hw = min(float(np.clip(4.0 * width, 6.0, 40.0)), 0.45 * gap)
        pts = sector_points(tth, phi, values, np.array([t]), np.array([hw]), np.array([sectors]), width0=width, **kw)
        if pts.sectors[0] == 0:
            continue
        off, sig = _per_sector(pts, t, p, frame, scale, sectors)
        split = max(1, round(2 * math.pi * radius / (arc_px * sectors)))
        if split > 1:
            sub = sector_points(tth, phi, values, np.array([t]), np.array([hw]), np.array([sectors * split]),
                                width0=width, **kw)
            sub_off, sub_sig = _per_sector(sub, t, p, frame, scale, sectors)
            # they refine a sector's measurement, they do not find a ring its own fit missed
            seen = np.isfinite(sub_off) & np.isfinite(off)
            off[seen], sig[seen] = sub_off[seen], sub_sig[seen]
        finite = np.isfinite(off)
        mean = float(np.average(off[finite], weights=sig[finite] ** -2)) if finite.any() else float("nan")
        rings.append(RingCheck(label=refl.label, d_a=refl.d_a, radius_px=radius, offsets_px=off, sigmas_px=sig,
                               mean_offset_px=mean,
                               spread_px=float(np.ptp(off[finite])) if finite.any() else float("nan"),
                               with_data=int(pts.sectors[0])))
    return _verdict(rings, sectors, tolerance_px, min_found, calibrant.name)


def _per_sector(pts, t: float, p: Params, frame: Frame, scale: float, sectors: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (local radial px) and their 1 sigma per sector: the weighted mean of the
    points that fall in it (without those beyond 3 robust sigmas of their median: a
    sub-sector that caught a neighbour's tail), its sigma widened by their scatter when
    they disagree by more than their sigmas (NaN where no point falls)."""
    off = np.full(sectors, np.nan)
    sig = np.full(sectors, np.nan)
    if not len(pts):
        return off, sig
    idx = np.clip(((pts.phi + math.pi) * sectors / (2 * math.pi)).astype(int), 0, sectors - 1)
    # in local radial pixels: the fit's offset is in the ring's mean scale
    local = radial_scale(t, pts.phi, p, frame) / scale
    o, s = pts.offset * local, pts.sigma * local
    for j in np.unique(idx):
        oj, sj = o[idx == j], s[idx == j]
        med = np.median(oj)
        keep = np.abs(oj - med) <= 3.0 * np.maximum(1.4826 * np.median(np.abs(oj - med)), sj)
        oj, w = oj[keep], sj[keep] ** -2.0
        off[j] = np.sum(w * oj) / np.sum(w)
        chi2 = np.sum(w * (oj - off[j]) ** 2) / max(oj.size - 1, 1)
        sig[j] = np.sqrt(max(chi2, 1.0) / np.sum(w))
    return off, sig


def _verdict(rings: list[RingCheck], sectors: int, tol: float, min_found: float, name: str) -> CalibrationCheck:
    if not rings:
        return CalibrationCheck(sectors, (), float("nan"), float("nan"), tol, False,
                                f"no {name} ring of this geometry falls on the frame's usable pixels")
    worst = max((r.worst_px for r in rings if r.found), default=float("nan"))
    spread = max((r.spread_px for r in rings if r.found), default=float("nan"))
    missing = [r.label for r in rings if r.found < min_found * r.with_data]
    off = [r.label for r in rings if r.found and r.worst_px > tol]
    fits = not missing and not off and math.isfinite(worst)
    if fits:
        msg = (f"fits: {len(rings)} {name} rings within {worst:.2f} px of this geometry in every sector "
               f"(tolerance {tol:g} px, largest spread {spread:.2f} px)")
    else:
        parts = []
        if off:
            parts.append(f"rings {', '.join(off)} are up to {worst:.1f} px from where this geometry puts them "
                         f"(spread over {sectors} sectors up to {spread:.1f} px; tolerance {tol:g} px)")
        if missing:
            parts.append(f"rings {', '.join(missing)} are not found where this geometry predicts them")
        msg = "does not fit: " + "; ".join(parts)
    return CalibrationCheck(sectors, tuple(rings), worst, spread, tol, fits, msg)
