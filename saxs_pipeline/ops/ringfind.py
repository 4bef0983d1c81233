"""Rings of a calibrant frame found without any geometry: radii and centres.

From a trial centre (the vote of :mod:`beamcentre`) the radial profile is the clipped mean
of the pixels in 1-px rings (clipped, so hot pixels, spots and the edge of a beam stop do
not make peaks); its peaks above the noise are ring candidates. Each candidate is then
fitted as a circle of its own on sector points (:mod:`ringpoints`): a real ring gives
points all around what the detector shows of it; a profile wiggle or the edge of a
shadow does not, and is dropped. A second pass about the best ring's centre sharpens the
profile, which finds the weaker rings a slightly wrong centre had blurred.

Circles (not ellipses) are enough here: a tilt of 5 deg changes a ring's radius around
its own centre by less than 0.4 %, while it shifts the centres of high-angle rings by
many pixels -- hence one centre per ring.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from saxs_pipeline.ops.ringpoints import sector_points

__all__ = ["FoundRing", "circle_fit", "find_rings", "radial_profile"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundRing:
    """A ring as a circle in image coordinates (px): centre ``(u, v)``, radius, the points
    it was fitted on (``pu``, ``pv`` with 1 sigma ``ps``), the ring's Gaussian width, the
    points' rms distance from the
    circle, the azimuthal range they cover (deg) and the profile peak's height over noise."""

    u: float
    v: float
    radius: float
    width: float  # Gaussian sigma of the ring's profile (px)
    rms: float
    coverage_deg: float
    snr: float
    pu: np.ndarray
    pv: np.ndarray
    ps: np.ndarray


