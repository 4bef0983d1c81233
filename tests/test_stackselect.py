"""Frame selection from a real zarr curve stack: positions in acquisition order (what
open_dataset shows), never stack rows, and shell patterns on frame names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saxs_pipeline.stack.read import frame_names, open_dataset
from saxs_pipeline.stack.select import load_curves, parse_indices, select_frames

from stackcases import CALIBRATION, Q, make_stack

NAMES = ["buf_001.tif", "buf_002.tif", "s_001.tif", "s_002.tif", "s_003.tif"]

# rows 0, 1 then frames 12-19, then 2-11: completion order as the issue saw it
OUT_OF_ORDER = [0, 1, *range(12, 20), *range(2, 12)]


def test_parse_indices() -> None:
    assert parse_indices("0-2, 4", 5) == [0, 1, 2, 4]
    assert parse_indices("-1", 5) == [4]
    with pytest.raises(ValueError, match=r"outside the stack's 5 frames \(0-4\)"):
        parse_indices("5", 5)
    with pytest.raises(ValueError, match="runs backwards"):
        parse_indices("3-1", 5)
    with pytest.raises(ValueError, match="not a position"):
        parse_indices("a-b", 5)


def test_select_frames_is_a_union_in_the_order_given() -> None:
    assert select_frames(NAMES) == [0, 1, 2, 3, 4]
    assert select_frames(NAMES, patterns=["s_*", "buf_001.tif"]) == [0, 2, 3, 4]
    assert select_frames(NAMES, indices=[4, 0]) == [0, 4]
    assert select_frames(NAMES, indices="0", patterns=["s_00[23].tif"]) == [0, 3, 4]
    with pytest.raises(ValueError, match="no frame in the stack is named or matches 'x.tif'"):
        select_frames(NAMES, patterns=["x.tif"])
    with pytest.raises(ValueError, match=r"matches 'q_\*'"):
        select_frames(NAMES, patterns=["q_*"])
    with pytest.raises(ValueError, match="selection is empty"):
        select_frames(NAMES, indices="")


def test_frames_of_multi_frame_files_are_named_with_their_index() -> None:
    names = frame_names(["a.tif", "run_master.h5", "run_master.h5"], [0, 0, 1])
    assert names == ["a.tif", "run_master.h5#0", "run_master.h5#1"]
    # the file's name selects all of its frames, FILE#N one of them
    assert select_frames(names, patterns=["run_master.h5"]) == [1, 2]
    assert select_frames(names, patterns=["*#1"]) == [2]


def test_load_curves_from_a_real_stack(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=5)
    curves = load_curves(stack.path, "R0", indices="1-3")
    assert curves.names == stack.names[1:4] and curves.rows == [1, 2, 3]
    np.testing.assert_array_equal(curves.q, Q)
    np.testing.assert_array_equal(curves.intensity, stack.intensity[1:4].astype(np.float64))
    np.testing.assert_array_equal(curves.error, stack.error[1:4].astype(np.float64))
    np.testing.assert_array_equal(curves.image_time, stack.times[1:4])
    np.testing.assert_array_equal(curves.integparams["I0"], [1.0, 2.0, 3.0])
    assert curves.calibration == CALIBRATION and curves.axis_units == "1/nm"
    with pytest.raises(ValueError, match=r"has no curve 'R5' \(it has \['R0'\]\)"):
        load_curves(stack.path, "R5")


def test_positions_are_in_acquisition_order_not_stack_rows(tmp_path: Path) -> None:
    # Issue 21: "--frames 0-19 picked sample_00000, 00001, 00030-00037, 00002-00011".
    stack = make_stack(tmp_path / "run.zarr", n=20, completion=OUT_OF_ORDER)
    ds = open_dataset(stack.path)
    assert list(ds["name"].values) == stack.names  # what a user reads
    curves = load_curves(stack.path, indices="10-15")
    assert curves.names == list(ds["name"].values[10:16]) == stack.names[10:16]
    assert curves.rows == [int(r) for r in ds["row"].values[10:16]]
    assert curves.rows != list(range(10, 16))  # the rows hold other frames
    # exact: float32 values as stored, converted to float64 on both sides
    np.testing.assert_array_equal(curves.intensity, ds["I"].values[10:16].astype(np.float64))
    np.testing.assert_array_equal(curves.intensity, stack.intensity[10:16].astype(np.float64))
    by_name = load_curves(stack.path, patterns=["sample_0001[5-9].tif", "sample_00002.tif"],
                          indices="-1")
    assert by_name.names == [stack.names[2], *stack.names[15:20]]
