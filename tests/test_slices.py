"""GISAXS slices: band position (FIT2D-style 1-based CutPosition), q axis with pixel
centres, per-axis pixel sizes, MaskRef -1."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from saxs_pipeline.config.calibration import SliceConfig
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


def test_summed_normalisation_in_a_cut() -> None:
    from saxs_pipeline.ops.corrections import PixelCorrections

    cfg = SliceConfig(direction="y", plane="InPlane", cut_position=20, cut_margin=2)
    op = build_slice(GEO, cfg, None)
    rng = np.random.default_rng(8)
    c = rng.uniform(0.5, 1.0, GEO.image_shape)
    d = rng.uniform(1.0, 3.0, GEO.image_shape)
    image = rng.poisson(50, GEO.image_shape).astype(np.float64)
    image[5, 19] = -1  # excluded in its line position
    mean, err = integrate_slice(op, image, PixelCorrections(c.ravel(), d.ravel(), d.ravel() / 4))
    band = np.s_[:, 17:22]
    used = image[band] >= 0
    x, cc, dd = (np.where(used, a[band], 0) for a in (image, c, d))
    np.testing.assert_allclose(mean, (x - dd).sum(axis=1) / cc.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(err, np.sqrt((x + dd / 4).sum(axis=1)) / cc.sum(axis=1), rtol=1e-12)
