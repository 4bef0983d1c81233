"""saxsconverter: FIT2D calibration log / older JSON -> a complete, valid calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saxs_pipeline.cli.converter import main
from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.fit2d import ConverterError, convert, default_calibration, parse_fit2d_log

from realdata import require

LOG = """\
INFO: Number of function calls =       7
INFO: Sum of squares =    0.77519
INFO: Refined Beam centre =      100.250     200.500 (pixels)
INFO: Refined Beam centre =       17.243      34.486 (mm)
INFO: Refined sample to detector distance =     1500.125 mm
INFO: Refined wavelength =      1.00000 Angstroms
      Energy (keV) =     12.39842
INFO: Refined tilt plane rotation angle =      -45.500 degrees
INFO: Refined tilt angle =        0.250 degrees
INFO: ROT X =       -0.158   ROT Y =       -0.537 degrees
"""

# Fields the original code read unconditionally (its converter's defaults lacked them).
NEEDED = ("GISAXSmode", "OverwriteFiles", "Live-Filelisting", "Threads", "Directory")


def mac_geometry(path: Path) -> dict[str, float]:
    """The values of a FIT2D macro: each keyword line is followed by its value line."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    keys = ("DISTANCE", "WAVELENGTH", "X-BEAM CENTRE", "Y-BEAM CENTRE", "TILT ROTATION", "ANGLE OF TILT")
    return {k: float(lines[lines.index(k) + 1]) for k in keys}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def has_needed_fields(config: dict) -> bool:
    return all(k in config for k in NEEDED) and all("Phi-mode" in m for m in config["Masks"])


def test_real_log_gives_the_geometry_of_the_fit2d_macro(tmp_path, capsys) -> None:
    log = require("calibration.txt")
    mac = mac_geometry(require("AAA_integ_Pilatus1M_cmd.mac"))
    out = tmp_path / "cal.json"
    code, printed, _ = run(capsys, log, out)
    assert code == 0
    text = out.read_text()
    assert printed == text and text.startswith('{\n    "Geometry"')  # indent 4
    config = json.loads(text)
    geo = config["Geometry"]
    assert geo["BeamCenter"] == [mac["Y-BEAM CENTRE"], mac["X-BEAM CENTRE"]] == [808.37, 387.772]
    assert geo["DedectorDistanceMM"] == mac["DISTANCE"] == 1031.657
    assert geo["Tilt"] == {"TiltRotDeg": mac["TILT ROTATION"], "TiltAngleDeg": mac["ANGLE OF TILT"]}
    assert config["Wavelength"] == mac["WAVELENGTH"] == 1.54
    # A complete calibration: validates, and has what the original's code needed.
    cal = load_calibration(out)
    assert cal.geometry.pixel_size_um == (172.0, 172.0) and cal.geometry.image_shape == (1043, 981)
    assert cal.masks[0].oversampling == 3 and cal.masks[0].mask_file
    assert has_needed_fields(config)


def test_leading_blanks_crlf_and_repeated_refinements(tmp_path) -> None:
    older = LOG.replace("1500.125", "999.0").replace("100.250", "1.0")
    text = older + "\r\n".join("   " + line for line in LOG.splitlines())  # the last run wins
    fit = parse_fit2d_log(text)
    assert (fit.beam_x, fit.beam_y) == (100.25, 200.5)
    assert fit.distance_mm == 1500.125 and fit.wavelength_a == 1.0
    assert (fit.tilt_rot_deg, fit.tilt_angle_deg) == (-45.5, 0.25)
    log = tmp_path / "calibration.txt"
    log.write_bytes(text.encode())
    config = convert(log)
    assert config["Geometry"]["BeamCenter"] == [200.5, 100.25]


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("Refined tilt angle", "Refined tilt angle"),
        ("(pixels)", "Refined Beam centre"),
        ("Refined wavelength", "Refined wavelength"),
    ],
)
def test_a_missing_line_is_named(tmp_path, capsys, drop, named) -> None:
    log = tmp_path / "calibration.txt"
    log.write_text("\n".join(line for line in LOG.splitlines() if drop not in line))
    out = tmp_path / "cal.json"
    code, printed, err = run(capsys, log, out)
    assert code == 1 and printed == ""
    assert str(log) in err and named in err and "lacks" in err
    assert not out.exists()


def test_text_that_is_no_fit2d_log(tmp_path) -> None:
    log = tmp_path / "notes.txt"
    log.write_text("hello\nworld\n")
    with pytest.raises(ConverterError, match="not a FIT2D calibration log"):
        convert(log)


def custom_base(tmp_path: Path) -> dict:
    base = default_calibration()
    base["Geometry"]["PixelSizeMicroM"] = [75.0]
    base["Geometry"]["Imagesize"] = [195, 487]
    base["Geometry"]["BeamCenter"] = [150.0, 250.0]  # on this detector (the default's is not)
    base["Masks"].append({"MaskFile": "second.msk", "Oversampling": 2, "Phi-mode": True,
                          "qStart": 1.0, "qStop": 2.0})
    base["Directory"] = ["data", "run1"]
    base["Threads"] = 4
    base["Title"] = "Pilatus 100K"
    return base


