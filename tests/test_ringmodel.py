"""The calibration's forward model agrees with the integration's geometry (FIT2D's)."""

from __future__ import annotations

import numpy as np

from saxs_pipeline.ops import geometry as geo
from saxs_pipeline.ops.ringmodel import (
    Frame,
    Params,
    azimuth,
    radial_scale,
    ray_points,
    two_theta_at,
)

G = geo.Geometry(beam_center_y=300.3, beam_center_x=200.7, distance_mm=500.0, pixel_size_um=(172.0, 150.0),
                 image_shape=(400, 420), tilt_angle_deg=4.0, tilt_rot_deg=-70.0, wavelength_a=1.2)
FRAME = Frame(G.image_shape, G.pixel_size_um)


def test_two_theta_matches_the_q_map_of_the_integration() -> None:
    # the same pixel centres through ops.geometry.q_map and through the model: identical
    # up to rounding, so a calibration and an integration can never disagree on convention
    q = geo.q_map(G)
    tth = 2 * np.arcsin(q / geo.q_scale(G.wavelength_a))
    vv, uu = np.mgrid[0:400, 0:420]
    ours = two_theta_at(uu + 0.5, vv + 0.5, Params.from_geometry(G), FRAME)
    np.testing.assert_allclose(ours, tth, rtol=1e-9, atol=1e-12)


def test_ray_points_invert_two_theta() -> None:
    p = Params.from_geometry(G)
    phi = np.linspace(-np.pi, np.pi, 50, endpoint=False)
    u, v = ray_points(np.full(phi.size, 0.2), phi, p, FRAME)
    np.testing.assert_allclose(two_theta_at(u, v, p, FRAME), 0.2, atol=1e-12)
    np.testing.assert_allclose(azimuth(u, v, p, FRAME), phi, atol=1e-12)


def test_radial_scale_is_pixels_per_radian_along_the_ray() -> None:
    p = Params.from_geometry(G)
    phi = np.linspace(-3, 3, 7)
    u1, v1 = ray_points(np.full(7, 0.2), phi, p, FRAME)
    u2, v2 = ray_points(np.full(7, 0.2 + 1e-6), phi, p, FRAME)
    steps = np.hypot(u2 - u1, v2 - v1) / 1e-6  # pixels moved per radian of 2theta
    np.testing.assert_allclose(radial_scale(0.2, phi, p, FRAME), steps, rtol=1e-5)


def test_parameters_round_trip_to_fit2d_geometry() -> None:
    back = Params.from_geometry(G).geometry(FRAME)
    assert back.tilt_angle_deg == np.float64(4.0) or abs(back.tilt_angle_deg - 4.0) < 1e-12
    assert abs(back.tilt_rot_deg + 70.0) < 1e-9
    neg = Params.from_geometry(geo.Geometry(**{**G.__dict__, "tilt_angle_deg": -0.56, "tilt_rot_deg": 73.569}))
    tilt, rot = neg.tilt_deg()  # FIT2D's negative tilt = the same plane at rot - 180
    assert abs(tilt - 0.56) < 1e-9 and abs(rot - (73.569 - 180)) < 1e-9
