"""Calibration files: both forms, defaults of optional fields, and errors that name the
file and the JSON path."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.calibschema import CalibrationError, schema

from realdata import require

NESTED = {
    "Geometry": {
        "Tilt": {"TiltRotDeg": 73.569, "TiltAngleDeg": -0.56},
        "BeamCenter": [808.37, 387.772],
        "DedectorDistanceMM": 1031.657,
        "PixelSizeMicroM": [172.0],
        "Imagesize": [1043, 981],
    },
    "Wavelength": 1.54,
    "Masks": [{"MaskFile": "mask.msk", "Oversampling": 3, "PixelPerRadialElement": 1,
               "qStart": 0, "qStop": 5}],
    "Directory": ["data"],
}


def test_shipped_schemas_are_valid_json_schema() -> None:
    for form in ("nested", "flat"):
        jsonschema.Draft202012Validator.check_schema(schema(form))


def test_nested_form_with_original_optional_fields_missing() -> None:
    # The original raised KeyError for missing Phi-mode, GISAXSmode, Threads ...
    cal = load_calibration(NESTED)
    g = cal.geometry
    assert (g.beam_center_y, g.beam_center_x) == (808.37, 387.772)
    assert g.pixel_size_um == (172.0, 172.0)
    assert g.image_shape == (1043, 981)
    m = cal.masks[0]
    assert (m.oversampling, m.phi_mode, m.q_start, m.q_stop) == (3, False, 0.0, 5.0)
    assert (cal.gisaxs_mode, cal.overwrite_files, cal.live_filelisting, cal.threads) == (False, True, True, 2)
    assert cal.polarization is None
    assert json.loads(cal.to_json()) == NESTED


def test_flat_form_of_the_2014_manual() -> None:
    cal = load_calibration(require("cal_flat.json"))
    assert cal.geometry.beam_center_y == 808.37
    assert cal.geometry.distance_mm == 1031.657
    assert cal.masks[0].oversampling == 2
    # relative MaskFile resolves against the calibration file's folder
    assert cal.mask_path(cal.masks[0]).resolve() == require("AAA_integ.msk").resolve()


def test_detector_distance_alias_and_polarization() -> None:
    raw = json.loads(json.dumps(NESTED))
    raw["Geometry"]["DetectorDistanceMM"] = raw["Geometry"].pop("DedectorDistanceMM")
    raw["PolarizationCorrection"] = {"Fraction": 0.995, "Angle": 0}
    cal = load_calibration(raw)
    assert cal.geometry.distance_mm == 1031.657
    assert cal.polarization is not None and cal.polarization.fraction == 0.995


def _broken(path: str, value: object) -> dict:
    raw = json.loads(json.dumps(NESTED))
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    node[keys[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "json_path"),
    [
        ("Geometry.BeamCenter", "808,387", "$.Geometry.BeamCenter"),
        ("Geometry.BeamCenter", [1, 2, 3], "$.Geometry.BeamCenter"),
        ("Geometry.Imagesize", [1043.5, 981], "$.Geometry.Imagesize[0]"),
        ("Geometry.Tilt", {"TiltRotDeg": "x", "TiltAngleDeg": 0}, "$.Geometry.Tilt.TiltRotDeg"),
        ("Masks.0.Oversampling", 0, "$.Masks[0].Oversampling"),
        ("Masks.0.PhiMode", True, "$.Masks[0]"),
        ("Wavelength", -1, "$.Wavelength"),
        ("BeamCentre", [1, 2], "$"),
        ("Masks.0.RadialEdges", [0.0, 1.0, 0.5], "$.Masks[0].RadialEdges"),
    ],
)
def test_errors_name_the_json_path(path: str, value: object, json_path: str, tmp_path: Path) -> None:
    f = tmp_path / "cal.json"
    f.write_text(json.dumps(_broken(path, value)))
    with pytest.raises(CalibrationError) as exc:
        load_calibration(f)
    assert exc.value.path == json_path
    assert str(f) in str(exc.value) and json_path in str(exc.value)


def test_missing_distance_unreadable_and_missing_files(tmp_path: Path) -> None:
    raw = json.loads(json.dumps(NESTED))
    del raw["Geometry"]["DedectorDistanceMM"]
    with pytest.raises(CalibrationError, match=r"\$\.Geometry: 'DedectorDistanceMM'"):
        load_calibration(raw)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        load_calibration(bad)
    with pytest.raises(CalibrationError, match="file not found"):
        load_calibration(tmp_path / "missing.json")


def test_slice_mask_ref_must_point_at_a_mask() -> None:
    raw = json.loads(json.dumps(NESTED))
    raw["Slices"] = [{"Direction": "x", "Plane": "InPlane", "CutPosition": 10, "MaskRef": 3}]
    with pytest.raises(CalibrationError, match=r"\$\.Slices\[0\]\.MaskRef"):
        load_calibration(raw)


def test_correction_keys_and_the_definition_they_select() -> None:
    import xraydb

    cal = load_calibration(NESTED)
    assert cal.intensity_definition == "pixel-mean" and not cal.summed_normalisation
    assert (cal.dark, cal.flat, cal.solid_angle, cal.sensor) == (None, None, False, None)
    raw = json.loads(json.dumps(NESTED))
    raw.update(Dark="d.tif", DarkExposures=3, Flat="f.tif", SolidAngle=True,
               Sensor={"Material": "CdTe", "ThicknessMicroM": 1000})
    cal = load_calibration(raw)
    assert cal.summed_normalisation
    assert (cal.dark, cal.dark_exposures, cal.flat, cal.solid_angle) == ("d.tif", 3, "f.tif", True)
    # mu at 1.54 A = 8050.9 eV, photo-absorption, from xraydb
    assert cal.sensor.mu_per_cm == pytest.approx(xraydb.material_mu("CdTe", 8050.92, kind="photo"), rel=1e-5)
    assert cal.sensor.thickness_um == 1000.0
    for key, value in (("SolidAngle", False), ("IntensityDefinition", "pixel-mean")):
        only = json.loads(json.dumps(NESTED))
        only[key] = value
        assert not load_calibration(only).summed_normalisation
    polarization_only = dict(NESTED, PolarizationCorrection={"Fraction": 0.99, "Angle": 0},
                             IntensityDefinition="signal-over-normalisation")
    assert load_calibration(polarization_only).summed_normalisation
    formula = dict(NESTED, Sensor={"Material": "Cd0.9Zn0.1Te", "ThicknessMicroM": 750, "DensityGcm3": 5.78})
    assert load_calibration(formula).sensor.mu_per_cm > 1000


@pytest.mark.parametrize(
    ("extra", "json_path", "message"),
    [
        ({"Sensor": {"Material": "Unobtainium", "ThicknessMicroM": 450}}, "$.Sensor.Material",
         "unknown sensor material 'Unobtainium'"),
        ({"Sensor": {"Material": "Xx2O", "ThicknessMicroM": 450, "DensityGcm3": 3}}, "$.Sensor.Material",
         "xraydb cannot compute"),
        ({"Sensor": {"Material": "Si"}}, "$.Sensor", "'ThicknessMicroM' is a required property"),
        ({"Dark": "d.tif", "IntensityDefinition": "pixel-mean"}, "$.IntensityDefinition",
         "has no Dark"),
        ({"SolidAngle": "yes"}, "$.SolidAngle", "is not of type 'boolean'"),
        ({"Normalisation": {"Monitor": {"Header": "I0", "Column": "x"}}}, "$.Normalisation.Monitor",
         "not valid under any"),
        ({"Normalisation": {"Monitor": -2}}, "$.Normalisation.Monitor", "less than or equal to"),
        ({"Normalisation": {"Monitr": 2}}, "$.Normalisation", "Monitr"),
        ({"Normalisation": {"AbsoluteScale": {"Factor": 2, "Uncertainty": -1}}},
         "$.Normalisation.AbsoluteScale.Uncertainty", "less than the minimum"),
    ],
)
def test_bad_correction_keys_name_the_json_path(extra, json_path, message) -> None:
    with pytest.raises(CalibrationError, match=message) as exc:
        load_calibration(dict(NESTED, **extra))
    assert exc.value.path == json_path


def test_normalisation_as_io_normalisation_reads_it() -> None:
    from saxs_pipeline.config.normalisation import NormalisationResolver

    norm = {"Monitor": {"Header": "I0"}, "Transmission": {"Table": "t.csv", "Column": "T"},
            "ExposureTime": {"Dataset": "/entry/instrument/detector/count_time"},
            "Thickness": 0.1, "AbsoluteScale": {"Factor": 2.0, "Uncertainty": 0.1}}
    assert load_calibration(dict(NESTED, Normalisation=norm)).raw["Normalisation"] == norm
    simple = load_calibration(dict(NESTED, Normalisation={"Monitor": 4.0, "Thickness": 0.1,
                                                          "AbsoluteScale": 2.0}))
    r = NormalisationResolver.from_calibration(simple)
    assert r.resolve("x.tif").multiplier == pytest.approx(5.0)


@pytest.mark.parametrize("center", [[50000, -30000], [808.37, 981 * 2 + 1], [-1044, 387.0]])
def test_a_beam_centre_more_than_a_detector_size_off_is_refused(center) -> None:
    # Issue 21: [50000, -30000] made a 58 820-bin curve with 66 finite bins.
    raw = json.loads(json.dumps(NESTED))
    raw["Geometry"]["BeamCenter"] = center
    with pytest.raises(CalibrationError, match=r"\$\.Geometry\.BeamCenter: .* more than a "
                       r"detector size outside the 1043 x 981 pixel detector"):
        load_calibration(raw)
    flat = json.loads(require("cal_flat.json").read_text())
    flat["BeamCenter"] = center
    with pytest.raises(CalibrationError, match=r"calibration: \$\.BeamCenter: "):
        load_calibration(flat)  # the path in the file as written (the flat form)


def test_a_beam_centre_off_the_detector_by_less_than_its_size_is_kept() -> None:
    raw = json.loads(json.dumps(NESTED))
    raw["Geometry"]["BeamCenter"] = [-1043, 2 * 981]  # GISAXS, corner detectors
    assert load_calibration(raw).geometry.beam_center_y == -1043


def test_empty_integral_windows() -> None:
    from saxs_pipeline.config.calibration import empty_windows

    raw = json.loads(json.dumps(NESTED))
    raw["Masks"] = [dict(raw["Masks"][0], qStart=0, qStop=0), raw["Masks"][0],
                    dict(raw["Masks"][0], qStart=2, qStop=2),
                    dict(raw["Masks"][0], qStart=0, qStop=0, **{"Phi-mode": True})]
    assert empty_windows(load_calibration(raw)) == [0, 2]
    assert empty_windows(load_calibration(require("cal_flat.json"))) == [0]  # I0/I1/I2 all 0