def radial_profile(r: np.ndarray, values: np.ndarray, nbins: int, clip: float = 3.0):
    """Clipped mean, its standard error and the pixel count per 1-px radius bin.

    Two passes of bin counts: the mean and spread of each bin, then the mean of the pixels
    within ``clip`` spreads of it -- so hot pixels, spots and the odd shadowed pixel do not
    make peaks (a sort per bin would do the same at several times the cost)."""
    b = np.minimum(r.astype(np.int64), nbins - 1)
    v = values.astype(np.float64)
    n = np.bincount(b, minlength=nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.bincount(b, weights=v, minlength=nbins) / n
        sd = np.sqrt(np.maximum(np.bincount(b, weights=v * v, minlength=nbins) / n - m * m, 0.0))
        keep = np.abs(v - m[b]) <= clip * sd[b] + 1e-9
        kept = np.bincount(b[keep], minlength=nbins)
        s1 = np.bincount(b[keep], weights=v[keep], minlength=nbins)
        s2 = np.bincount(b[keep], weights=v[keep] ** 2, minlength=nbins)
        mean = s1 / kept
        var = np.maximum(s2 / kept - mean * mean, 0.0)
        sem = np.sqrt(var / np.maximum(kept - 1, 1))
    return mean, sem, n


def circle_fit(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """Weighted algebraic (Kasa) circle fit: ``u^2 + v^2 + D u + E v + F = 0``."""
    a = np.stack([u, v, np.ones_like(u)], axis=1) * w[:, None]
    rhs = -(u * u + v * v) * w
    (d, e, f), *_ = np.linalg.lstsq(a, rhs, rcond=None)
    cu, cv = -d / 2, -e / 2
    return float(cu), float(cv), float(math.sqrt(max(cu * cu + cv * cv - f, 0.0)))


def _robust_circle(pu, pv, ps, min_points: int):
    keep = np.ones(pu.size, dtype=bool)
    cu = cv = rad = float("nan")
    for _ in range(4):
        if keep.sum() < min_points:
            return None
        cu, cv, rad = circle_fit(pu[keep], pv[keep], 1.0 / np.maximum(ps[keep], 0.05))
        res = np.hypot(pu - cu, pv - cv) - rad
        scale = 1.4826 * np.median(np.abs(res[keep])) + 0.05
        new = np.abs(res) < 4.0 * scale + 0.5
        if np.array_equal(new, keep):
            break
        keep = new
    if keep.sum() < min_points:
        return None
    res = np.hypot(pu - cu, pv - cv) - rad
    return cu, cv, rad, keep, float(np.sqrt(np.mean(res[keep] ** 2)))


def _coverage(phi: np.ndarray) -> float:
    """Azimuthal extent (deg) of a set of angles: 360 minus the largest empty gap."""
    if phi.size < 2:
        return 0.0
    s = np.sort(np.mod(phi, 2 * math.pi))
    gaps = np.diff(np.concatenate([s, [s[0] + 2 * math.pi]]))
    return float(math.degrees(2 * math.pi - gaps.max()))


def _candidates(mean, sem, counts, min_radius: float, min_snr: float) -> list[tuple[float, float, float]]:
    """(radius, half-width, snr) of the profile's significant peaks."""
    ok = (counts > 20) & np.isfinite(mean)
    idx = np.flatnonzero(ok)
    if idx.size < 10:
        return []
    y = np.interp(np.arange(mean.size), idx, mean[idx])
    noise = np.interp(np.arange(mean.size), idx, np.where(sem[idx] > 0, sem[idx], np.nan))
    noise = np.nan_to_num(noise, nan=float(np.nanmedian(sem[idx])) if np.isfinite(sem[idx]).any() else 1.0)
    peaks, props = signal.find_peaks(y, prominence=0.0, width=(0.8, 60.0), rel_height=0.5)
    out = []
    for p, prom, wid in zip(peaks, props["prominences"], props["widths"], strict=True):
        if p < min_radius or not ok[p]:
            continue
        # the noise of a peak height measured against its flanks, ~sqrt(3) x one bin's
        snr = prom / (1.7 * max(noise[p], 1e-9))
        if snr >= min_snr:
            out.append((float(p) + 0.5, float(wid), float(snr)))
    return out


def find_rings(image: np.ndarray, valid: np.ndarray, centre_uv: tuple[float, float], *,
               min_snr: float = 8.0, min_points: int = 6, passes: int = 2) -> list[FoundRing]:
    """Rings (sorted by radius) about a trial centre; their circle fits in image pixels.

    Square pixels are assumed here (every detector this pipeline reads has them); the
    geometry refinement itself handles rectangular ones."""
    rows, cols = image.shape
    vv, uu = np.nonzero(valid)
    vals = image[vv, uu].astype(np.float64)
    pu, pv = uu + 0.5, vv + 0.5
    cu, cv = centre_uv
    rings: list[FoundRing] = []
    for _ in range(passes):
        du, dv = pu - cu, pv - cv
        r = np.hypot(du, dv)
        phi = np.arctan2(dv, du)
        nbins = int(r.max()) + 2
        mean, sem, counts = radial_profile(r, vals, nbins)
        cands = _candidates(mean, sem, counts, min_radius=5.0, min_snr=min_snr)
        if not cands:
            return []
        radii = np.array([c[0] for c in cands])
        rings = []
        for k, (rad, wid, snr) in enumerate(cands):
            neigh = np.abs(np.delete(radii, k) - rad)
            spacing = float(neigh.min()) if neigh.size else np.inf
            hw = float(min(max(2.5 * wid, 8.0), 50.0, 0.5 * spacing))
            if hw < 3.0:
                continue
            nsec = int(np.clip(2 * math.pi * rad / 20.0, 8, 120))
            pts = sector_points(r, phi, vals, np.array([rad]), np.array([hw]), np.array([nsec]),
                                width0=max(wid / 2.355, 0.8), radii=np.array([rad]), min_snr=4.0)
            if len(pts) < min_points:
                continue
            ru = cu + (rad + pts.offset) * np.cos(pts.phi)
            rv = cv + (rad + pts.offset) * np.sin(pts.phi)
            fit = _robust_circle(ru, rv, pts.sigma, min_points)
            if fit is None:
                continue
            fu, fv, frad, keep, rms = fit
            # a ring is round: its fitted centre cannot be far from the trial one (the
            # edge of a shadow or a gap gives arbitrary circles)
            if math.hypot(fu - cu, fv - cv) > max(0.25 * frad, 30.0) or rms > 0.05 * frad + 2.0:
                continue
            rings.append(FoundRing(fu, fv, frad, float(np.median(pts.width[keep])), rms, _coverage(pts.phi[keep]), snr,
                                   ru[keep], rv[keep], pts.sigma[keep]))
        rings = _dedupe(rings)
        if not rings:
            return []
        best = max(rings, key=lambda g: g.snr * min(g.coverage_deg, 180.0) / max(g.radius, 1.0) ** 0.5)
        cu, cv = best.u, best.v
        log.debug("ring pass: %d rings, centre (%.2f, %.2f)", len(rings), cu, cv)
    return sorted(rings, key=lambda g: g.radius)


def _dedupe(rings: list[FoundRing]) -> list[FoundRing]:
    """Two candidates that converged on the same circle: keep the stronger."""
    out: list[FoundRing] = []
    for g in sorted(rings, key=lambda g: -g.snr):
        if all(abs(g.radius - o.radius) > 2.0 + 3 * max(g.rms, o.rms) for o in out):
            out.append(g)
    return out
