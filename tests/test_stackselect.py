"""Frame selection from a real zarr curve stack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saxs_pipeline.stack.select import load_curves, parse_indices, select_frames

from stackcases import CALIBRATION, Q, make_stack

NAMES = ["buf_001.tif", "buf_002.tif", "s_001.tif", "s_002.tif", "s_003.tif"]


def test_parse_indices() -> None:
    assert parse_indices("0-2, 4", 5) == [0, 1, 2, 4]
    assert parse_indices("-1", 5) == [4]
    with pytest.raises(ValueError, match="outside the stack's 5 frames"):
        parse_indices("5", 5)
    with pytest.raises(ValueError, match="runs backwards"):
        parse_indices("3-1", 5)
    with pytest.raises(ValueError, match="not an index"):
        parse_indices("a-b", 5)


def test_select_frames_is_a_union_in_stack_order() -> None:
    assert select_frames(NAMES) == [0, 1, 2, 3, 4]
    assert select_frames(NAMES, globs=["s_*"], names=["buf_001.tif"]) == [0, 2, 3, 4]
    assert select_frames(NAMES, indices=[4, 0]) == [0, 4]
    with pytest.raises(ValueError, match="'x.tif' is not in the stack"):
        select_frames(NAMES, names=["x.tif"])
    with pytest.raises(ValueError, match=r"no frame in the stack matches 'q_\*'"):
        select_frames(NAMES, globs=["q_*"])
    with pytest.raises(ValueError, match="selection is empty"):
        select_frames(NAMES, indices="")


def test_load_curves_from_a_real_stack(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=5)
    curves = load_curves(stack.path, "R0", indices="1-3")
    assert curves.filenames == stack.names[1:4] and curves.rows == [1, 2, 3]
    np.testing.assert_array_equal(curves.q, Q)
    np.testing.assert_array_equal(curves.intensity, stack.intensity[1:4].astype(np.float64))
    np.testing.assert_array_equal(curves.error, stack.error[1:4].astype(np.float64))
    np.testing.assert_array_equal(curves.image_time, stack.times[1:4])
    np.testing.assert_array_equal(curves.integparams["I0"], [1.0, 2.0, 3.0])
    assert curves.calibration == CALIBRATION and curves.axis_units == "1/nm"
    with pytest.raises(ValueError, match=r"has no curve 'R5' \(it has \['R0'\]\)"):
        load_curves(stack.path, "R5")
