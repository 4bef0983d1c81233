"""The per-frame Integrator: several masks and slices, file naming, GISAXSmode, .chi."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.config.darkflat import CorrectionImages
from saxs_pipeline.curves.chi import read_chi
from saxs_pipeline.frames.tiff import write_pilatus_tiff
from saxs_pipeline.integrator import Integrator
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


def corrected_calibration(tmp_path, **extra):
    rng = np.random.default_rng(3)
    write_pilatus_tiff(tmp_path / "dark.tif", rng.poisson(30, (64, 48)).astype(np.int32))
    np.save(tmp_path / "flat.npy", rng.uniform(0.9, 1.1, (64, 48)))
    keys = {"Dark": "dark.tif", "DarkExposures": 4, "Flat": "flat.npy", "SolidAngle": True,
            "Sensor": {"Material": "Si", "ThicknessMicroM": 450},
            "PolarizationCorrection": {"Fraction": 0.95, "Angle": 0}}
    return calibration(tmp_path, **{**keys, **extra})


def test_corrected_chain_closed_form_on_every_curve(tmp_path) -> None:
    # dark + 2 c counts give I = 2 in every bin of every curve (radial, phi, slice): 1e-9
    # on a float64 frame (rounding only).
    integ = Integrator(corrected_calibration(tmp_path), cache_dir=tmp_path / "cache")
    assert integ.calibration.summed_normalisation and integ.operators[0].correction is None
    pix = integ.pixels
    image = (pix.dark + 2.0 * pix.normalisation).reshape(64, 48)
    for curve in integ.integrate(image):
        filled = ~np.isnan(curve.mean)
        assert filled.sum() > 5, curve.key
        np.testing.assert_allclose(curve.mean[filled], 2.0, rtol=1e-9, err_msg=curve.key)
    assert "sum_p A[p,k] (x_p - d_p) / sum_p A[p,k] c_p" in integ.definitions()["I"]
    assert "x_p + v_p" in integ.definitions()["poisson"]


def test_scale_multiplies_curve_and_errors_exactly(tmp_path) -> None:
    integ = Integrator(corrected_calibration(tmp_path), cache_dir=tmp_path / "cache")
    image = np.random.default_rng(4).poisson(200, (64, 48)).astype(np.int32)
    plain = integ.integrate(image)
    halved = integ.integrate(image, scale=0.5)  # a monitor of 2
    for a, b in zip(plain, halved, strict=True):
        np.testing.assert_array_equal(b.mean, a.mean * 0.5)
        np.testing.assert_array_equal(b.poisson, a.poisson * 0.5)
        if a.std is not None:
            np.testing.assert_array_equal(b.std, a.std * 0.5)
        assert b.integparams == pytest.approx({k: v * 0.5 for k, v in a.integparams.items()})
    with pytest.raises(ValueError, match="positive finite"):
        integ.integrate(image, scale=0.0)


def test_integrate_many_with_scales(tmp_path) -> None:
    integ = Integrator(corrected_calibration(tmp_path), cache_dir=tmp_path / "cache", with_std=False)
    rng = np.random.default_rng(5)
    frames = [rng.poisson(100, (64, 48)).astype(np.int32) for _ in range(3)]
    scales = [1.0, 0.25, 3.0]
    for frame, s, curves in zip(frames, scales, integ.integrate_many(frames, scales), strict=True):
        for a, b in zip(curves, integ.integrate(frame, s), strict=True):
            np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6, equal_nan=True)
            np.testing.assert_allclose(a.poisson, b.poisson, rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="2 scales for 3 frames"):
        integ.integrate_many(frames, scales[:2])


def test_dark_markers_are_masked_and_images_can_be_given(tmp_path) -> None:
    cal = corrected_calibration(tmp_path, Dark="not-on-this-node.tif", Flat="nor-this.npy")
    dark = np.full((64, 48), 10.0)
    dark[30, 30] = np.nan  # a pixel the dark's detector marked unusable
    images = CorrectionImages(dark=dark, dark_exposures=2, flat=np.ones((64, 48)))
    integ = Integrator(cal, cache_dir=tmp_path / "cache", correction_images=images)
    assert not integ.valid[0][30, 30] and integ.valid[0][31, 30]
    np.testing.assert_array_equal(integ.pixels.dark_variance[:3], 5.0)  # d / N


def test_bad_dark_and_flat_files_name_the_key_and_file(tmp_path) -> None:
    write_pilatus_tiff(tmp_path / "small.tif", np.zeros((5, 5), np.int32))
    with pytest.raises(CalibrationError, match=r"\$\.Dark: .*small.tif"):
        Integrator(corrected_calibration(tmp_path, Dark="small.tif"), cache_dir=tmp_path / "cache")
    flat = np.ones((64, 48))
    flat[10, 10] = 0.0  # a used pixel (the mask's gap is rows 20-23)
    np.save(tmp_path / "zero.npy", flat)
    with pytest.raises(CalibrationError, match=r"\$\.Flat: .*zero.npy: 1 pixels the masks use are zero"):
        Integrator(corrected_calibration(tmp_path, Flat="zero.npy"), cache_dir=tmp_path / "cache")
