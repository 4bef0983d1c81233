"""``saxsdog check`` as a subprocess on the real AgBh frame: exit 0 when a calibration
fits, 1 when it does not, the numbers as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from realdata import require


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saxs_pipeline.cli.saxsdog", "check", *args], capture_output=True, text=True,
                          timeout=300)


def test_the_buffer_geometry_does_not_fit_the_agbh_frame(tmp_path) -> None:
    done = run(str(require("cal_flat.json")), str(require("agbeh2_1M.tif")), "--plot", str(tmp_path / "c.png"))
    assert done.returncode == 1, done.stderr
    numbers = json.loads(done.stdout)
    assert not numbers["fits"] and numbers["sectors"] == 12 and "does not fit" in done.stderr
    assert (tmp_path / "c.png").exists()


def test_a_fitting_geometry_exits_0(tmp_path) -> None:
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({
        "Geometry": {"BeamCenter": [804.740, 422.511], "DedectorDistanceMM": 835.323,
                     "Tilt": {"TiltAngleDeg": 0.346, "TiltRotDeg": -148.38}, "PixelSizeMicroM": [172.0, 172.0],
                     "Imagesize": [1043, 981]},
        "Wavelength": 1.54, "Masks": [{"MaskFile": str(require("AAA_integ.msk"))}]}))
    done = run(str(cal), str(require("agbeh2_1M.tif")), "--sectors", "8")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["fits"]
