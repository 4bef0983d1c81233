"""Every predicted ring measured on the frame, in the model's 2theta coordinate."""

from __future__ import annotations

import numpy as np

from saxs_pipeline.ops.calibrants import CALIBRANTS, calibrant_from_spec
from saxs_pipeline.ops.ringmodel import Frame, Params
from saxs_pipeline.ops.ringsample import Pixels, extract_rings

from calibrantframes import CROP, Scene, make_frame, make_geometry


def _frame(tilt: float = 3.0):
    g = make_geometry(CROP, distance_mm=400.0, wavelength_a=1.0, center_yx=(230.0, 190.0), tilt_deg=tilt, rot_deg=20)
    f = make_frame(CROP, g, CALIBRANTS["AgBh"], np.random.default_rng(11), Scene(beamstop_px=15))
    return g, f


def test_points_of_a_tilted_frame_sit_on_the_true_rings() -> None:
    # extracted with the true geometry, every point's offset is noise: a ring's mean offset
    # is within 4 of its standard errors (0.005-0.02 px) of zero
    g, f = _frame()
    ex = extract_rings(Pixels.of(f.image, (f.image >= 0) & ~f.beamstop & ~f.hot), Params.from_geometry(g),
                       Frame(CROP.shape, (172.0, 172.0)), CALIBRANTS["AgBh"])
    assert len(ex.used) >= 5
    from saxs_pipeline.ops.ringmodel import two_theta_at

    t = two_theta_at(ex.points.u, ex.points.v, Params.from_geometry(g), Frame(CROP.shape, (172.0, 172.0)))
    px = (t - np.array(ex.two_theta)[ex.points.ring]) * 400.0 / 0.172  # radial px, small angles
    for k in ex.used:
        sel = ex.points.ring == k
        w = ex.points.sigma[sel] ** -2
        assert abs(np.sum(px[sel] * w) / w.sum()) < 4 / np.sqrt(w.sum())


def test_unresolved_and_empty_rings_are_dropped_with_a_reason() -> None:
    g, f = _frame(0.0)
    # two d-spacings 0.14 % apart cannot be told apart; a ring of d 1e4 A (0.2 px from the
    # beam) is not in view at all
    cal = calibrant_from_spec("58.38,58.30,29.19,10000")
    ex = extract_rings(Pixels.of(f.image, (f.image >= 0) & ~f.beamstop), Params.from_geometry(g),
                       Frame(CROP.shape, (172.0, 172.0)), cal)
    reasons = {r.label: why for r, why in ex.dropped}
    assert "not resolved from its neighbour" in reasons["d2"] and "not resolved" in reasons["d3"]
    assert [ex.reflections[k].label for k in ex.used] == ["d4"] and "d1" not in reasons
