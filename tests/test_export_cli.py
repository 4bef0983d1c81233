"""``saxs-export`` on a real zarr stack; the file is read back with h5py and sasdata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from sasdata.dataloader.loader import Loader

from saxs_pipeline.cli.export import main

from stackcases import make_stack


def test_export_selection_as_entries(tmp_path: Path, capsys) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=5)
    out = tmp_path / "s.h5"
    assert main([str(stack.path), "-o", str(out), "--frames", "0-1", "--name",
                 "sample_00004.tif", "--layout", "entries"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    data = Loader().load(str(out))
    assert [d.title for d in data] == [f"run.zarr {stack.names[i]}" for i in (0, 1, 4)]
    for d, i in zip(data, (0, 1, 4), strict=True):
        np.testing.assert_array_equal(d.y, stack.intensity[i, :-3].astype(np.float64))


def test_console_script_and_errors(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=3)
    out = tmp_path / "all.h5"
    done = subprocess.run([sys.executable, "-m", "saxs_pipeline.cli.export", str(stack.path),
                           "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with h5py.File(out, "r") as f:
        assert f["sasentry01/sasdata01/I"].shape == (3, stack.intensity.shape[1])
    bad = subprocess.run([sys.executable, "-m", "saxs_pipeline.cli.export", str(stack.path),
                          "-o", str(out), "--glob", "nothing*"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and "no frame in the stack matches 'nothing*'" in bad.stderr
    assert main([str(tmp_path / "missing.zarr"), "-o", str(out)]) == 1
