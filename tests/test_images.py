"""Detector frames: reading, completeness checks, Pilatus headers, writing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import tifffile

from saxs_pipeline.frames.source import ImageError, ImageIncompleteError
from saxs_pipeline.frames.tiff import (
    read_frame,
    read_header,
    read_image,
    tiff_complete,
    write_pilatus_tiff,
)

from realdata import DATA

PILATUS_SHAPE = (1043, 981)


@pytest.fixture
def real_frame() -> Path:
    path = DATA / "buf1_00000.tif"
    if not path.is_file():
        pytest.skip(f"real Pilatus test data not found in {DATA}")
    return path


@pytest.fixture
def synthetic_frame(tmp_path: Path) -> Path:
    path = tmp_path / "synthetic_00001.tif"
    image = np.arange(60 * 50, dtype=np.int32).reshape(60, 50) - 5
    write_pilatus_tiff(
        path,
        image,
        {"Exposure_time": 1.0, "Exposure_time_unit": "s"},
        date=datetime(2020, 5, 6, 7, 8, 9),
    )
    return path


# --- the real Pilatus frame ---------------------------------------------------------------


def test_real_frame(real_frame: Path) -> None:
    image, header = read_frame(real_frame, shape=PILATUS_SHAPE)
    assert image.shape == PILATUS_SHAPE
    assert image.dtype == np.int32
    assert image.min() == -2
    np.testing.assert_array_equal(image, tifffile.imread(real_frame))
    np.testing.assert_array_equal(read_image(real_frame), image)
    assert header["Exposure_time"] == 10.0
    assert header["Exposure_time_unit"] == "s"
    assert header["Pixel_size"] == (172e-6, 172e-6)
    assert header["Pixel_size_unit"] == "m"
    assert header["Wavelength"] == pytest.approx(1.54987)
    assert header["Wavelength_unit"] == "A"
    assert header["Image_path"] == "/home/det/images/140128_amenitsch/"
    assert header["N_excluded_pixels"] == 137
    assert header["Tau"] == 0
    assert header["Gain_setting"] == "autog (vrf = 1.000)"
    assert header["Silicon sensor, thickness"] == pytest.approx(0.00045)
    # this frame has no Pilatus date line: the date comes from the TIFF DateTime tag
    assert header["date"] == "2014-01-31T12:26:52"
    assert header["time"] == datetime(2014, 1, 31, 12, 26, 52, tzinfo=UTC).timestamp()
    assert tiff_complete(real_frame)


def test_read_header_from_path_and_tifffile(real_frame: Path) -> None:
    from_path = read_header(real_frame)
    with tifffile.TiffFile(real_frame) as tif:
        assert read_header(tif) == from_path
    assert from_path == read_frame(real_frame)[1]


# 0-8 bytes: magic or IFD offset cut; 100: IFD cut; 500/2000: IFD whole but tag values
# (ImageDescription) cut, which tifffile alone would accept with an empty description;
# 50 %, 99 %, all but one byte: image data cut.
@pytest.mark.parametrize("keep", ["0", "4", "8", "100", "500", "2000", "50%", "99%", "-1"])
def test_truncated_real_frame(real_frame: Path, tmp_path: Path, keep: str) -> None:
    data = real_frame.read_bytes()
    if keep.endswith("%"):
        n = len(data) * int(keep[:-1]) // 100
    else:
        n = int(keep) % len(data)
    path = tmp_path / "cut.tif"
    path.write_bytes(data[:n])
    with pytest.raises(ImageIncompleteError) as err:
        read_image(path)
    assert str(path) in str(err.value)
    assert f"{n} bytes present" in str(err.value)
    assert err.value.present == n and err.value.needed > n
    with pytest.raises(ImageIncompleteError):
        read_frame(path)
    assert not tiff_complete(path)


def test_read_header_of_truncated_real_frame(real_frame: Path, tmp_path: Path) -> None:
    data = real_frame.read_bytes()
    path = tmp_path / "cut.tif"
    path.write_bytes(data[:500])  # ImageDescription cut off
    with pytest.raises(ImageIncompleteError, match=r"cut\.tif is incomplete: 500 bytes present"):
        read_header(path)
    path.write_bytes(data[: len(data) // 2])  # header complete, image data cut
    assert read_header(path)["Exposure_time"] == 10.0


# --- synthetic frames ---------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.05, 0.5, 0.99])
def test_truncated_synthetic_frame(synthetic_frame: Path, tmp_path: Path, fraction: float) -> None:
    data = synthetic_frame.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ImageIncompleteError, match=r"cut\.tif is incomplete"):
        read_image(cut)
    assert not tiff_complete(cut)
    assert tiff_complete(synthetic_frame)


@pytest.mark.parametrize("bigtiff", [False, True])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_truncated_tiff_variants(tmp_path: Path, bigtiff: bool, byteorder: str) -> None:
    image = np.arange(30 * 20, dtype=np.uint16).reshape(30, 20)
    path = tmp_path / "v.tif"
    tifffile.imwrite(
        path, image, bigtiff=bigtiff, byteorder=byteorder, description="# Exposure_time 2 s"
    )
    np.testing.assert_array_equal(read_image(path), image)
    data = path.read_bytes()
    for n in (3, 12, 40, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:n])
        with pytest.raises(ImageIncompleteError, match=f"{n} bytes present"):
            read_image(path)
        assert not tiff_complete(path)


def test_growing_file_becomes_readable(synthetic_frame: Path, tmp_path: Path) -> None:
    data = synthetic_frame.read_bytes()
    path = tmp_path / "growing.tif"
    path.write_bytes(data[:300])
    with pytest.raises(ImageIncompleteError):
        read_image(path)
    with path.open("ab") as fh:
        fh.write(data[300:])
    assert read_image(path).shape == (60, 50)


def test_not_a_tiff(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("this is not an image, just some text long enough\n")
    with pytest.raises(ImageError, match=r"notes\.tif is not a TIFF") as err:
        read_image(path)
    assert not isinstance(err.value, ImageIncompleteError)
    assert not tiff_complete(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"gone\.tif does not exist"):
        read_image(tmp_path / "gone.tif")
    assert not tiff_complete(tmp_path / "gone.tif")


def test_complete_tiff_that_is_not_2d(tmp_path: Path) -> None:
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((10, 12, 3), dtype=np.uint8), photometric="rgb")
    with pytest.raises(ImageError, match=r"rgb\.tif is not a 2-D image") as err:
        read_image(path)
    assert not isinstance(err.value, ImageIncompleteError)


def test_any_2d_tiff_keeps_its_dtype(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    image = np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7)
    tifffile.imwrite(path, image, compression="zlib", tile=(16, 16))
    out, header = read_frame(path)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image)
    assert header["date"] is None or isinstance(header["date"], str)


def test_wrong_shape(synthetic_frame: Path) -> None:
    with pytest.raises(ImageError) as err:
        read_image(synthetic_frame, shape=(1043, 981))
    assert (
        str(err.value) == f"frame {synthetic_frame} has shape (60, 50) but Imagesize is [1043, 981]"
    )
    assert read_image(synthetic_frame, shape=(60, 50)).shape == (60, 50)


def test_write_read_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(-2, 1_000_000, size=(40, 33)).astype(np.int32)
    header = {
        "Pixel_size": (172e-6, 172e-6),
        "Pixel_size_unit": "m",
        "Exposure_time": 10.0,
        "Exposure_time_unit": "s",
        "N_excluded_pixels": 137,
        "Image_path": "/data/run 1/",
        "Gain_setting": "autog (vrf = 1.000)",
        "Wavelength": 1.54987,
        "Wavelength_unit": "A",
    }
    date = datetime(2021, 3, 4, 5, 6, 7, 890000)
    path = tmp_path / "frame_00000.tif"
    write_pilatus_tiff(path, image, header, date=date)

    out, got = read_frame(path)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, image)
    assert got.pop("date") == "2021-03-04T05:06:07.890"
    assert got.pop("time") == pytest.approx(date.replace(tzinfo=UTC).timestamp())
    assert got == header

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.compression == 1
        assert len(page.dataoffsets) == 1
        assert page.tags["DateTime"].value == "2021:03:04 05:06:07"
        desc = page.description
    assert desc.startswith("# 2021-03-04T05:06:07.890\r\n# Pixel_size ")
    assert "\n#" in desc and all(line.startswith("# ") for line in desc.split("\r\n"))


def test_write_converts_aware_date_to_utc_and_int32(tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    vienna = timezone(timedelta(hours=1))
    write_pilatus_tiff(
        path,
        np.ones((3, 4), dtype=np.uint16),
        date=datetime(2014, 1, 31, 13, 26, 52, tzinfo=vienna),
    )
    out, header = read_frame(path)
    assert out.dtype == np.int32
    assert header["date"] == "2014-01-31T12:26:52.000"
    assert header["time"] == datetime(2014, 1, 31, 12, 26, 52, tzinfo=UTC).timestamp()


def test_pilatus_date_line_wins_over_datetime_tag(tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    tifffile.imwrite(
        path,
        np.zeros((4, 4), dtype=np.int32),
        description="# Detector: PILATUS 1M, S/N 1-0001\r\n# 2014-01-31T12:26:52.123\r\n"
        "# Beam_xy (490.00, 517.00) pixels\r\n# Detector_Voffset -0.01000 m",
        datetime="1999:01:01 00:00:00",
        metadata=None,
    )
    header = read_header(path)
    assert header["date"] == "2014-01-31T12:26:52.123"
    assert header["time"] == pytest.approx(
        datetime(2014, 1, 31, 12, 26, 52, 123000, tzinfo=UTC).timestamp()
    )
    assert header["Detector"] == "PILATUS 1M, S/N 1-0001"
    assert header["Beam_xy"] == (490.0, 517.0)
    assert header["Beam_xy_unit"] == "pixels"
    assert header["Detector_Voffset"] == -0.01
