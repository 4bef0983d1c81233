"""Geometry against the original's formulas written out here from the spec (research
original.md 2.1-2.5): law-of-cosines 2theta with tilt, q with the A* constant, FIT2D beam
centre convention, polarization factor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from saxs_pipeline.ops import geometry as geo

from enginecases import POL, SMALL


def original_two_theta(r, phi, d, tilt, rot):
    alpha = np.arcsin(np.sin(tilt) * np.sin(phi + rot + np.pi / 2))
    l2 = d * d + r * r - 2 * d * r * np.cos(np.pi / 2 + alpha)
    length = np.sqrt(l2)
    return np.arccos((l2 + d * d - r * r) / (2 * length * d))


def test_square_root_form_equals_the_law_of_cosines() -> None:
    dx, dy = geo.subpixel_offsets(SMALL, 2)
    x, y = dx[None, :], dy[:, None]
    q, tth = geo.two_theta_q(x, y, SMALL, need_two_theta=True)
    r, phi = np.hypot(x, y), np.arctan2(y, x)
    ref = original_two_theta(r, phi, SMALL.distance_mm, np.deg2rad(5.0), np.deg2rad(30.0))
    # arccos loses ~1e-8 rad near 2theta = 0; our form does not, so compare away from it.
    far = r > 1.0
    np.testing.assert_allclose(tth[far], ref[far], rtol=1e-9)
    np.testing.assert_allclose(geo.calc_theta(r, phi, 100.0, np.deg2rad(5.0), np.deg2rad(30.0))[far], ref[far], rtol=1e-9)
    k = 4 * np.pi / (1.54 * 1.00001495e-1)
    np.testing.assert_allclose(q, k * np.sin(tth / 2), rtol=1e-12, atol=1e-15)


def test_blocked_q_map_equals_the_direct_formula() -> None:
    for ov in (1, 3):
        dx, dy = geo.subpixel_offsets(SMALL, ov)
        q, _ = geo.two_theta_q(dx[None, :], dy[:, None], SMALL)
        np.testing.assert_allclose(geo.q_map(SMALL, ov, block_rows=7), q, rtol=1e-12, atol=1e-15)


def test_beam_centre_is_y_from_bottom_x_from_left_pixel_edges() -> None:
    flat = dataclasses.replace(SMALL, tilt_angle_deg=0.0, beam_center_y=40.5, beam_center_x=20.5)
    q = geo.q_map(flat, 1)
    row, col = np.unravel_index(np.argmin(q), q.shape)
    # Y = 40.5 from the bottom edge of 64 rows is the centre of numpy row 64 - 41 = 23.
    assert (row, col) == (64 - 41, 20)
    assert q[row, col] < 1e-12


def test_polarization_factor_is_the_original_formula() -> None:
    dx, dy = geo.subpixel_offsets(SMALL, 1)
    x, y = dx[None, :], dy[:, None]
    _, tth = geo.two_theta_q(x, y, SMALL, need_two_theta=True)
    phi = np.arctan2(y, x)
    rot = np.deg2rad(POL.angle_deg) - np.pi / 2
    s2 = np.sin(tth) ** 2
    f = POL.fraction
    ref = f * (1 - np.sin(phi - rot) ** 2 * s2) + (1 - f) * (1 - np.cos(phi - rot) ** 2 * s2)
    np.testing.assert_allclose(geo.polarization_factor(SMALL, POL), ref, rtol=1e-12)


def test_solid_angle_is_the_integral_over_the_tilted_pixel() -> None:
    # dOmega = D du dv / l^3 from the point of normal incidence, midpoint rule on 40 x 40
    # sub-pixels: its relative error is below (sub-pixel / distance)^2 = 5e-8; bound 1e-7.
    near = dataclasses.replace(SMALL, distance_mm=20.0, tilt_angle_deg=25.0)
    u0, v0, dist = geo.normal_incidence(near)
    n = 40
    dx, dy = geo.subpixel_offsets(near, n)
    u, v = dx[None, :] - u0, dy[:, None] - v0
    density = dist / (u * u + v * v + dist * dist) ** 1.5
    rows, cols = near.image_shape
    area = (near.pixel_size_um[0] * 1e-3 / n) * (near.pixel_size_um[1] * 1e-3 / n)
    per_pixel = density.reshape(rows, n, cols, n).sum(axis=(1, 3)) * area
    omega = geo.solid_angle(near)
    hx, hy = 0.5e-3 * near.pixel_size_um[1], 0.5e-3 * near.pixel_size_um[0]
    centred = 4 * np.arctan(hx * hy / (dist * np.sqrt(hx * hx + hy * hy + dist * dist)))
    np.testing.assert_allclose(omega * centred, per_pixel, rtol=1e-7)
    assert omega.max() <= 1.0 and omega.min() < 0.5  # 25 degrees of tilt at 20 mm
    # the point of normal incidence is at distance D = d cos(tilt) from the sample
    assert dist == np.float64(20.0 * np.cos(np.deg2rad(25.0)))
    np.testing.assert_allclose(geo.incidence_cosine(near) ** 3, omega, rtol=2e-3)


def test_solid_angle_agrees_with_pyfai() -> None:
    # pyFAI: cos^3 of the incidence angle at the pixel centre, float32, normalised at the
    # PONI; set up from the same FIT2D geometry. Bound 2e-7: float32 rounding (6e-8) plus
    # the pixel-size term (3e-8 at 1 m, 1e-7 at 300 mm with 8 degrees of tilt).
    pyfai = pytest.importorskip("pyFAI.integrator.azimuthal")
    for g in (dataclasses.replace(SMALL, distance_mm=1000.0, tilt_angle_deg=-0.56),
              dataclasses.replace(SMALL, distance_mm=300.0, tilt_angle_deg=8.0)):
        ai = pyfai.AzimuthalIntegrator(pixel1=g.pixel_size_um[0] * 1e-6, pixel2=g.pixel_size_um[1] * 1e-6)
        ai.setFit2D(directDist=g.distance_mm, centerX=g.beam_center_x, centerY=g.beam_center_y,
                    tilt=g.tilt_angle_deg, tiltPlanRotation=g.tilt_rot_deg, pixelX=g.pixel_size_um[1],
                    pixelY=g.pixel_size_um[0], wavelength=g.wavelength_a)
        theirs = np.flipud(ai.solidAngleArray(g.image_shape).astype(np.float64))
        np.testing.assert_allclose(geo.solid_angle(g), theirs, rtol=2e-7)
