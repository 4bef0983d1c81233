"""``saxsdog calibrate`` as a subprocess: frames in, a calibration ``saxsdog -c`` takes,
its data mask and a report out; refusals exit 2 with what was found."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.masks import load_mask
from saxs_pipeline.frames.tiff import write_pilatus_tiff
from saxs_pipeline.ops.calibrants import CALIBRANTS

from calibrantframes import CROP, Scene, make_frame, make_geometry
from realdata import require


def run(*args: str) -> subprocess.CompletedProcess:
    # through saxsdog's own dispatch, as a user types it
    return subprocess.run([sys.executable, "-m", "saxs_pipeline.cli.saxsdog", "calibrate", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Two noise realisations of one generated crop, as Pilatus TIFFs that state their
    pixel size (they are summed)."""
    g = make_geometry(CROP, distance_mm=400.0, wavelength_a=1.0, center_yx=(230.4, 190.7), tilt_deg=1.5, rot_deg=30)
    rng = np.random.default_rng(21)
    out = tmp_path_factory.mktemp("cal")
    paths = []
    for i in range(2):
        f = make_frame(CROP, g, CALIBRANTS["AgBh"], rng, Scene(beamstop_px=15))
        paths.append(out / f"agbh_{i}.tif")
        write_pilatus_tiff(paths[-1], f.image, {"Pixel_size": (172e-6, 172e-6), "Pixel_size_unit": "m"})
    return g, out, [str(p) for p in paths]


def test_calibrate_writes_a_calibration_saxsdog_takes(frames) -> None:
    # the written geometry within the tolerances of the truth (0.1 px, 0.05 %), the
    # calibration loads unchanged with its mask, and the report has every sigma
    g, out, paths = frames
    done = run(*paths, "--calibrant", "AgBh", "--wavelength", "1.0", "-o", str(out / "cal.json"),
               "--report", str(out / "report.json"))
    assert done.returncode == 0, done.stderr
    cal = load_calibration(out / "cal.json")
    geo = cal.geometry
    assert abs(geo.beam_center_y - g.beam_center_y) < 0.1 and abs(geo.beam_center_x - g.beam_center_x) < 0.1
    assert abs(geo.distance_mm / g.distance_mm - 1) < 5e-4
    assert cal.title.startswith("saxsdog calibrate: AgBh at 1 A on agbh_0.tif, agbh_1.tif")
    valid = load_mask(cal, cal.masks[0])
    assert valid.shape == CROP.shape and 0.9 < valid.mean() < 1.0
    report = json.loads((out / "report.json").read_text())
    assert report["uncertainty"]["BeamCenter"][0] > 0 and report["check"]["fits"]
    assert report["frames"] == paths and "fits:" in done.stdout


def test_calibrate_refuses_with_exit_2_and_what_it_found(frames) -> None:
    _, out, paths = frames
    done = run(paths[0], "--calibrant", "LaB6", "--wavelength", "1.0", "-o", str(out / "bad.json"))
    assert done.returncode == 2
    assert "match no LaB6 reflection set" in done.stderr and not (out / "bad.json").exists()
    done = run(paths[0], "--calibrant", "AgBh", "--wavelength", "1.0", "--mask", str(out / "missing.msk"),
               "-o", str(out / "bad.json"))
    assert done.returncode == 2 and "missing.msk: file not found" in done.stderr


def test_real_agbh_frame(tmp_path) -> None:
    done = run(str(require("agbeh2_1M.tif")), "--calibrant", "AgBh", "--wavelength", "1.54", "-o",
               str(tmp_path / "cal.json"), "--plot", str(tmp_path / "check.png"))
    assert done.returncode == 0, done.stderr
    g = load_calibration(tmp_path / "cal.json").geometry
    assert abs(g.beam_center_y - 805) < 2 and abs(g.beam_center_x - 423) < 2
    assert (tmp_path / "check.png").stat().st_size > 50_000
