"""Robust refinement and its covariance on synthetic ring points."""

from __future__ import annotations

import math

import numpy as np

from saxs_pipeline.ops.georefine import RingPointSet, refine, tilt_sigma
from saxs_pipeline.ops.ringmodel import Frame, Params, ray_points

FRAME = Frame((1043, 981), (172.0, 172.0))
TRUE = Params(y=600.0, x=450.0, distance_mm=500.0, a=0.03, b=-0.02, wavelength_a=1.0)
D = np.array([58.38 / n for n in range(1, 8)])


def _points(rng, sigma=0.05, n_phi=90, outliers=0, correlated=0.0):
    phi = np.tile(np.linspace(-math.pi, math.pi, n_phi, endpoint=False), D.size)
    ring = np.repeat(np.arange(D.size), n_phi)
    t = 2 * np.arcsin(TRUE.wavelength_a / (2 * D[ring]))
    u, v = ray_points(t, phi, TRUE, FRAME)
    noise = rng.normal(0, sigma, u.size)
    if correlated:  # a shared offset per block of 15 neighbouring points: "modules"
        noise += np.repeat(rng.normal(0, correlated, u.size // 15 + 1), 15)[: u.size]
    noise[:outliers] += 5.0
    return RingPointSet(u=u + noise * np.cos(phi), v=v + noise * np.sin(phi), ring=ring,
                        sigma=np.full(u.size, sigma), d_a=D)


def test_exact_points_give_the_exact_geometry() -> None:
    start = Params(y=603.0, x=447.0, distance_mm=480.0, a=0.0, b=0.0, wavelength_a=1.0)
    ref = refine(_points(np.random.default_rng(0), sigma=1e-6), start, FRAME)
    p = ref.params
    assert abs(p.y - 600) < 1e-4 and abs(p.x - 450) < 1e-4 and abs(p.distance_mm - 500) < 1e-4
    assert abs(p.a - 0.03) < 1e-6 and abs(p.b + 0.02) < 1e-6


def test_outliers_are_cut_and_sigmas_follow_the_noise() -> None:
    # 30 points 5 px off (beam-stop edges, spots): all cut; pulls of 200 refits have std ~1
    rng = np.random.default_rng(1)
    pulls = []
    for i in range(60):
        ref = refine(_points(rng, outliers=30 if i == 0 else 0), TRUE, FRAME)
        if i == 0:
            assert not ref.inlier[:30].any() and ref.inlier[30:].mean() > 0.99
        pulls.append([(ref.params.y - 600) / ref.sigma("y"), (ref.params.distance_mm - 500) / ref.sigma("distance_mm")])
    assert 0.7 < np.std(pulls) < 1.3


def test_correlated_residuals_widen_the_covariance() -> None:
    # shared offsets over blocks of neighbours: without the correlation factor the sigmas
    # would be ~sqrt(15) too small; with it the pulls stay near 1 (within a factor 1.6)
    rng = np.random.default_rng(2)
    pulls, rhos = [], []
    for _ in range(40):
        ref = refine(_points(rng, sigma=0.02, correlated=0.1), TRUE, FRAME)
        pulls.append((ref.params.x - 450) / ref.sigma("x"))
        rhos.append(ref.correlation)
    assert np.mean(rhos) > 0.5
    assert np.std(pulls) < 1.6
    assert ref.systematic_px > 0.05


def test_tilt_sigma_in_degrees() -> None:
    ref = refine(_points(np.random.default_rng(3)), TRUE, FRAME)
    st, sr = tilt_sigma(ref)
    assert 0 < st < 0.05 and 0 < sr < 5
