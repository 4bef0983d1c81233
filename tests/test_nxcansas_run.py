"""A run's NXcanSAS file, read back by SasView's loader (sasdata): the demo beamtime
through saxsdog and the real Pilatus frame, equal arrays to the curve stack."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sasdata.dataloader.loader import Loader

from saxs_pipeline.stack.read import read_stack

from realdata import require

pytestmark = pytest.mark.timeout(180)

SAXSDOG = str(Path(sys.executable).parent / "saxsdog")


def sasview_curves(path: Path) -> list:
    return Loader().load(str(path))


def check(stack_path: Path, h5: Path) -> None:
    stack = read_stack(stack_path)
    r0 = stack["curves"]["R0"]
    loaded = sasview_curves(h5)
    assert len(loaded) == stack["n_valid"]
    by_title = {d.title.split(" ", 1)[-1]: d for d in loaded}  # "<run> <frame>"
    for row, name in enumerate(stack["filename"]):
        d = by_title[str(name)]
        ok = np.isfinite(r0["I"][row]) & np.isfinite(r0["poisson"][row])
        # sasdata drops NaN bins and gives Q in 1/angstrom (from our 1/nm): q/10; float32
        # curves are stored as they are, so I and dI come back exactly
        np.testing.assert_allclose(d.x, r0["axis"][ok] / 10, rtol=1e-12)
        np.testing.assert_array_equal(d.y, r0["I"][row][ok])
        np.testing.assert_array_equal(d.dy, r0["poisson"][row][ok])


def test_the_demo_run_as_nxcansas(tmp_path: Path, saxs_operator_cache) -> None:
    r = subprocess.run([SAXSDOG, "demo", str(tmp_path / "d"), "-N", "4", "-t", "1",
                        "--nxcansas"], capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    work = tmp_path / "d" / "demo" / "work"
    check(work / "data.zarr", work / "data.h5")


def test_the_real_frame_as_nxcansas(tmp_path: Path, saxs_operator_cache) -> None:
    data = tmp_path / "exp" / "data"
    data.mkdir(parents=True)
    shutil.copy(require("buf1_00000.tif"), data)
    cal = tmp_path / "cal.json"
    cal.write_text(require("cal_flat.json").read_text())
    shutil.copy(require("AAA_integ.msk"), tmp_path)
    r = subprocess.run([SAXSDOG, "-c", str(cal), "-t", "1", "--nxcansas", str(data)],
                       capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    work = tmp_path / "exp" / "work"
    check(work / "data.zarr", work / "data.h5")
