"""``saxs-average`` on real zarr stacks: .chi and NXcanSAS outputs and the JSON report."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from saxs_pipeline.cli.average import main
from saxs_pipeline.curves.chi import read_chi

from stackcases import make_stack


def test_average_minus_buffer(tmp_path: Path, capsys) -> None:
    sample = make_stack(tmp_path / "sample.zarr", n=8, drop=3)
    buffer = make_stack(tmp_path / "buffer.zarr", n=4, seed=5)
    chi, h5 = tmp_path / "sub.chi", tmp_path / "sub.h5"
    assert main([str(sample.path), "--names", "sample_*", "--buffer-stack", str(buffer.path),
                 "--buffer-frames", "0-3", "-o", str(chi), "--nxcansas", str(h5)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["frame"] for r in report["sample"]["rejected"]] == ["sample_00003.tif"]
    assert report["buffer"]["rejected"] == [] and report["sample"]["test"] == "cormap"
    curve = read_chi(chi)
    kept = [i for i in range(8) if i != 3]
    expected = (sample.intensity[kept].astype(np.float64).mean(axis=0)
                - buffer.intensity.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(curve.intensity[:-3], expected[:-3], rtol=1e-12)
    with h5py.File(h5, "r") as f:
        np.testing.assert_array_equal(f["sasentry01/sasdata01/I"][()], curve.intensity)
        notes = json.loads(f["sasentry01/sasprocess/reduction"][()])
        assert notes["sample"]["kept"] == [sample.names[i] for i in kept]


def test_usage_and_input_errors(tmp_path: Path, capsys) -> None:
    stack = make_stack(tmp_path / "s.zarr", n=3)
    with pytest.raises(SystemExit) as exc:
        main([str(stack.path)])
    assert exc.value.code == 2
    assert main([str(stack.path), "--name", "nope.tif", "-o", str(tmp_path / "x.chi")]) == 1
    assert "no frame in the stack is named or matches 'nope.tif'" in capsys.readouterr().err
    assert main([str(stack.path), "-k", "R9", "-o", str(tmp_path / "x.chi")]) == 1


def test_a_buffer_stack_alone_subtracts_all_its_frames_and_the_report_says_so(
        tmp_path: Path, capsys) -> None:
    # Issue 21: "--frames 0-19 --buffer-stack B.zarr" returned rc 0 and subtracted nothing.
    sample = make_stack(tmp_path / "sample.zarr", n=8, completion=[7, 6, 5, 4, 3, 2, 1, 0])
    buffer = make_stack(tmp_path / "buffer.zarr", n=4, seed=5, prefix="buf",
                        completion=[3, 1, 2, 0])
    chi = tmp_path / "sub.chi"
    assert main([str(sample.path), "--frames", "2-5", "--buffer-stack", str(buffer.path),
                 "-o", str(chi)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sample"]["kept"] == sample.names[2:6]  # acquisition order, not rows
    assert report["buffer"]["kept"] == buffer.names
    assert report["result"] == (f"the average of 4 frames of {sample.path} curve R0 minus "
                                f"the average of 4 buffer frames of {buffer.path} curve R0")
    curve = read_chi(chi)
    # the mean of float32 values in float64 and one subtraction: 1e-12 is ~1e4 ulps
    expected = (sample.intensity[2:6].astype(np.float64).mean(axis=0)
                - buffer.intensity.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(curve.intensity[:-3], expected[:-3], rtol=1e-12)
    assert curve.integparams["frames"] == sample.names[2:6]
    assert curve.integparams["buffer_frames"] == buffer.names
