"""Rings found as circles about a trial centre."""

from __future__ import annotations

import numpy as np

from saxs_pipeline.ops.calibrants import CALIBRANTS
from saxs_pipeline.ops.ringfind import circle_fit, find_rings

from calibrantframes import PILATUS_1M, make_frame, make_geometry


def test_circle_fit_is_exact_on_a_circle() -> None:
    a = np.linspace(0, 1.5, 20)  # a quarter arc is enough
    cu, cv, r = circle_fit(10 + 50 * np.cos(a), -4 + 50 * np.sin(a), np.ones(20))
    assert np.allclose([cu, cv, r], [10, -4, 50])


def test_rings_found_from_a_centre_three_pixels_off() -> None:
    # every AgBh order in view, radius within 0.2 px of D tan 2theta / pixel (untilted),
    # centre within 0.1 px: the order assignment's tolerance is 1.5 px + 1 %
    g = make_geometry(PILATUS_1M, distance_mm=1000.0, wavelength_a=1.0, center_yx=(520.0, 490.0))
    frame = make_frame(PILATUS_1M, g, CALIBRANTS["AgBh"], np.random.default_rng(3))
    rings = find_rings(frame.image, frame.image >= 0, (493.0, 1043 - 518.0))
    want = [1000 * np.tan(t) / 0.172 for _, t in CALIBRANTS["AgBh"].visible(1.0)][: len(rings)]
    assert len(rings) >= 5
    assert np.allclose([x.radius for x in rings], want, atol=0.2)
    assert all(abs(x.u - 490) < 0.1 and abs(x.v - 523) < 0.1 for x in rings)
