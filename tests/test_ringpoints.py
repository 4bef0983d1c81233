"""Sector peak fits: unbiased positions, honest sigmas, the bias of the fit on a ring's
model (powder shell, beam footprint) taken off."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from saxs_pipeline.ops.ringpoints import fit_peaks, profile_bias, sector_points
from saxs_pipeline.ops.ringprofile import model_profiles, ring_shape


def _profiles(rng, n, mu, s=1.5, amp=200.0, bg=50.0, slope=-2.0):
    x = (np.arange(40) + 0.5) * 0.5 - 10.0
    lam = bg + slope * x + amp * np.exp(-0.5 * ((x - mu[:, None]) / s) ** 2)
    counts = 25  # pixels per bin
    y = rng.poisson(lam * counts) / counts
    w = np.full(y.shape, counts) / np.maximum(y, 1.0)
    return x, y, w


def test_gaussian_fits_are_unbiased_and_their_sigmas_honest() -> None:
    # 400 noisy profiles with known centres on a sloped background: the mean error must be
    # < 0.01 px (no bias from the slope) and the pulls' spread 1 within 15 %
    rng = np.random.default_rng(0)
    mu = rng.uniform(-2, 2, 400)
    x, y, w = _profiles(rng, 400, mu)
    theta, cov, chi2 = fit_peaks(x, y, w, 1.5)
    err = theta[:, 3] - mu
    pull = err / np.sqrt(cov[:, 3, 3])
    assert abs(err.mean()) < 0.01
    assert 0.85 < pull.std() < 1.15
    assert 0.8 < np.median(chi2) < 1.2


def test_an_isotropic_ring_is_biased_by_its_powder_shell_only() -> None:
    # a Gaussian ring of width s0 times (r / (r + x))^2 peaks 2 s0^2 / r inside its radius
    # (0.141 px here); with too few sectors for an ellipse the intrinsic width is the
    # narrowest sectors' (10th percentile), not the widest
    x = (np.arange(72) + 0.5) * 0.5 - 18.0
    phi = np.linspace(-math.pi, math.pi, 5, endpoint=False)
    widths = np.array([3.0, 3.0, 7.0, 7.0, 7.0])
    bias = profile_bias(phi, widths, 128.0, x, np.full(5, 0.05))
    np.testing.assert_allclose(bias, -2 * 9 / 128, atol=2e-3)


def test_a_beam_wider_than_high_is_read_off_the_widths() -> None:
    # footprint sigma 6 px along phi = 0, intrinsic 3 px: the widths S^2 = 9 + 36 cos^2 phi
    # (one sector's window cut by a gap: its width far off, ignored) give the shape back
    phi = np.linspace(-math.pi, math.pi, 36, endpoint=False)
    widths = np.sqrt(9 + 36 * np.cos(phi) ** 2)
    widths[5] *= 2
    shape = ring_shape(phi, widths)
    assert shape.intrinsic2 == pytest.approx(9, abs=0.05) and shape.beam2 == pytest.approx(36, abs=0.1)
    assert abs(math.sin(shape.beam_axis)) < 1e-3


def test_the_footprint_bias_matches_a_ring_drawn_on_an_image() -> None:
    # A ring (radius 128 px, sigma 3 px) drawn on a 3x oversampled image and smeared by a
    # footprint of sigma 6.6 x 0.7 px, its profile fitted along the axes and a diagonal:
    # the shift the smear causes must match the model's within 0.01 px (they agree to
    # 0.004). On the axes the theory is -sigma_across^2 / 2r: -0.17 px at top and bottom,
    # -0.002 at the sides; on the diagonal the correlated displacement skews the profile
    # and the fit lands 0.04 px outside. The unsmeared ring's own fit is subtracted: the
    # pixel grid samples the radius unevenly along the axes.
    from scipy import ndimage

    ov, radius, s0, sx, sy = 3, 128.0, 3.0, 6.6, 0.7
    y, xx = (np.mgrid[0:360 * ov, 0:360 * ov] + 0.5) / ov - 180.0  # 50 px beyond the ring: no edge effects
    r, phi = np.hypot(xx, y), np.arctan2(y, xx)
    sharp = np.exp(-0.5 * ((r - radius) / s0) ** 2)
    smeared = ndimage.gaussian_filter(sharp, (sy * ov, sx * ov), mode="constant")
    x = (np.arange(72) + 0.5) * 0.5 - 18.0
    sectors = np.linspace(-math.pi, math.pi, 36, endpoint=False)
    shape = ring_shape(sectors, np.sqrt(s0**2 + sx**2 * np.cos(sectors) ** 2 + sy**2 * np.sin(sectors) ** 2))

    def centre(profiles):
        return fit_peaks(x, profiles, np.ones_like(profiles), 4.0)[0][0, 3]

    for direction in (0.0, math.pi / 4, math.pi / 2):
        near = np.abs(np.angle(np.exp(1j * (phi - direction)))) < 0.03
        idx = np.clip(((r[near] - radius + 18.0) / 0.5).astype(int), 0, 71)
        n = np.maximum(np.bincount(idx, minlength=72), 1)
        image_shift = (centre((np.bincount(idx, weights=smeared[near], minlength=72) / n)[None])
                       - centre((np.bincount(idx, weights=sharp[near], minlength=72) / n)[None]))
        model_shift = (centre(model_profiles(shape, np.array([direction]), radius, x))
                       - centre(model_profiles(dataclasses.replace(shape, beam2=0.0), np.array([direction]), radius, x)))
        assert image_shift == pytest.approx(model_shift, abs=0.01), direction


def test_sector_points_keep_only_filled_significant_sectors() -> None:
    # a ring at radius 50 px about the origin, one sector emptied (a gap across it)
    rng = np.random.default_rng(1)
    r = rng.uniform(35, 65, 200_000)
    phi = rng.uniform(-math.pi, math.pi, r.size)
    values = rng.poisson(20 + 300 * np.exp(-0.5 * ((r - 50.2) / 1.5) ** 2))
    hole = (phi > 0) & (phi < math.pi / 4)
    pts = sector_points(r[~hole], phi[~hole], values[~hole], np.array([50.0]), np.array([10.0]), np.array([8]))
    assert len(pts) == 7 and pts.sectors[0] == 7
    assert np.all(np.abs(pts.offset - 0.2) < 5 * pts.sigma)
