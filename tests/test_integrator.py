"""The per-frame Integrator: several masks and slices, file naming, GISAXSmode, .chi."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saxs_pipeline.integrator import Integrator
from saxs_pipeline.io.chi import read_chi
from saxs_pipeline.ops.integrate import integrate_error


def calibration(tmp_path, **extra) -> dict:
    valid = np.ones((64, 48), bool)
    valid[20:24] = False
    np.save(tmp_path / "mask.npy", ~valid)  # .npy masks: nonzero = masked
    cal = {
        "Geometry": {
            "Tilt": {"TiltRotDeg": 30.0, "TiltAngleDeg": 2.0},
            "BeamCenter": [40.3, 20.7],
            "DedectorDistanceMM": 100.0,
            "PixelSizeMicroM": [172.0],
            "Imagesize": [64, 48],
        },
        "Wavelength": 1.54,
        "Masks": [
            {"MaskFile": "mask.npy", "Oversampling": 2, "PixelPerRadialElement": 1, "qStart": 0.1, "qStop": 3.0},
            {"MaskFile": "mask.npy", "Oversampling": 2, "PixelPerRadialElement": 1, "Phi-mode": True,
             "qStart": 0.5, "qStop": 3.0},
        ],
        "Slices": [{"Direction": "x", "Plane": "InPlane", "CutPosition": 30, "CutMargin": 1}],
    }
    cal.update(extra)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    return path


def test_curves_and_files_of_every_mask_and_slice(tmp_path) -> None:
    integ = Integrator(calibration(tmp_path), cache_dir=tmp_path / "cache")
    image = np.random.default_rng(0).poisson(50, (64, 48)).astype(np.int32)
    curves = integ.integrate(image)
    assert [c.key for c in curves] == ["R0", "R1", "S2"]
    assert [c.suffix() for c in curves] == ["", "_cR1", "_cS2"]
    assert integ.output_suffixes() == ["", "_cR1", "_cS2"]
    assert curves[0].integparams["I0"] > 0 and curves[1].integparams == {"I0": 0.0, "I1": 0.0, "I2": 0.0}
    np.testing.assert_array_equal(curves[0].mean, integrate_error(integ.operators[0], image).mean)
    (tmp_path / "out").mkdir()
    paths = integ.write_chi(curves, tmp_path / "out" / "frame_00001")
    assert [p.name for p in paths] == ["frame_00001.chi", "frame_00001_cR1.chi", "frame_00001_cS2.chi"]
    radial = read_chi(paths[0])
    assert radial.config == json.loads(integ.calibration.to_json())
    assert radial.integparams == pytest.approx(curves[0].integparams)
    np.testing.assert_allclose(radial.intensity, curves[0].mean, equal_nan=True)
    assert read_chi(paths[1]).labels[0] == "Phi Angle [rad]"
    graph = curves[0].to_graph(integ.calibration.raw, integ.calibration.raw["Masks"][0])
    assert graph["kind"] == "Radial" and len(graph["array"]) == 3


def test_gisaxs_mode_skips_the_first_mask(tmp_path) -> None:
    integ = Integrator(calibration(tmp_path, GISAXSmode=True), cache_dir=tmp_path / "cache")
    curves = integ.integrate(np.ones((64, 48), np.int32))
    assert [c.key for c in curves] == ["R1", "S2"]
    assert integ.output_suffixes() == ["_cR1", "_cS2"]


def test_batch_path_without_std(tmp_path) -> None:
    integ = Integrator(calibration(tmp_path), cache_dir=tmp_path / "cache", with_std=False)
    rng = np.random.default_rng(1)
    frames = [rng.poisson(50, (64, 48)).astype(np.int32) for _ in range(4)]
    many = integ.integrate_many(frames)
    for frame, curves in zip(frames, many, strict=True):
        single = integ.integrate(frame)
        for a, b in zip(curves, single, strict=True):
            assert a.key == b.key and a.std is None
            np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6, equal_nan=True)


def test_frame_of_the_wrong_size(tmp_path) -> None:
    integ = Integrator(calibration(tmp_path), cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"Imagesize is \[64, 48\]"):
        integ.integrate(np.ones((48, 64)))
