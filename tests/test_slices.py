"""GISAXS slices: band position (FIT2D-style 1-based CutPosition), q axis with pixel
centres, per-axis pixel sizes, MaskRef -1."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from saxs_pipeline.io.calibration import SliceConfig
from saxs_pipeline.ops.geometry import ANGSTROM_NM
from saxs_pipeline.ops.slices import build_slice, integrate_slice

from enginecases import SMALL

GEO = dataclasses.replace(SMALL, pixel_size_um=(100.0, 172.0))


def test_horizontal_cut_rows_counted_from_the_bottom() -> None:
    cfg = SliceConfig(direction="x", plane="InPlane", cut_position=10, cut_margin=1)
    op = build_slice(GEO, cfg, None)
    image = np.zeros(GEO.image_shape)
    image[64 - 10 - 1 : 64 - 10 + 2, :] = 5.0  # rows Ny-CP-CM .. Ny-CP+CM
    mean, err = integrate_slice(op, image)
    np.testing.assert_allclose(mean, 5.0)
    np.testing.assert_allclose(err, np.sqrt(15.0) / 3)
    # in-plane q from the column offset of pixel centres, x pixel size
    offset = (np.arange(48) + 0.5 - GEO.beam_center_x) * 0.172
    k = 2 * np.pi / (GEO.wavelength_a * ANGSTROM_NM)
    np.testing.assert_allclose(op.axis, 2 * k * np.sin(np.arctan(offset / GEO.distance_mm) / 2))


def test_vertical_cut_columns_one_based_and_y_pixel_size() -> None:
    cfg = SliceConfig(direction="y", plane="Vertical", cut_position=5, cut_margin=0, incident_angle_deg=0.2)
    valid = np.ones(GEO.image_shape, bool)
    valid[30, 4] = False
    op = build_slice(GEO, cfg, valid)
    image = np.arange(64 * 48, dtype=float).reshape(64, 48)
    mean, _ = integrate_slice(op, image)
    np.testing.assert_allclose(mean[:30], image[:30, 4])
    assert np.isnan(mean[30])  # its only pixel is masked
    offset = (np.arange(64) + 0.5 - (64 - GEO.beam_center_y)) * 0.100
    k = 2 * np.pi / (GEO.wavelength_a * ANGSTROM_NM)
    expected = -k * (np.sin(np.arctan(offset / GEO.distance_mm)) + np.sin(np.deg2rad(0.2)))
    np.testing.assert_allclose(op.axis, expected)


def test_negative_pixels_do_not_count_and_band_outside_is_an_error() -> None:
    cfg = SliceConfig(direction="x", plane="InPlane", cut_position=10, cut_margin=0)
    op = build_slice(GEO, cfg, None)
    image = np.ones(GEO.image_shape)
    image[54, 3] = -2
    mean, _ = integrate_slice(op, image)
    assert np.isnan(mean[3]) and mean[4] == 1.0
    with pytest.raises(ValueError, match="outside the image"):
        build_slice(GEO, SliceConfig(direction="x", plane="InPlane", cut_position=64, cut_margin=2), None)
