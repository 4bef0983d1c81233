"""Refinement of beam centre, distance and tilt (and the wavelength when asked) on ring
points, robust to outliers, with 1 sigma uncertainties.

Each point ``i`` is a measured position of the ring of d-spacing ``d_i``; its residual is
the model's 2theta there minus the ring's ``2 asin(lambda / 2 d_i)``, converted to radial
pixels (so it reads like the distance a person would see on the image) and divided by the
point's 1 sigma.

Three stages, because a plain least-squares fit is pulled by a single bad sector (a
beam-stop edge, a spot, a gap) and a robust one has no clean covariance:

1. soft-L1 loss, its scale from the residuals' median absolute deviation, twice (the
   second time from the first solution, which is near the truth);
2. points beyond ``cut`` robust standard deviations are dropped;
3. plain least squares on the rest, each point weighted by its counting sigma and a
   systematic scatter common to all points (0 unless the residuals need it); the
   covariance is ``(J^T J)^-1`` scaled by the reduced chi^2, i.e. by the residual
   variance, so the uncertainties hold even when the points' own sigmas are off by a
   common factor (real profiles are rarely Poisson-clean).

The points come from disjoint pixel sets (one per sector, :mod:`ringpoints`), so their
noise is independent. What is not independent is a systematic error shared by
neighbouring points (a displaced detector module): the residuals' correlation between
azimuthal neighbours measures it, and the covariance is widened accordingly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares

from saxs_pipeline.ops.ringmodel import Frame, Params, azimuth, radial_scale, two_theta_at

__all__ = ["Refinement", "RingPointSet", "refine", "tilt_sigma"]

_ALL = ("y", "x", "distance_mm", "a", "b", "wavelength_a")


@dataclass(frozen=True)
class RingPointSet:
    """Measured ring points: image coordinates (px), the index of their ring into
    ``d_a`` (Angstrom) and their 1 sigma (px, radial)."""

    u: np.ndarray
    v: np.ndarray
    ring: np.ndarray
    sigma: np.ndarray
    d_a: np.ndarray

    def __len__(self) -> int:
        return int(self.u.size)


@dataclass(frozen=True)
class Refinement:
    """The refined parameters, the names of those that were free and their covariance,
    the signed residual of every point in px (model minus measured ring angle), which
    points were kept, the reduced chi^2 and the rms residual (px) of the kept points, the
    systematic scatter added to the points' sigmas and the neighbour correlation that
    widened the covariance."""

    params: Params
    free: tuple[str, ...]
    covariance: np.ndarray
    residual_px: np.ndarray
    inlier: np.ndarray
    chi2_red: float
    rms_px: float
    systematic_px: float = 0.0
    correlation: float = 0.0

    def sigma(self, name: str) -> float:
        if name not in self.free:
            return 0.0
        i = self.free.index(name)
        return float(math.sqrt(max(self.covariance[i, i], 0.0)))


def _with(p: Params, names, values) -> Params:
    return replace(p, **{n: float(v) for n, v in zip(names, values, strict=True)})


def refine(points: RingPointSet, start: Params, frame: Frame, *, tilt: bool = True, wavelength: bool = False,
           cut: float = 4.0) -> Refinement:
    """Refine ``start`` on ``points``; see the module docstring for the stages."""
    free = tuple(n for n in _ALL if (n not in ("a", "b") or tilt) and (n != "wavelength_a" or wavelength))
    if len(points) <= len(free):
        raise ValueError(f"{len(points)} points cannot fix {len(free)} parameters")
    u, v, d, sig = points.u, points.v, points.d_a[points.ring], points.sigma
    phi = azimuth(u, v, start, frame)
    target0 = 2.0 * np.arcsin(start.wavelength_a / (2.0 * d))
    scale = radial_scale(target0, phi, start, frame)  # px per radian, fixed during the fit

    def resid_px(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
        p = _with(start, free, x)
        target = 2.0 * np.arcsin(p.wavelength_a / (2.0 * d[keep]))
        return (two_theta_at(u[keep], v[keep], p, frame) - target) * scale[keep]

    def fun(x, keep):
        return resid_px(x, keep) / sig[keep]

    def fun_sys(x, keep, sys_px):
        return resid_px(x, keep) / np.sqrt(sig[keep] ** 2 + sys_px ** 2)

    x0 = np.array([getattr(start, n) for n in free], dtype=float)
    everything = np.ones(len(points), dtype=bool)
    x = x0
    for _ in range(2):
        r = fun(x, everything)
        f_scale = max(1.4826 * float(np.median(np.abs(r))), 1e-3)
        x = least_squares(fun, x, args=(everything,), loss="soft_l1", f_scale=f_scale, x_scale="jac",
                          method="trf").x
    r = fun(x, everything)
    spread = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    keep = np.abs(r) <= cut * max(spread, 1e-6)
    if keep.sum() <= len(free):
        keep = everything
    x, sys_px = _with_systematic(fun_sys, x, keep, sig)
    sol = least_squares(fun_sys, x, args=(keep, sys_px), x_scale="jac", method="lm")
    dof = int(keep.sum()) - len(free)
    chi2 = float(np.sum(sol.fun ** 2) / max(dof, 1))
    jac = sol.jac
    try:
        cov = np.linalg.inv(jac.T @ jac) * chi2
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(jac.T @ jac) * chi2
    rho = _neighbour_correlation(sol.fun, points.ring[keep], phi[keep])
    cov *= (1.0 + rho) / (1.0 - rho)
    res = resid_px(sol.x, everything)
    return Refinement(params=_with(start, free, sol.x), free=free, covariance=cov, residual_px=res, inlier=keep,
                      chi2_red=chi2, rms_px=float(np.sqrt(np.mean(res[keep] ** 2))), systematic_px=sys_px,
                      correlation=rho)


def _with_systematic(fun_sys, x, keep, sig) -> tuple[np.ndarray, float]:
    """The systematic scatter (px) added in quadrature to every point's sigma so that the
    reduced chi^2 is 1; 0 when the points scatter no more than their sigmas say.

    A real detector's modules sit a few tenths of a pixel off their nominal places: that
    scatter is the same for a bright ring and a faint one, and weighting by the counting
    noise alone would let the brightest ring decide the geometry on its own."""
    sys_px = 0.0
    n = int(keep.sum())
    for _ in range(3):
        r = fun_sys(x, keep, sys_px)
        if np.sum(r * r) <= n:
            break
        res_px = r * np.sqrt(sig[keep] ** 2 + sys_px ** 2)
        lo, hi = 0.0, float(np.sqrt(np.mean(res_px ** 2))) + 1e-9
        for _ in range(50):  # chi^2 falls monotonically as the extra variance grows
            mid = 0.5 * (lo + hi)
            if np.sum(res_px ** 2 / (sig[keep] ** 2 + mid ** 2)) > n:
                lo = mid
            else:
                hi = mid
        sys_px = hi
        x = least_squares(fun_sys, x, args=(keep, sys_px), x_scale="jac", method="lm").x
    return x, sys_px


def _neighbour_correlation(r: np.ndarray, ring: np.ndarray, phi: np.ndarray) -> float:
    """Correlation of the residuals of azimuthally adjacent points of the same ring.

    The points' *noise* is independent (disjoint pixels), but a misplaced detector module
    shifts all the points on it alike; n points then carry the information of fewer, and
    the covariance is widened by the AR(1) factor (1 + rho) / (1 - rho). A correlation
    within what chance gives for uncorrelated residuals (2 / sqrt(pairs)) counts as 0."""
    num = den = 0.0
    pairs = 0
    for k in np.unique(ring):
        sel = np.flatnonzero(ring == k)
        if sel.size < 3:
            continue
        o = sel[np.argsort(phi[sel])]
        step = np.diff(phi[o])
        adjacent = step < 2.5 * np.median(step)
        a, b = r[o][:-1][adjacent], r[o][1:][adjacent]
        num += float(np.sum(a * b))
        den += 0.5 * float(np.sum(a * a) + np.sum(b * b))
        pairs += int(adjacent.sum())
    if pairs < 10 or den <= 0:
        return 0.0
    rho = num / den
    return float(min(rho, 0.95)) if rho > 2.0 / np.sqrt(pairs) else 0.0


def tilt_sigma(ref: Refinement) -> tuple[float, float]:
    """1 sigma of (TiltAngleDeg, TiltRotDeg) propagated from the covariance of (a, b).

    At zero tilt the rotation is undefined: its sigma is reported as 180 deg."""
    if "a" not in ref.free:
        return 0.0, 0.0
    ia, ib = ref.free.index("a"), ref.free.index("b")
    c = ref.covariance[np.ix_([ia, ib], [ia, ib])]
    a, b = ref.params.a, ref.params.b
    s = math.hypot(a, b)
    if s < 1e-12:
        return math.degrees(math.sqrt(max(np.linalg.eigvalsh(c).max(), 0.0))), 180.0
    ja = np.array([a, b]) / (s * math.sqrt(max(1.0 - s * s, 1e-300)))
    jr = np.array([b, -a]) / (s * s)
    st = math.sqrt(max(float(ja @ c @ ja), 0.0))
    sr = math.sqrt(max(float(jr @ c @ jr), 0.0))
    return math.degrees(st), min(math.degrees(sr), 180.0)
