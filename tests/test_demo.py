"""The generated demo beamtime: files, calibration, mask, frames, calibrant rings, series."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.masks import read_mask
from saxs_pipeline.demo.beamtime import (
    N_BAD_PIXELS,
    PILATUS_1M_SHAPE,
    DemoSet,
    agbeh_q,
    frame_date,
    frame_image,
    generate_demo,
    iter_frame_parts,
    iter_frames,
    main,
    write_frame,
    write_frame_in_parts,
)
from saxs_pipeline.frames.source import ImageIncompleteError
from saxs_pipeline.frames.tiff import read_frame, read_image
from saxs_pipeline.ops.geometry import subpixel_offsets, two_theta_q

N = 5


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSet:
    return generate_demo(tmp_path_factory.mktemp("beamtime"), n_frames=N, seed=3)


@pytest.fixture(scope="module")
def q_map(demo: DemoSet) -> np.ndarray:
    geo = load_calibration(demo.calibration).geometry
    dx, dy = subpixel_offsets(geo, 1)
    q, _ = two_theta_q(dx[None, :], dy[:, None], geo)
    return q


def test_files(demo: DemoSet) -> None:
    assert demo.root.name == "demo"
    assert demo.calibration == demo.root / "calibration.json"
    assert demo.mask == demo.root / "mask.msk"
    assert demo.calibrant == demo.root / "agbeh.tif"
    assert demo.data_dir == demo.root / "data"
    assert demo.frames == [demo.data_dir / f"sample_{i:05d}.tif" for i in range(N)]
    for path in [demo.calibration, demo.mask, demo.calibrant, *demo.frames]:
        assert path.is_file(), path
    assert sorted(p.name for p in demo.data_dir.iterdir()) == [p.name for p in demo.frames]


def test_calibration_validates(demo: DemoSet) -> None:
    cal = load_calibration(demo.calibration)
    geo = cal.geometry
    assert geo.image_shape == PILATUS_1M_SHAPE
    assert geo.pixel_size_um == (172.0, 172.0)
    assert geo.distance_mm == pytest.approx(1000.0)
    assert geo.wavelength_a == pytest.approx(1.54)
    assert geo.beam_center_y == pytest.approx(800.0)
    assert 0 < geo.tilt_angle_deg < 2
    assert cal.mask_path(cal.masks[0]) == demo.mask
    assert cal.masks[0].oversampling == 2 and cal.masks[0].pixels_per_radial_element == 1
    assert (cal.masks[0].q_start, cal.masks[0].q_stop) == (0.1, 3.0)
    assert cal.polarization is not None and cal.polarization.fraction == 0.99
    assert cal.directory == ("data",)
    assert cal.title


def test_mask_covers_gaps_beamstop_and_bad_pixels(demo: DemoSet) -> None:
    valid = read_mask(demo.mask, shape=PILATUS_1M_SHAPE)
    assert valid.dtype == bool
    for start in (195, 407, 619, 831):  # the four 17-row gaps
        assert not valid[start : start + 17].any()
        assert valid[start - 1].sum() > 900 and valid[start + 17].sum() > 900
    assert not valid[:, 487:494].any()  # the 7-column gap
    geo = load_calibration(demo.calibration).geometry
    row = int(PILATUS_1M_SHAPE[0] - geo.beam_center_y)
    col = int(geo.beam_center_x)
    assert not valid[row - 10 : row + 10, col - 10 : col + 10].any()  # beam stop
    assert not valid[:row, col].any()  # its arm, up to the top edge
    assert valid[row + 20 : row + 100, col].all()  # no arm below the beam
    assert 0.85 < valid.mean() < 0.95
    for path in [demo.calibrant, *demo.frames]:
        image = read_image(path)
        assert not valid[image < 0].any(), f"{path.name}: a negative pixel is not masked"


def test_frames_read_back(demo: DemoSet) -> None:
    images = []
    for i, path in enumerate(demo.frames):
        image, header = read_frame(path, shape=PILATUS_1M_SHAPE)
        assert image.dtype == np.int32
        assert header["Exposure_time"] == 1.0 and header["Exposure_time_unit"] == "s"
        assert header["Exposure_period"] == 1.0
        assert header["Pixel_size"] == (172e-6, 172e-6)
        assert header["time"] == pytest.approx(frame_date(demo, i).timestamp())
        assert set(np.unique(image[image < 0])) == {-2, -1}
        assert (image == -2).sum() == N_BAD_PIXELS
        assert (image[200] == -1).all()  # a gap row
        images.append(image)
    first = read_frame(demo.frames[0])[1]["time"]
    last = read_frame(demo.frames[-1])[1]["time"]
    assert last - first == pytest.approx((N - 1) * 1.0)
    # the same frame again from the seed, without the files
    np.testing.assert_array_equal(frame_image(demo, 2), images[2])
    i, image, header, date = next(iter_frames(demo, 3))
    assert i == 3 and header["Exposure_time"] == 1.0
    assert date - frame_date(demo, 0) == timedelta(seconds=3)
    np.testing.assert_array_equal(image, images[3])


def test_agbeh_rings_at_expected_q(demo: DemoSet, q_map: np.ndarray) -> None:
    image, header = read_frame(demo.calibrant, shape=PILATUS_1M_SHAPE)
    assert header["Exposure_time"] == 10.0
    valid = read_mask(demo.mask) & (image >= 0)
    geo = load_calibration(demo.calibration).geometry
    beam_row = int(PILATUS_1M_SHAPE[0] - geo.beam_center_y)
    # the q step of one pixel (PixelPerRadialElement 1) at the far end of the beam row
    bin_width = float(np.abs(np.diff(q_map[beam_row])).max())
    rings = agbeh_q()
    assert rings[0] == pytest.approx(2 * np.pi / 5.838)
    # the brightest pixels of the frame lie on the first ring
    top = np.argsort(np.where(valid, image, -1), axis=None)[-100:]
    assert np.abs(q_map.flat[top] - rings[0]).max() < bin_width
    # and the brightest pixel near every ring on the detector is at that ring's q
    for qn in rings[:4]:
        window = valid & (np.abs(q_map - qn) < 0.1)
        assert window.sum() > 1000
        brightest = np.argmax(np.where(window, image, -1))
        assert abs(q_map.flat[brightest] - qn) < bin_width, qn


def test_series_grows(demo: DemoSet, q_map: np.ndarray) -> None:
    valid = read_mask(demo.mask)
    totals = [int(read_image(p)[valid].sum()) for p in demo.frames]
    assert all(b > a for a, b in zip(totals, totals[1:], strict=False)), totals
    last = read_image(demo.frames[-1])
    near_beam = valid & (q_map < 0.15)
    assert 1000 < last[near_beam].max() < 10000  # a few thousand counts at the beam stop
    assert 1 <= np.median(last[valid & (q_map > 2.5)]) <= 10  # and a few at high q


def test_write_frame_atomically(demo: DemoSet, tmp_path: Path) -> None:
    path = write_frame(demo, 4, tmp_path)
    assert path == tmp_path / "sample_00004.tif"
    assert [p.name for p in tmp_path.iterdir()] == ["sample_00004.tif"]  # no temporary left
    np.testing.assert_array_equal(read_image(path), read_image(demo.frames[4]))
    # frames past the series keep the final state
    later = write_frame(demo, N + 2, tmp_path)
    assert read_frame(later)[1]["time"] == pytest.approx(frame_date(demo, N + 2).timestamp())


def test_write_frame_in_parts(demo: DemoSet, tmp_path: Path) -> None:
    steps = iter_frame_parts(demo, 1, tmp_path, parts=4)
    sizes = []
    for n, (path, size) in enumerate(steps):
        assert path.stat().st_size == size
        sizes.append(size)
        if n < 3:
            with pytest.raises(ImageIncompleteError):
                read_image(path)
    assert sizes == sorted(sizes) and len(sizes) == 4
    np.testing.assert_array_equal(read_image(path), read_image(demo.frames[1]))
    other = tmp_path / "other"
    other.mkdir()
    slow = write_frame_in_parts(demo, 0, other, parts=3, delay=0.01)
    np.testing.assert_array_equal(read_image(slow), read_image(demo.frames[0]))
    assert [p.name for p in other.iterdir()] == ["sample_00000.tif"]


def test_other_shape(tmp_path: Path) -> None:
    small = generate_demo(tmp_path, n_frames=2, shape=(300, 520), seed=1)
    cal = load_calibration(small.calibration)
    assert cal.geometry.image_shape == (300, 520)
    valid = read_mask(small.mask, shape=(300, 520))
    assert not valid[195:212].any() and not valid[:, 487:494].any()
    image = read_image(small.frames[1], shape=(300, 520))
    assert not valid[image < 0].any()


def test_main(tmp_path: Path) -> None:
    assert main([str(tmp_path / "a"), "-n", "1"]) == 0
    assert (tmp_path / "a" / "demo" / "data" / "sample_00000.tif").is_file()
    result = subprocess.run(
        [sys.executable, "-m", "saxs_pipeline.demo.beamtime", str(tmp_path / "b"), "-n", "2"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert str(tmp_path / "b" / "demo") in result.stdout
    assert len(list((tmp_path / "b" / "demo" / "data").glob("*.tif"))) == 2
