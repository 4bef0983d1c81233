"""Geometry against the original's formulas written out here from the spec (research
original.md 2.1-2.5): law-of-cosines 2theta with tilt, q with the A* constant, FIT2D beam
centre convention, polarization factor."""

from __future__ import annotations

import dataclasses

import numpy as np

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
