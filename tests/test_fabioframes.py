"""fabio-read frames (CBF, EDF): completeness checks, multi-frame EDF, headers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fabio.cbfimage import CbfImage
from fabio.edfimage import EdfImage

from saxs_pipeline.frames.fabioformats import FabioFrames
from saxs_pipeline.frames.source import ImageError, ImageIncompleteError


def _stack(n: int) -> np.ndarray:
    return np.random.default_rng(9).poisson(25, (n, 20, 30)).astype(np.int32)


def test_multi_frame_edf(tmp_path: Path) -> None:
    stack = _stack(3)
    edf = EdfImage(data=stack[0], header={"Exposure": "1.0"})
    for frame in stack[1:]:
        edf.append_frame(data=frame)
    edf.write(str(tmp_path / "m.edf"))
    with FabioFrames(tmp_path / "m.edf") as src:
        assert src.frame_count() == 3
        np.testing.assert_array_equal(src.read(0, 3), stack)  # exact: integer data
        np.testing.assert_array_equal(src.read(2, 3)[0], stack[2])
        meta = src.metadata(0, 3)
    assert [m["index"] for m in meta] == [0, 1, 2]
    assert meta[0]["Exposure"] == "1.0" and meta[0]["time"] is None


def test_cbf_pilatus_header_parsed(tmp_path: Path) -> None:
    cbf = CbfImage(data=_stack(1)[0])
    cbf.header["_array_data.header_contents"] = (
        "# Detector: PILATUS 1M\r\n# 2024-03-14T09:00:01.500\r\n# Exposure_time 0.5 s\r\n"
    )
    cbf.write(str(tmp_path / "p.cbf"))
    with FabioFrames(tmp_path / "p.cbf") as src:
        meta = src.metadata(0, 1)[0]
    assert meta["Exposure_time"] == 0.5 and meta["Exposure_time_unit"] == "s"
    assert meta["date"] == "2024-03-14T09:00:01.500"
    assert meta["time"] == pytest.approx(1710406801.5)


def test_cut_cbf_and_edf_are_incomplete(tmp_path: Path) -> None:
    img = _stack(1)[0]
    CbfImage(data=img).write(str(tmp_path / "a.cbf"))
    EdfImage(data=img).write(str(tmp_path / "a.edf"))
    for name in ("a.cbf", "a.edf"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[:-300])
        with pytest.raises(ImageIncompleteError, match=f"cut_{name}"):
            FabioFrames(tmp_path / f"cut_{name}")
    header_only = (tmp_path / "a.cbf").read_bytes()[:200]
    (tmp_path / "head.cbf").write_bytes(header_only)
    with pytest.raises(ImageIncompleteError):
        FabioFrames(tmp_path / "head.cbf")


def test_unreadable_file_and_wrong_shape(tmp_path: Path) -> None:
    (tmp_path / "junk.dat").write_bytes(b"not an image at all" * 20)
    with pytest.raises(ImageError, match="not an image fabio can read"):
        FabioFrames(tmp_path / "junk.dat")
    CbfImage(data=_stack(1)[0]).write(str(tmp_path / "a.cbf"))
    with pytest.raises(ImageError, match=r"Imagesize is \[5, 5\]"):
        FabioFrames(tmp_path / "a.cbf", shape=(5, 5))
