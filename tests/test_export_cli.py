"""``saxs-export`` on a real zarr stack; the file is read back with h5py and sasdata
(SasView's loader)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from sasdata.dataloader.loader import Loader

from saxs_pipeline.cli.export import main
from saxs_pipeline.stack.read import open_dataset

from stackcases import make_stack

# frames complete out of acquisition order: rows 0, 1 hold frames 0, 1, rows 2-11 hold
# frames 20-29 and rows 12-29 frames 2-19
COMPLETION = [0, 1, *range(20, 30), *range(2, 20)]


def test_default_export_is_what_sasview_reads_frames_in_acquisition_order(
        tmp_path: Path, capsys) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=30, completion=COMPLETION)
    out = tmp_path / "sel.h5"
    assert main([str(stack.path), "-o", str(out), "--frames", "10-20"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    ds = open_dataset(stack.path)
    want = ds.isel(frame=slice(10, 21))
    data = Loader().load(str(out))
    assert len(data) == 11
    assert [d.title for d in data] == [f"run.zarr {n}" for n in want["name"].values]
    assert list(want["name"].values) == stack.names[10:21]
    # sasdata drops the NaN (empty) bins and gives Q in 1/angstrom (our 1/nm / 10): the
    # float32 I and Idev come back exactly; Q to float64 rounding of the division
    for d, i, e in zip(data, want["I"].values, want["poisson"].values, strict=True):
        ok = np.isfinite(i)
        np.testing.assert_allclose(d.x, want["q"].values[ok] / 10, rtol=1e-12)
        np.testing.assert_array_equal(d.y, i[ok])
        np.testing.assert_array_equal(d.dy, e[ok])
    assert len({d.y.tobytes() for d in data}) == 11  # 11 distinct curves


def test_export_by_name_and_position(tmp_path: Path, capsys) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=5, completion=[4, 3, 2, 1, 0])
    out = tmp_path / "s.h5"
    assert main([str(stack.path), "-o", str(out), "--frames", "0-1", "--names",
                 "sample_0000[4].tif"]) == 0
    data = Loader().load(str(out))
    assert [d.title for d in data] == [f"run.zarr {stack.names[i]}" for i in (0, 1, 4)]
    for d, i in zip(data, (0, 1, 4), strict=True):
        np.testing.assert_array_equal(d.y, stack.intensity[i, :-3].astype(np.float64))
    with h5py.File(out, "r") as f:  # each entry names its frame
        assert [f[e]["run"].attrs["name"] for e in sorted(f)] == [stack.names[i] for i in (0, 1, 4)]


def test_console_script_stack_layout_and_errors(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=3, completion=[2, 0, 1])
    out = tmp_path / "all.h5"
    done = subprocess.run([sys.executable, "-m", "saxs_pipeline.cli.export", str(stack.path),
                           "-o", str(out), "--layout", "stack"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    with h5py.File(out, "r") as f:
        data = f["sasentry01/sasdata01"]
        assert data["I"].shape == (3, stack.intensity.shape[1])
        assert [n.decode() for n in data["frame_name"][()]] == stack.names
        np.testing.assert_array_equal(data["I"][()], stack.intensity)
    bad = subprocess.run([sys.executable, "-m", "saxs_pipeline.cli.export", str(stack.path),
                          "-o", str(out), "--glob", "nothing*"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and "no frame in the stack is named or matches 'nothing*'" in bad.stderr
    assert main([str(tmp_path / "missing.zarr"), "-o", str(out)]) == 1
