"""Sub-pixel ring positions in azimuthal sectors: one independent point per sector.

Every pixel near a ring has a *ring coordinate* ``x`` (pixels, signed, across the ring:
the distance from a trial centre, or the offset of its 2theta from the ring's in radial
pixels) and an azimuth. Within each sector the pixels are binned along ``x`` and the
profile is fitted with a Gaussian on a linear background; the Gaussian's centre is the
ring's position in that sector.

Why sectors and not rays: each pixel belongs to exactly one sector, so the points' noise
is independent and a least-squares covariance built on them is honest; rays sampled more
densely than the ring's width would reuse pixels and make the points correlated. The
linear background absorbs the slope of the diffuse scattering, which would otherwise pull
a centroid towards the beam; the fit's own covariance, scaled by its reduced chi^2 when
the profile is noisier than Poisson (spotty rings), gives each point's 1 sigma.

The Gaussian's centre is not quite the Bragg position: a ring's powder shell and the
beam's footprint move it inwards, or outwards between the footprint's axes, by up to
0.2 px at small radii. The same fit on the ring's model (:mod:`ringprofile`, the shape
read off the sectors' widths) measures that bias, and it is taken off. Otherwise a
Gaussian on a linear background over +-4 sigma is enough: on noise-free frames like the
real AgBh one, its steep q^-3 small-angle scattering and beam-stop halo under the first
orders move no ring by more than 0.003 px, and 40 % Lorentzian tails by 0.02 px; on the
real frame a quadratic background or a pseudo-Voigt moves its rings by <= 0.02 px, while
fits of only the top of a peak (+-1 FWHM, or the top 30-50 % in log intensity) scatter
from sector to sector several times more.

The fits of all sectors of a ring run together as one vectorised Levenberg-Marquardt
(5 parameters per profile), so a ring of 200 sectors costs milliseconds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from saxs_pipeline.ops.ringprofile import model_profiles, ring_shape

__all__ = ["SectorPoints", "fit_peaks", "profile_bias", "sector_points"]


@dataclass(frozen=True)
class SectorPoints:
    """One entry per accepted (ring, sector): the ring's index in the caller's list, the
    sector's mean azimuth (rad), the peak position in ring coordinates (px, relative to the
    ring's nominal position), its 1 sigma (px), the Gaussian sigma (px), the peak's
    signal-to-noise ratio and the number of pixels that made the profile."""

    ring: np.ndarray
    phi: np.ndarray
    offset: np.ndarray
    sigma: np.ndarray
    width: np.ndarray
    snr: np.ndarray
    npix: np.ndarray
    sectors: np.ndarray  # per ring: sectors whose window is filled enough to measure

    def __len__(self) -> int:
        return int(self.ring.size)


def _gauss_model(theta: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c0, c1, amp, mu, s = (theta[:, i, None] for i in range(5))
    z = (x[None, :] - mu) / s
    e = np.exp(-0.5 * z * z)
    f = c0 + c1 * x[None, :] + amp * e
    jac = np.stack([np.ones_like(e), np.broadcast_to(x, e.shape), e, amp * e * z / s, amp * e * z * z / s], axis=-1)
    return f, jac


def fit_peaks(x: np.ndarray, y: np.ndarray, w: np.ndarray, width0: float, iterations: int = 25):
    """Fit ``c0 + c1 x + A exp(-(x-mu)^2 / 2 s^2)`` to every row of ``y`` (weights ``w``,
    zero where a bin is empty) on the common abscissa ``x``.

    Returns ``(theta, cov, chi2_red)``: parameters (rows: c0, c1, A, mu, s), their
    covariance from the weighted normal matrix, and the reduced chi^2 of each fit.
    Starting values come from the profile itself: the centre at the maximum of the
    3-bin-smoothed profile, background from the window's edges.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-empty edges of a profile: NaN starts
        return _fit_peaks(x, y, w, width0, iterations)


