"""Calibrants: the certified numbers, the extinction rules, user d-spacings."""

from __future__ import annotations

import math

import pytest

from saxs_pipeline.ops.calibrants import CALIBRANTS, calibrant_from_spec


def test_lattice_constants_and_sources() -> None:
    # each d-spacing follows from the certified constant (NIST SRM 660c, 674b, 640f) or
    # from AgBh's d(001) = 58.380 A (Huang et al. 1993); the source says so
    assert CALIBRANTS["AgBh"].reflections[0].d_a == 58.380
    assert CALIBRANTS["AgBh"].reflections[2].d_a == pytest.approx(58.380 / 3)
    assert CALIBRANTS["LaB6"].reflections[0].d_a == pytest.approx(4.156826)
    assert CALIBRANTS["CeO2"].reflections[0].d_a == pytest.approx(5.411651 / math.sqrt(3))
    assert CALIBRANTS["Si"].reflections[0].d_a == pytest.approx(5.431144 / math.sqrt(3))
    for name, src in (("AgBh", "Huang"), ("LaB6", "660c"), ("CeO2", "674b"), ("Si", "640f")):
        assert src in CALIBRANTS[name].source


def test_si_640f_certificate_position_of_111() -> None:
    # SRM 640f's table: (111) at 28.441 deg 2theta for Cu K-alpha1 = 1.5405929 A
    assert math.degrees(CALIBRANTS["Si"].reflections[0].two_theta(1.5405929)) == pytest.approx(28.441, abs=1e-3)


@pytest.mark.parametrize(("name", "first"), [
    ("LaB6", ["100", "110", "111", "200", "210", "211", "220"]),  # Pm-3m: all
    ("CeO2", ["111", "200", "220", "311", "222", "400", "331"]),  # Fm-3m: unmixed parity
    ("Si", ["111", "220", "311", "400", "331", "422", "333"]),  # Fd-3m: no 200, 222, 420
])
def test_allowed_reflections(name, first) -> None:
    assert [r.label for r in CALIBRANTS[name].reflections[: len(first)]] == first


def test_names_and_d_spacing_lists() -> None:
    assert calibrant_from_spec("agbeh") is CALIBRANTS["AgBh"]
    custom = calibrant_from_spec("10, 30,20")
    assert [r.d_a for r in custom.reflections] == [30.0, 20.0, 10.0]
    with pytest.raises(ValueError, match="unknown calibrant 'quartz'"):
        calibrant_from_spec("quartz")
    with pytest.raises(ValueError, match="must be positive"):
        calibrant_from_spec("10,-2")


def test_visible_stops_where_a_flat_detector_cannot_see() -> None:
    vis = CALIBRANTS["LaB6"].visible(1.0)
    assert vis and all(t <= math.radians(80) for _, t in vis)
    assert CALIBRANTS["LaB6"].reflections[-1].two_theta(10.0) is None  # lambda > 2d
