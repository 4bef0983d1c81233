"""The EIGER demo set at its real size (EIGER2 X 4M, 2 x 2 bitshuffle-LZ4 frames; a few
seconds): frames read back bit-exact, the master's mask and geometry match the demo's
calibration and mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.fit2d import convert_nexus
from saxs_pipeline.config.masks import read_mask
from saxs_pipeline.demo.eiger import (
    EIGER2_X_4M_SHAPE,
    demo_frames,
    eiger_frame,
    eiger_module_gaps,
    generate_eiger_demo,
)
from saxs_pipeline.frames.registry import open_frames


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return generate_eiger_demo(tmp_path_factory.mktemp("eiger"), n_frames_per_file=2, n_files=2)


def test_frames_read_back_exactly(demo) -> None:
    assert [p.name for p in demo.series.data_files] == ["series_data_000001.h5", "series_data_000002.h5"]
    with open_frames(demo.series.master, shape=EIGER2_X_4M_SHAPE) as src:
        assert src.frame_count() == 4 and src.dtype == np.uint32
        stack = src.read(0, 4)
        mask = src.pixel_mask()
        nodata = src.invalid_value
    for i in range(4):
        np.testing.assert_array_equal(stack[i], eiger_frame(demo, i))
    np.testing.assert_array_equal(mask, demo.invalid)
    assert np.all(stack[:, demo.invalid] == nodata)
    assert np.all(stack[:, ~demo.invalid] < nodata)
    assert eiger_module_gaps(EIGER2_X_4M_SHAPE).sum() == 2162 * 2068 - 8 * 512 * 1028


def test_master_gives_the_demo_calibration(demo, tmp_path: Path) -> None:
    config, mask = convert_nexus(demo.series.master, tmp_path / "from_master.json")
    ours = load_calibration(config).geometry
    ref = load_calibration(demo.calibration).geometry
    assert ours.image_shape == ref.image_shape == EIGER2_X_4M_SHAPE
    assert ours.beam_center_y == pytest.approx(ref.beam_center_y, abs=1e-9)
    assert ours.beam_center_x == pytest.approx(ref.beam_center_x, abs=1e-9)
    assert ours.distance_mm == pytest.approx(ref.distance_mm)
    assert ours.pixel_size_um == pytest.approx(ref.pixel_size_um)
    assert ours.wavelength_a == pytest.approx(ref.wavelength_a)
    demo_valid = read_mask(demo.mask, EIGER2_X_4M_SHAPE)
    assert np.all(~demo_valid[mask])  # every detector-masked pixel is masked in the demo mask


def test_demo_frames_in_memory_match_the_files(demo) -> None:
    first = next(demo_frames(demo.n_frames, seed=demo.seed))
    np.testing.assert_array_equal(first, eiger_frame(demo, 0))