def _edge_level(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean of the bins that have pixels (NaN when none)."""
    wt = (w > 0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(y * wt, axis=1) / np.sum(wt, axis=1)


def _fit_peaks(x: np.ndarray, y: np.ndarray, w: np.ndarray, width0: float, iterations: int):
    n, m = y.shape
    edge = max(2, m // 6)
    left = _edge_level(y[:, :edge], w[:, :edge])
    right = _edge_level(y[:, -edge:], w[:, -edge:])
    overall = _edge_level(y, w)
    left = np.where(np.isfinite(left), left, overall)
    right = np.where(np.isfinite(right), right, left)
    span = x[-1] - x[0]
    c1 = (right - left) / span
    c0 = 0.5 * (left + right) - c1 * 0.5 * (x[0] + x[-1])
    has = (w > 0).astype(float)
    pad_y = np.pad(y * has, ((0, 0), (1, 1)))
    pad_h = np.pad(has, ((0, 0), (1, 1)))
    smooth = (pad_y[:, :-2] + pad_y[:, 1:-1] + pad_y[:, 2:]) / np.maximum(pad_h[:, :-2] + pad_h[:, 1:-1] + pad_h[:, 2:], 1)
    smooth -= c0[:, None] + c1[:, None] * x[None, :]
    smooth[has == 0] = -np.inf
    inner = slice(edge // 2, m - edge // 2)
    k = np.argmax(smooth[:, inner], axis=1) + inner.start
    amp = np.maximum(smooth[np.arange(n), k], 1e-9)
    theta = np.nan_to_num(np.stack([c0, c1, amp, x[k], np.full(n, float(width0))], axis=1))
    sw = np.sqrt(w)
    lam = np.full(n, 1e-2)
    f, jac = _gauss_model(theta, x)
    r = (y - f) * sw
    cost = np.sum(r * r, axis=1)
    eye = np.eye(5)
    active = np.ones(n, dtype=bool)
    for _ in range(iterations):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        jw = jac[idx] * sw[idx, :, None]
        jt = np.swapaxes(jw, 1, 2)
        a = jt @ jw
        g = (jt @ r[idx, :, None])[..., 0]
        diag = np.diagonal(a, axis1=1, axis2=2)[:, :, None] * eye[None]
        step = np.linalg.solve(a + lam[idx, None, None] * (diag + 1e-12 * eye), g[..., None])[..., 0]
        trial = theta[idx] + step
        trial[:, 4] = np.clip(np.abs(trial[:, 4]), 0.2, span)
        f2, jac2 = _gauss_model(trial, x)
        r2 = (y[idx] - f2) * sw[idx]
        cost2 = np.sum(r2 * r2, axis=1)
        better = cost2 < cost[idx]
        gain = (cost[idx] - cost2) / np.maximum(cost[idx], 1e-300)
        b = idx[better]
        theta[b], jac[b], r[b], cost[b] = trial[better], jac2[better], r2[better], cost2[better]
        lam[idx] = np.where(better, lam[idx] * 0.3, lam[idx] * 10.0)
        # converged: an accepted step that gained almost nothing, or a hopeless damping
        active[idx[(better & (gain < 1e-7)) | (lam[idx] > 1e8)]] = False
    jw = jac * sw[..., None]
    a = np.swapaxes(jw, 1, 2) @ jw
    dof = np.maximum((w > 0).sum(axis=1) - 5, 1)
    try:
        cov = np.linalg.inv(a + 1e-12 * eye)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(a)
    return theta, cov, cost / dof


def profile_bias(phi: np.ndarray, widths: np.ndarray, radius: float, x: np.ndarray,
                 background: np.ndarray) -> np.ndarray:
    """How far (px) the fit of :func:`fit_peaks` puts a ring from its Bragg position, in
    each sector: the model's profiles of :mod:`ringprofile` (powder shell and beam
    footprint, read off the sectors' ``widths`` at azimuths ``phi``), fitted on the same
    bins ``x`` with the sectors' Poisson weights (``background``: each sector's level
    beside the ring relative to its peak)."""
    shape = ring_shape(phi, widths)
    prof = model_profiles(shape, phi, radius, x)
    theta, _, _ = fit_peaks(x, prof, 1.0 / (prof + np.maximum(background, 0.0)[:, None]),
                            float(np.median(widths)))
    # a model profile the fit cannot follow (none seen): the powder shell's own shift
    return np.where(np.isfinite(theta[:, 3]), theta[:, 3], -2.0 * shape.intrinsic2 / radius)


def sector_points(
    coord: np.ndarray,
    phi: np.ndarray,
    values: np.ndarray,
    centres: np.ndarray,
    halfwidths: np.ndarray,
    sectors: np.ndarray,
    *,
    width0: np.ndarray | float = 1.5,
    scales: np.ndarray | float = 1.0,
    radii: np.ndarray | None = None,
    bin_px: float = 0.5,
    min_snr: float = 5.0,
    min_fill: float = 0.7,
) -> SectorPoints:
    """Ring positions in azimuthal sectors.

    ``coord``, ``phi``, ``values``: per usable pixel its ring coordinate, azimuth (rad) and
    counts. Ring ``k`` lies at ``coord = centres[k]``; ``scales[k]`` turns coordinate units
    into radial pixels there (1 when ``coord`` is a radius in px). It is searched within
    ``halfwidths[k]`` px in ``sectors[k]`` equal sectors; offsets and sigmas come back in px.
    ``radii`` (px) switch on the correction of the profile's maximum to the Bragg position
    (:func:`profile_bias`: the powder shell and the beam's footprint). A sector's
    point is kept when its window is filled
    (``min_fill`` of the bins have pixels: a beam-stop edge or gap cutting the window would
    bias the fit), the peak is significant (amplitude / sigma >= ``min_snr``), and its centre
    and width are inside the window.
    """
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("ring", "phi", "offset", "sigma", "width", "snr", "npix")}
    n_with_pixels = np.zeros(len(centres), dtype=int)
    # one sort, then every ring is a slice: cheaper than a pass over all pixels per ring
    order = np.argsort(coord, kind="stable") if len(centres) > 2 else None
    sorted_coord = coord[order] if order is not None else None
    widths = np.broadcast_to(np.asarray(width0, dtype=float), (len(centres),))
    scale = np.broadcast_to(np.asarray(scales, dtype=float), (len(centres),))
    for k, (c, hw, ns) in enumerate(zip(centres, halfwidths, sectors, strict=True)):
        ns = int(ns)
        nb = max(int(round(2 * hw / bin_px)), 8)
        if order is not None:
            lo, hi = np.searchsorted(sorted_coord, [c - hw / scale[k], c + hw / scale[k]])
            sel = order[lo:hi]
        else:
            sel = np.flatnonzero(np.abs(coord - c) < hw / scale[k])
        if sel.size == 0:
            continue
        xb = (((coord[sel] - c) * scale[k] + hw) * (nb / (2 * hw))).astype(np.int64).clip(0, nb - 1)
        sb = ((phi[sel] + math.pi) * (ns / (2 * math.pi))).astype(np.int64).clip(0, ns - 1)
        flat = sb * nb + xb
        cnt = np.bincount(flat, minlength=ns * nb).reshape(ns, nb)
        tot = np.bincount(flat, weights=values[sel].astype(np.float64), minlength=ns * nb).reshape(ns, nb)
        npx = np.bincount(sb, minlength=ns)
        phis = np.bincount(sb, weights=phi[sel], minlength=ns) / np.maximum(npx, 1)
        rows = np.flatnonzero((npx > 0) & ((cnt > 0).mean(axis=1) >= min_fill))
        n_with_pixels[k] = int(rows.size)
        if rows.size == 0:
            continue
        cnt, tot = cnt[rows], tot[rows]
        mean = tot / np.maximum(cnt, 1)
        # Poisson variance of a bin's mean is mean / count; floored at one count so that
        # bins of zeros keep a finite weight
        weight = np.where(cnt > 0, cnt / np.maximum(mean, 1.0), 0.0)
        xc = (np.arange(nb) + 0.5) * (2 * hw / nb) - hw
        theta, cov, chi2 = fit_peaks(xc, mean, weight, float(widths[k]))
        inflate = np.maximum(chi2, 1.0)  # noisier than Poisson (spots, texture): widen
        var_mu = cov[:, 3, 3] * inflate
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = theta[:, 2] / np.sqrt(cov[:, 2, 2] * inflate)
        s = theta[:, 4]
        ok = (np.isfinite(theta).all(axis=1) & np.isfinite(var_mu) & (var_mu > 0) & (snr >= min_snr)
              & (s > 0.25) & (s < 0.5 * hw) & (np.abs(theta[:, 3]) < hw - 1.5 * s))
        mu = theta[ok, 3]
        if radii is not None and ok.any():
            level = theta[ok, 0] + theta[ok, 1] * theta[ok, 3]  # the background under the peak
            mu = mu - profile_bias(phis[rows][ok], s[ok], float(radii[k]), xc, level / theta[ok, 2])
        out["ring"].append(np.full(int(ok.sum()), k))
        out["phi"].append(phis[rows][ok])
        out["offset"].append(mu)
        out["sigma"].append(np.sqrt(var_mu[ok]))
        out["width"].append(s[ok])
        out["snr"].append(snr[ok])
        out["npix"].append(npx[rows][ok])
    cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}
    return SectorPoints(ring=cat["ring"].astype(int), phi=cat["phi"], offset=cat["offset"], sigma=cat["sigma"],
                        width=cat["width"], snr=cat["snr"], npix=cat["npix"].astype(int), sectors=n_with_pixels)
