"""Calibration keys of sectors and cakes (Azimuth, AzimuthBins): parsed values and bad
input named by its JSON path."""

from __future__ import annotations

import copy

import pytest
from test_calibration import NESTED

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.calibschema import CalibrationError


def _with(**mask) -> dict:
    cal = copy.deepcopy(NESTED)
    cal["Masks"][0].update(mask)
    return cal


def test_wedges_and_cake_are_parsed() -> None:
    m = load_calibration(_with(Azimuth=[[330, 30], [-15, 15]], AzimuthBins=36)).masks[0]
    assert m.azimuth == ((330.0, 30.0), (-15.0, 15.0))
    assert m.azimuth_bins == 36
    assert load_calibration(NESTED).masks[0].azimuth is None


@pytest.mark.parametrize(("mask", "path", "reason"), [
    ({"Azimuth": [[10, 10]]}, r"\$\.Masks\[0\]\.Azimuth\[0\]", "start equals stop"),
    ({"Azimuth": [[0, 90], [-360, 360]]}, r"\$\.Masks\[0\]\.Azimuth\[1\]", "spans 720"),
    ({"Azimuth": [[0, 400]]}, r"\$\.Masks\[0\]\.Azimuth\[0\]\[1\]", "400"),
    ({"Azimuth": [[0]]}, r"\$\.Masks\[0\]\.Azimuth\[0\]", ""),
    ({"Azimuth": []}, r"\$\.Masks\[0\]\.Azimuth", ""),
    ({"AzimuthBins": 0}, r"\$\.Masks\[0\]\.AzimuthBins", "0"),
    ({"AzimuthBins": 10, "Phi-mode": True}, r"\$\.Masks\[0\]\.AzimuthBins", "Phi-mode"),
], ids=["empty", "too-wide", "out-of-range", "one-angle", "no-wedge", "zero-bins", "phi"])
def test_bad_input_names_its_json_path(mask, path, reason) -> None:
    with pytest.raises(CalibrationError, match=path + ".*" + reason):
        load_calibration(_with(**mask))
