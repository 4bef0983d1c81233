"""The calibration's report: every parameter with its sigma, as JSON."""

from __future__ import annotations

import json

import numpy as np

from saxs_pipeline.ops.calibrants import CALIBRANTS
from saxs_pipeline.ops.calibrate import calibrate

from calibrantframes import CROP, Scene, make_frame, make_geometry


def test_report_is_json_with_every_parameter_and_its_sigma() -> None:
    g = make_geometry(CROP, distance_mm=400.0, wavelength_a=1.0, center_yx=(230.0, 190.0), tilt_deg=1.0)
    frame = make_frame(CROP, g, CALIBRANTS["AgBh"], np.random.default_rng(8), Scene(beamstop_px=15))
    result = calibrate(frame.image, CALIBRANTS["AgBh"], 1.0, (172.0, 172.0))
    rep = json.loads(json.dumps(result.report()))
    assert set(rep["uncertainty"]) == {"BeamCenter", "DedectorDistanceMM", "TiltAngleDeg", "TiltRotDeg", "Wavelength"}
    assert len(rep["uncertainty"]["BeamCenter"]) == 2 and rep["uncertainty"]["Wavelength"] == 0.0
    assert rep["rings"][0]["order"] == "001" and rep["rings"][0]["points"] >= rep["rings"][0]["used"] > 0
    assert rep["calibrant"]["source"].startswith("silver behenate")
    assert rep["rms_px"] < 0.1 and rep["seconds"] > 0
    assert "BeamCenter [" in result.summary()
