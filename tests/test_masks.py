"""Masks: FIT2D .msk, image masks, magic-byte dispatch, network attachments."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import tifffile
from PIL import Image

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.masks import (
    MaskError,
    decode_attachment,
    encode_attachment,
    fit2d_msk_bytes,
    load_mask,
    mask_from_bytes,
    read_fit2d_msk,
    read_mask,
    write_fit2d_msk,
)

from realdata import DATA

PILATUS_SHAPE = (1043, 981)


@pytest.fixture
def data_dir() -> Path:
    if not (DATA / "AAA_integ.msk").is_file():
        pytest.skip(f"real Pilatus test data not found in {DATA}")
    return DATA


def _random_valid(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) > 0.3


def _geometry(shape: tuple[int, int]) -> dict:
    return {
        "Tilt": {"TiltAngleDeg": 0.0, "TiltRotDeg": 0.0},
        "BeamCenter": [10.0, 10.0],
        "DedectorDistanceMM": 1000.0,
        "PixelSizeMicroM": [172.0, 172.0],
        "Imagesize": list(shape),
    }


def _calibration(tmp_path: Path, mask_file: str, shape: tuple[int, int]):
    raw = {"Geometry": _geometry(shape), "Wavelength": 1.54, "Masks": [{"MaskFile": mask_file}]}
    return load_calibration(raw, base_dir=tmp_path)


# --- the real FIT2D mask ------------------------------------------------------------------


def test_real_fit2d_mask(data_dir: Path) -> None:
    valid = read_mask(data_dir / "AAA_integ.msk", shape=PILATUS_SHAPE)
    assert valid.dtype == bool
    assert valid.shape == PILATUS_SHAPE
    assert int(valid.sum()) == 666395
    image = tifffile.imread(data_dir / "buf1_00000.tif")
    negative = image < 0
    assert negative.any()
    assert not valid[negative].any(), "every negative (dead/gap) pixel must be masked"


def test_real_mask_file_is_one_byte_longer_than_needed(data_dir: Path) -> None:
    data = (data_dir / "AAA_integ.msk").read_bytes()
    valid = read_fit2d_msk(data, "AAA_integ.msk")
    rebuilt = fit2d_msk_bytes(valid)
    assert len(data) == len(rebuilt) + 1
    assert data.startswith(rebuilt)


def test_load_mask_from_calibration_and_attachments(data_dir: Path) -> None:
    cal = load_calibration(data_dir / "cal_flat.json")
    mask = cal.masks[0]
    from_disk = load_mask(cal, mask)
    latin1 = encode_attachment(data_dir / "AAA_integ.msk", filename=mask.mask_file)
    assert latin1["filename"] == "AAA_integ.msk"
    raw = (data_dir / "AAA_integ.msk").read_bytes()
    b64 = {"filename": "AAA_integ.msk", "data": base64.b64encode(raw).decode("ascii")}
    assert decode_attachment(latin1) == raw
    assert decode_attachment(b64) == raw
    np.testing.assert_array_equal(load_mask(cal, mask, latin1), from_disk)
    np.testing.assert_array_equal(load_mask(cal, mask, b64), from_disk)


# --- FIT2D format -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 1), (5, 31), (6, 32), (4, 64), (9, 65), (13, 981)])
def test_fit2d_round_trip(tmp_path: Path, shape: tuple[int, int]) -> None:
    valid = _random_valid(shape)
    path = tmp_path / "m.msk"
    write_fit2d_msk(path, valid)
    width = shape[1]
    assert path.stat().st_size == 1024 + shape[0] * -(-width // 32) * 4
    np.testing.assert_array_equal(read_mask(path, shape=shape), valid)


def test_fit2d_layout_bottom_up_lsb_first() -> None:
    # Row 0 of the image is the last row of the file; bit 0 of a byte is the first pixel.
    valid = np.ones((2, 3), dtype=bool)
    valid[0, 1] = False
    data = fit2d_msk_bytes(valid)
    assert struct.unpack("<4i", data[:16]) == tuple(b"MASK")
    assert struct.unpack("<2i", data[16:24]) == (3, 2)
    assert data[1024:1028] == b"\x00\x00\x00\x00"
    assert data[1028:1032] == b"\x02\x00\x00\x00"


def _buggy_msk(valid: np.ndarray) -> bytes:
    """A mask written with the original's padding: a whole extra word per row when the
    width is a multiple of 32."""
    height, width = valid.shape
    padded = np.zeros((height, width + 32 - width % 32), dtype=bool)
    padded[:, :width] = ~valid[::-1]
    return fit2d_msk_bytes(valid)[:1024] + np.packbits(padded, axis=1, bitorder="little").tobytes()


@pytest.mark.parametrize("width", [32, 64, 96])
def test_fit2d_buggy_padding_accepted(width: int) -> None:
    valid = _random_valid((5, width), seed=width)
    data = _buggy_msk(valid)
    assert len(data) == 1024 + 5 * (width // 32 + 1) * 4
    np.testing.assert_array_equal(read_fit2d_msk(data), valid)
    # ...and with the few trailing bytes real files have.
    np.testing.assert_array_equal(read_fit2d_msk(data + b"\n"), valid)


def test_fit2d_trailing_bytes_tolerated() -> None:
    valid = _random_valid((6, 64), seed=3)
    data = fit2d_msk_bytes(valid) + b"\n\x00\x00"
    np.testing.assert_array_equal(read_fit2d_msk(data), valid)


def test_fit2d_bad_magic() -> None:
    data = bytearray(fit2d_msk_bytes(_random_valid((4, 4))))
    data[0] = ord("N")
    with pytest.raises(MaskError, match=r"broken\.msk.*not a FIT2D mask"):
        read_fit2d_msk(bytes(data), "broken.msk")


def test_fit2d_non_positive_size() -> None:
    data = bytearray(fit2d_msk_bytes(_random_valid((4, 4))))
    data[16:20] = struct.pack("<i", 0)
    with pytest.raises(MaskError, match=r"zero\.msk.*non-positive size 0 x 4"):
        read_fit2d_msk(bytes(data), "zero.msk")


def test_fit2d_too_little_data() -> None:
    data = fit2d_msk_bytes(_random_valid((40, 50)))
    with pytest.raises(MaskError, match=r"short\.msk.*needs 1344 bytes but the file has 1300"):
        read_fit2d_msk(data[:1300], "short.msk")
    with pytest.raises(MaskError, match=r"tiny\.msk.*too short"):
        read_fit2d_msk(data[:10], "tiny.msk")


def test_bad_header_through_read_mask(tmp_path: Path) -> None:
    path = tmp_path / "bad.msk"
    path.write_bytes(b"MASK" + b"\x00" * 2000)
    with pytest.raises(MaskError, match=r"bad\.msk.*unknown format"):
        read_mask(path)


# --- image masks and dispatch -------------------------------------------------------------


def _masked_image(valid: np.ndarray, dtype=np.uint8) -> np.ndarray:
    return np.where(valid, 0, 255).astype(dtype)


def test_tiff_mask_nonzero_is_masked(tmp_path: Path) -> None:
    valid = _random_valid((30, 40), seed=1)
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, _masked_image(valid))
    np.testing.assert_array_equal(read_mask(path, shape=(30, 40)), valid)
    # any nonzero value masks, also in int32 with negative values
    tifffile.imwrite(path, np.where(valid, 0, -1).astype(np.int32))
    np.testing.assert_array_equal(read_mask(path), valid)


def test_png_mask_grayscale_and_rgba(tmp_path: Path) -> None:
    valid = _random_valid((20, 25), seed=2)
    gray = tmp_path / "gray.png"
    Image.fromarray(_masked_image(valid)).save(gray)
    np.testing.assert_array_equal(read_mask(gray, shape=(20, 25)), valid)
    # matplotlib writes RGBA with an opaque alpha channel: alpha must not mask everything
    rgba = tmp_path / "rgba.png"
    matplotlib.image.imsave(rgba, (~valid).astype(float), cmap="gray", vmin=0, vmax=1)
    np.testing.assert_array_equal(read_mask(rgba), valid)


def test_npy_mask_nonzero_is_masked(tmp_path: Path) -> None:
    valid = _random_valid((11, 12), seed=4)
    path = tmp_path / "mask.npy"
    np.save(path, ~valid)
    np.testing.assert_array_equal(read_mask(path), valid)
    np.save(path, _masked_image(valid, np.float32))
    np.testing.assert_array_equal(read_mask(path), valid)


def test_dispatch_ignores_extension(tmp_path: Path) -> None:
    valid = _random_valid((8, 9), seed=5)
    disguised = tmp_path / "really_a_fit2d_mask.tif"
    write_fit2d_msk(disguised, valid)
    np.testing.assert_array_equal(read_mask(disguised), valid)
    tiff_named_msk = tmp_path / "really_a_tiff.msk"
    tifffile.imwrite(tiff_named_msk, _masked_image(valid))
    np.testing.assert_array_equal(read_mask(tiff_named_msk), valid)


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "mask.txt"
    path.write_text("0 1 0\n")
    with pytest.raises(MaskError, match=r"mask\.txt.*unknown format"):
        read_mask(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MaskError, match=r"nowhere\.msk.*not found"):
        read_mask(tmp_path / "nowhere.msk")


def test_not_2d_image_mask(tmp_path: Path) -> None:
    path = tmp_path / "stack.npy"
    np.save(path, np.zeros((2, 3, 5)))
    with pytest.raises(MaskError, match=r"stack\.npy.*not 2-D"):
        read_mask(path)


def test_wrong_shape(tmp_path: Path) -> None:
    path = tmp_path / "small.msk"
    write_fit2d_msk(path, _random_valid((10, 20)))
    with pytest.raises(MaskError) as err:
        read_mask(path, shape=(1043, 981))
    assert str(err.value) == f"mask {path} has shape (10, 20) but Imagesize is [1043, 981]"


# --- attachments and load_mask ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["msk", "tif", "png", "npy"])
def test_attachment_encodings_agree(tmp_path: Path, kind: str) -> None:
    valid = _random_valid((16, 24), seed=6)
    path = tmp_path / f"mask.{kind}"
    if kind == "msk":
        write_fit2d_msk(path, valid)
    elif kind == "tif":
        tifffile.imwrite(path, _masked_image(valid))
    elif kind == "png":
        Image.fromarray(_masked_image(valid)).save(path)
    else:
        np.save(path, ~valid)
    raw = path.read_bytes()
    latin1 = encode_attachment(path)
    assert latin1 == {"filename": str(path), "data": raw.decode("latin-1")}
    b64 = {"filename": str(path), "data": base64.b64encode(raw).decode("ascii")}
    wrapped = {"filename": str(path), "data": base64.encodebytes(raw).decode("ascii")}
    for att in (latin1, b64, wrapped):
        assert decode_attachment(att) == raw
        np.testing.assert_array_equal(
            mask_from_bytes(decode_attachment(att), shape=(16, 24)), valid
        )


def test_attachment_that_is_not_latin1() -> None:
    with pytest.raises(MaskError, match=r"m\.msk.*neither base64 nor latin-1"):
        decode_attachment({"filename": "m.msk", "data": "MASK\u20ac"})


def test_load_mask_attachment_and_disk(tmp_path: Path) -> None:
    valid = _random_valid((12, 34), seed=7)
    write_fit2d_msk(tmp_path / "det.msk", valid)
    cal = _calibration(tmp_path, "det.msk", (12, 34))
    np.testing.assert_array_equal(load_mask(cal, cal.masks[0]), valid)
    att = encode_attachment(tmp_path / "det.msk", filename="det.msk")
    (tmp_path / "det.msk").unlink()  # the attachment must be used, not the disk
    np.testing.assert_array_equal(load_mask(cal, cal.masks[0], att), valid)


def test_load_mask_checks_imagesize(tmp_path: Path) -> None:
    write_fit2d_msk(tmp_path / "det.msk", _random_valid((12, 34)))
    cal = _calibration(tmp_path, "det.msk", (34, 12))
    with pytest.raises(
        MaskError, match=r"det\.msk has shape \(12, 34\) but Imagesize is \[34, 12\]"
    ):
        load_mask(cal, cal.masks[0])
    att = encode_attachment(tmp_path / "det.msk", filename="det.msk")
    with pytest.raises(
        MaskError, match=r"^mask det\.msk has shape \(12, 34\) but Imagesize is \[34, 12\]$"
    ):
        load_mask(cal, cal.masks[0], att)
