"""Sector peak fits: unbiased positions, honest sigmas, the powder-shell correction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from saxs_pipeline.ops.ringpoints import fit_peaks, sector_points, shell_shift


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


def test_shell_shift_is_two_sigma_squared_over_radius() -> None:
    # the intrinsic width is the narrowest sectors' (10th percentile), not the widest
    widths = np.array([3.0] * 4 + [7.0] * 26)
    assert shell_shift(widths, 128.0) == pytest.approx(2 * 9 / 128)


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
