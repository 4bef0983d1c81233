"""The reduction chain on a real zarr stack: average with rejection, buffer subtraction,
.chi and NXcanSAS output (read back with read_chi and sasdata)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sasdata.dataloader.loader import Loader

from saxs_pipeline.curves.chi import read_chi
from saxs_pipeline.stack.reduction import Selection, reduce_stack, write_chi, write_nxcansas

from stackcases import CALIBRATION, Q, make_stack


def test_a_five_percent_drop_is_rejected_out_of_twenty(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=20, drop=11)
    red = reduce_stack(stack.path)
    assert [r["frame"] for r in red.notes["sample"]["rejected"]] == ["sample_00011.tif"]
    assert len(red.notes["sample"]["kept"]) == 19
    kept = [i for i in range(20) if i != 11]
    finite = slice(0, -3)
    np.testing.assert_allclose(red.intensity[finite],
                               stack.intensity[kept, finite].astype(np.float64).mean(axis=0),
                               rtol=1e-12)
    assert np.all(np.isnan(red.intensity[-3:]))  # empty bins stay empty
    assert red.integparams["I0"] == pytest.approx(np.mean(kept))


def test_buffer_subtraction_of_identical_frames_is_zero_within_error(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=10, seed=2)
    red = reduce_stack(stack.path, sample=Selection(indices="0-4"),
                       buffer=Selection(indices="5-9"))
    z = red.intensity[:-3] / red.error[:-3]
    assert np.all(np.abs(z) < 5) and abs(np.mean(z)) < 4 / np.sqrt(z.size)
    same = reduce_stack(stack.path, sample=Selection(indices="0-4"),
                        buffer=Selection(indices="0-4"), buffer_stack=stack.path)
    np.testing.assert_array_equal(same.intensity[:-3], 0.0)
    assert same.integparams == {"I0": 0.0, "I1": 0.0, "I2": 0.0}
    assert same.notes["buffer"]["kept"] == stack.names[:5]


def test_outputs(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=6)
    red = reduce_stack(stack.path, sample=Selection(names=["sample_0000[0-2].tif"]))
    chi = read_chi(write_chi(red, tmp_path / "avg.chi"))
    np.testing.assert_array_equal(chi.radial, Q)
    np.testing.assert_array_equal(chi.intensity, red.intensity)
    assert chi.config == CALIBRATION
    assert chi.integparams == {**red.integparams, "frames": stack.names[:3]}
    (data,) = Loader().load(str(write_nxcansas(red, tmp_path / "avg.h5", q_units="1/angstrom")))
    np.testing.assert_array_equal(data.y, red.intensity[:-3])
    np.testing.assert_array_equal(data.dy, red.error[:-3])
    assert data.title == "average of 3 frames"


def test_buffer_on_another_grid(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "a.zarr", n=3)
    other = make_stack(tmp_path / "b.zarr", n=3, q=Q[:-1])
    with pytest.raises(ValueError, match="another q grid"):
        reduce_stack(stack.path, buffer=Selection(), buffer_stack=other.path)
