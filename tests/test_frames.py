"""The frame-source interface: dispatch by content, the TIFF wrapper (today's reader,
unchanged), and the shared helpers. Integer frames compare exactly (tolerance 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fabio.cbfimage import CbfImage
from fabio.edfimage import EdfImage

from saxs_pipeline.frames.registry import detect_format, frame_count, open_frames, read_frames
from saxs_pipeline.frames.source import (
    FrameSource,
    ImageError,
    ImageIncompleteError,
    invalid_value_for,
)
from saxs_pipeline.frames.tiff import TiffFrames, read_frame, write_pilatus_tiff


def _image() -> np.ndarray:
    img = np.random.default_rng(5).poisson(30, (41, 33)).astype(np.int32)
    img[0, :4] = -1  # Pilatus gap marker
    img[7, 7] = -2
    return img


def test_cbf_edf_and_tiff_read_back_the_same_array(tmp_path: Path) -> None:
    img = _image()
    write_pilatus_tiff(tmp_path / "a.tif", img, {"Exposure_time": 1.0, "Exposure_time_unit": "s"})
    CbfImage(data=img).write(str(tmp_path / "a.cbf"))
    EdfImage(data=img).write(str(tmp_path / "a.edf"))
    arrays = {}
    for name in ("a.tif", "a.cbf", "a.edf"):
        with open_frames(tmp_path / name, shape=img.shape) as src:
            assert isinstance(src, FrameSource)
            assert src.frame_count() == 1 and src.shape == img.shape
            arrays[name] = src.read(0, 1)[0]
            assert src.metadata(0, 1)[0]["index"] == 0
    for name, arr in arrays.items():
        assert arr.dtype == np.int32, name
        np.testing.assert_array_equal(arr, arrays["a.tif"])
    np.testing.assert_array_equal(arrays["a.tif"], img)


def test_tiff_wrapper_is_read_frame(tmp_path: Path) -> None:
    img = _image()
    path = tmp_path / "f.tif"
    write_pilatus_tiff(path, img, {"Exposure_time": 2.0, "Exposure_time_unit": "s"})
    data, meta = read_frames(path)
    ref_image, ref_header = read_frame(path)
    np.testing.assert_array_equal(data[0], ref_image)
    assert meta[0] == {**ref_header, "index": 0}
    assert meta[0]["time"] is not None
    with TiffFrames(path) as src:
        assert src.invalid_value is None and src.pixel_mask() is None and src.chunk_frames == 1
    # the same errors as read_frame: half-written and wrong shape
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ImageIncompleteError):
        open_frames(cut)
    with pytest.raises(ImageError, match=r"Imagesize is \[10, 10\]"):
        open_frames(path, shape=(10, 10))
    assert frame_count(path) == 1


def test_detect_format_by_content(tmp_path: Path) -> None:
    img = _image()
    write_pilatus_tiff(tmp_path / "tiff_without_suffix", img)
    assert detect_format(tmp_path / "tiff_without_suffix") == "tiff"
    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    assert detect_format(tmp_path / "x.h5") == "hdf5"
    CbfImage(data=img).write(str(tmp_path / "x.img"))
    assert detect_format(tmp_path / "x.img") == "fabio"
    with pytest.raises(ImageError, match="does not exist"):
        detect_format(tmp_path / "nope.cbf")
    with pytest.raises(ImageError, match="only meaningful for HDF5"):
        open_frames(tmp_path / "x.img", dataset="/entry/data/data")


def test_invalid_value_rule() -> None:
    assert invalid_value_for(np.dtype("u4")) == 2**32 - 1
    assert invalid_value_for(np.dtype("u2")) == 65535
    assert invalid_value_for(np.dtype("i4")) is None
    assert invalid_value_for(np.dtype("f4")) is None


def test_range_checks(tmp_path: Path) -> None:
    write_pilatus_tiff(tmp_path / "f.tif", _image())
    with open_frames(tmp_path / "f.tif") as src:
        with pytest.raises(ImageError, match=r"frames \[1, 2\) are not a range"):
            src.read(1, 2)