def assert_log_over_base(config: dict, base: dict) -> None:
    assert config["Geometry"]["BeamCenter"] == [200.5, 100.25]
    assert config["Geometry"]["DedectorDistanceMM"] == 1500.125
    assert config["Wavelength"] == 1.0
    for key in ("Masks", "Directory", "Threads", "Title"):
        assert config[key] == base[key]
    assert config["Geometry"]["PixelSizeMicroM"] == [75.0]
    load_calibration(config)


def test_template_is_the_base(tmp_path, capsys) -> None:
    base = custom_base(tmp_path)
    template = tmp_path / "template.json"
    template.write_text(json.dumps(base))
    log = tmp_path / "calibration.txt"
    log.write_text(LOG)
    out = tmp_path / "cal.json"
    out.write_text(json.dumps(default_calibration()))  # -t wins over an existing output
    assert run(capsys, "-t", template, log, out)[0] == 0
    assert_log_over_base(json.loads(out.read_text()), base)


def test_existing_output_is_the_base_and_must_validate(tmp_path, capsys) -> None:
    base = custom_base(tmp_path)
    out = tmp_path / "cal.json"
    out.write_text(json.dumps(base))
    log = tmp_path / "calibration.txt"
    log.write_text(LOG)
    assert run(capsys, "-q", log, out)[0] == 0
    assert_log_over_base(json.loads(out.read_text()), base)

    broken = dict(base, Threads="four")
    out.write_text(json.dumps(broken))
    code, _, err = run(capsys, log, out)
    assert code == 1
    assert "existing output" in err and str(out) in err and "$.Threads" in err
    assert json.loads(out.read_text()) == broken  # left as it was


def test_flat_json_input_becomes_a_complete_nested_calibration(tmp_path, capsys) -> None:
    flat = {
        "Title": "old set-up",
        "Tilt": {"TiltRotDeg": 10.0, "TiltAngleDeg": -1.0},
        "BeamCenter": [500.0, 400.0],
        "DetectorDistanceMM": 800.0,  # the manual's alias
        "Imagesize": [619, 487],
        "MaskFile": "old.msk",
        "Oversampling": 2,
        "PixelSizeMicroM": [172.0, 172.0],
        "PixelPerRadialElement": 1,
        "Wavelength": 1.54,
        "PolarizationCorrection": {"Fraction": 0.95, "Angle": 0.0},
    }
    src = tmp_path / "old.json"
    src.write_text(json.dumps(flat))
    out = tmp_path / "cal.json"
    assert run(capsys, src, out)[0] == 0
    config = json.loads(out.read_text())
    geo = config["Geometry"]
    assert geo["BeamCenter"] == [500.0, 400.0] and geo["Imagesize"] == [619, 487]
    assert geo["DedectorDistanceMM"] == 800.0 and "DetectorDistanceMM" not in geo
    assert config["Masks"][0]["MaskFile"] == "old.msk" and config["Masks"][0]["Oversampling"] == 2
    assert config["PolarizationCorrection"] == flat["PolarizationCorrection"]
    assert config["Title"] == "old set-up"
    assert has_needed_fields(config)
    assert load_calibration(out).geometry.distance_mm == 800.0


def test_real_flat_calibration(tmp_path) -> None:
    config = convert(require("cal_flat.json"))
    assert config["Geometry"]["BeamCenter"] == [808.37, 387.772]
    assert config["Masks"][0]["Oversampling"] == 2
    assert "PolarizationCorrection" not in config


def test_invalid_json_input_names_the_path(tmp_path, capsys) -> None:
    src = tmp_path / "bad.json"
    src.write_text(json.dumps({"Geometry": {"Tilt": {"TiltRotDeg": 0, "TiltAngleDeg": 0},
                                            "BeamCenter": [1, 2, 3], "DedectorDistanceMM": 1,
                                            "PixelSizeMicroM": [172], "Imagesize": [10, 10]},
                               "Wavelength": 1.54, "Masks": [{"MaskFile": "m.msk"}]}))
    code, _, err = run(capsys, src, tmp_path / "out.json")
    assert code == 1 and str(src) in err and "$.Geometry.BeamCenter" in err
    src.write_text("{not json")
    code, _, err = run(capsys, src, tmp_path / "out.json")
    assert code == 1 and "not valid JSON" in err


def test_default_calibration_is_complete_and_valid() -> None:
    config = default_calibration()
    assert has_needed_fields(config)
    cal = load_calibration(config)
    assert cal.geometry.pixel_size_um == (172.0, 172.0) and cal.geometry.image_shape == (1043, 981)
    assert cal.masks[0].oversampling == 3 and cal.polarization is None
    config["Threads"] = 99
    assert default_calibration()["Threads"] == 2  # a fresh copy each time


def test_help_documents_every_option(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("INPUT", "OUTPUT", "--template", "--quiet", "Refined Beam centre", "BeamCenter = [Y, X]"):
        assert word in text
