"""Dark and flat files: every format the pipeline reads, multi-frame means, markers, and
errors that name the key and the file. Tolerance: 1e-12 (means of small integers in
float64 are exact up to the division)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from fabio.edfimage import EdfImage

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.config.darkflat import load_correction_images, read_mean_image
from saxs_pipeline.frames.source import ImageError
from saxs_pipeline.frames.tiff import write_pilatus_tiff

SHAPE = (12, 10)


def stack(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(20, (n, *SHAPE)).astype(np.int32)


def test_tiff_hdf5_edf_npy(tmp_path: Path) -> None:
    frames = stack(3)
    write_pilatus_tiff(tmp_path / "one.tif", frames[0])
    with h5py.File(tmp_path / "dark.h5", "w") as fh:
        fh.create_dataset("/entry/data/data", data=frames, chunks=(1, *SHAPE))
    edf = EdfImage(data=frames[0])
    for frame in frames[1:]:
        edf.append_frame(data=frame)
    edf.write(str(tmp_path / "dark.edf"))
    np.save(tmp_path / "dark.npy", frames)
    np.save(tmp_path / "one.npy", frames[0].astype(np.float32))
    mean = frames.mean(axis=0)
    for name, expected, n in (("one.tif", frames[0], 1), ("dark.h5", mean, 3), ("dark.edf", mean, 3),
                              ("dark.npy", mean, 3), ("one.npy", frames[0], 1)):
        got = read_mean_image(tmp_path / name, SHAPE)
        assert got.frames == n, name
        assert got.image.dtype == np.float64
        np.testing.assert_allclose(got.image, expected, rtol=1e-12, err_msg=name)


def test_markers_become_nan(tmp_path: Path) -> None:
    frames = stack(2)
    frames[1, 3, 4] = -2  # a Pilatus bad pixel in one frame
    np.save(tmp_path / "int.npy", frames)
    got = read_mean_image(tmp_path / "int.npy", SHAPE).image
    assert np.isnan(got[3, 4]) and np.isfinite(np.delete(got.ravel(), 3 * 10 + 4)).all()
    eiger = stack(1).astype(np.uint32)
    eiger[0, 0, 0] = 2**32 - 1  # EIGER's invalid marker
    with h5py.File(tmp_path / "eiger.h5", "w") as fh:
        fh.create_dataset("/entry/data/data", data=eiger)
    assert np.isnan(read_mean_image(tmp_path / "eiger.h5", SHAPE).image[0, 0])
    floats = stack(1).astype(np.float64)
    floats[0, 1, 1] = -3.5  # an offset-corrected integrating detector: a real value
    np.save(tmp_path / "f.npy", floats)
    assert read_mean_image(tmp_path / "f.npy", SHAPE).image[1, 1] == -3.5


def test_wrong_shape_and_missing_files(tmp_path: Path) -> None:
    write_pilatus_tiff(tmp_path / "small.tif", np.zeros((5, 5), np.int32))
    with pytest.raises(ImageError, match=r"small.tif.*Imagesize is \[12, 10\]"):
        read_mean_image(tmp_path / "small.tif", SHAPE)
    np.save(tmp_path / "small.npy", np.zeros((2, 5, 5)))
    with pytest.raises(ImageError, match=r"small.npy: array of shape \(2, 5, 5\)"):
        read_mean_image(tmp_path / "small.npy", SHAPE)
    with pytest.raises(ImageError, match="nothing.tif: file not found"):
        read_mean_image(tmp_path / "nothing.tif", SHAPE)


def calibration(tmp_path: Path, **keys) -> Path:
    cal = {
        "Geometry": {"Tilt": {"TiltRotDeg": 0.0, "TiltAngleDeg": 0.0}, "BeamCenter": [6.0, 5.0],
                     "DedectorDistanceMM": 100.0, "PixelSizeMicroM": [172.0], "Imagesize": list(SHAPE)},
        "Wavelength": 1.54,
        "Masks": [{"MaskFile": "mask.npy"}],
        **keys,
    }
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    return path


def test_calibration_images_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "dark").mkdir()
    frames = stack(4)
    np.save(tmp_path / "dark" / "d.npy", frames)
    write_pilatus_tiff(tmp_path / "flat.tif", frames[0] + 1)
    cal = load_calibration(calibration(tmp_path, Dark="dark/d.npy", DarkExposures=5, Flat="flat.tif"))
    images = load_correction_images(cal)
    np.testing.assert_allclose(images.dark, frames.mean(axis=0), rtol=1e-12)
    assert images.dark_exposures == 20  # 4 frames of 5 exposures each
    np.testing.assert_array_equal(images.flat, frames[0] + 1)  # not normalised here


@pytest.mark.parametrize("key", ["Dark", "Flat"])
def test_errors_name_the_key_and_the_file(tmp_path: Path, key: str) -> None:
    write_pilatus_tiff(tmp_path / "wrong.tif", np.zeros((5, 5), np.int32))
    cal = load_calibration(calibration(tmp_path, **{key: "wrong.tif"}))
    with pytest.raises(CalibrationError, match=rf"\$\.{key}: .*wrong.tif.*Imagesize") as exc:
        load_correction_images(cal)
    assert exc.value.path == f"$.{key}"
