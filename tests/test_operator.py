"""The oversampled operator: closed forms, conservation, grids, caching.

Tolerances: 1e-9 for closed forms on float64 images (the weights and sums are float64,
errors are rounding only, ~1e-15); 1e-6 relative where a float32 image path is compared.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.masks import load_mask
from saxs_pipeline.ops import geometry as geo
from saxs_pipeline.ops.integrate import integrate
from saxs_pipeline.ops.operator import (
    IntegrationOperator,
    build_operator,
    cached_operator,
    operator_key,
)

from enginecases import POL, SMALL, mask_config, small_valid
from realdata import require

MODES = [
    pytest.param({}, id="original-grid-point"),
    pytest.param({"pixel_splitting": "linear"}, id="original-grid-linear"),
    pytest.param({"radial_bins": 40}, id="explicit-grid-linear"),
    pytest.param({"radial_bins": 40, "pixel_splitting": "point"}, id="explicit-grid-point"),
]


def pixel_weights(op: IntegrationOperator) -> np.ndarray:
    """Sum over bins of each used pixel's area fractions (polarization divided out)."""
    w = np.zeros(op.shape[0] * op.shape[1])
    lo, hi = op.span
    a = op.matrix64.copy()
    if op.correction is not None:
        a = a.multiply(1.0 / op.correction[None, lo:hi]).tocsc()
    w[lo:hi] = np.asarray(a.sum(axis=0)).ravel()
    return w


@pytest.mark.parametrize("kw", MODES)
def test_mask_image_integrates_to_one(kw: dict) -> None:
    valid = small_valid()
    op = build_operator(SMALL, mask_config(**kw), valid)
    mean = integrate(op, valid.astype(np.float64))
    filled = ~np.isnan(mean)
    assert filled.sum() > 10
    np.testing.assert_allclose(mean[filled], 1.0, atol=1e-9)
    assert np.all(op.areas[~filled] == 0)


@pytest.mark.parametrize("kw", MODES)
def test_image_of_the_polarization_factor_integrates_to_one(kw: dict) -> None:
    valid = small_valid()
    op = build_operator(SMALL, mask_config(**kw), valid, POL)
    image = geo.polarization_factor(SMALL, POL) * valid
    mean = integrate(op, image)
    filled = ~np.isnan(mean)
    np.testing.assert_allclose(mean[filled], 1.0, atol=1e-9)


@pytest.mark.parametrize("splitting", ["point", "linear"])
def test_intensity_is_conserved_on_the_full_grid(splitting: str) -> None:
    valid = small_valid()
    op = build_operator(SMALL, mask_config(pixel_splitting=splitting), valid, POL)
    image = np.random.default_rng(3).gamma(2.0, 50.0, SMALL.image_shape)
    mean = integrate(op, image)
    total = np.nansum(mean * op.areas)
    expected = np.sum((image.ravel() * op.correction)[valid.ravel()])
    assert total == pytest.approx(expected, rel=1e-9)
    # every used pixel is split completely between bins; masked pixels are not stored
    w = pixel_weights(op)
    np.testing.assert_allclose(w[valid.ravel()], 1.0, atol=1e-12)
    assert np.all(w[~valid.ravel()] == 0)


def test_bin_for_every_label_no_silent_shift() -> None:
    # ov 1 with 0.25-pixel bins leaves labels without pixels inside the range: the original
    # dropped those columns and shifted q. Here every bin exists and empty ones are NaN.
    op = build_operator(SMALL, mask_config(oversampling=1, pixels_per_radial_element=0.25), np.ones(SMALL.image_shape, bool))
    q = geo.q_map(SMALL, 1).ravel()
    image = q.reshape(SMALL.image_shape)  # a pixel's value is its own q
    mean = integrate(op, image)
    assert np.isnan(mean).any()
    ok = ~np.isnan(mean)
    # each bin's mean q lies inside that bin
    assert np.all(mean[ok] >= op.edges[:-1][ok] - 1e-12)
    assert np.all(mean[ok] < op.edges[1:][ok] + 1e-12)
    np.testing.assert_allclose(op.radial, (np.arange(op.nbins) + 0.5) * (op.edges[1] - op.edges[0]))


def test_beam_centre_off_the_detector_keeps_q_aligned() -> None:
    import dataclasses

    far = dataclasses.replace(SMALL, beam_center_y=120.0)
    op = build_operator(far, mask_config(oversampling=2), np.ones(far.image_shape, bool))
    image = geo.q_map(far, 1)
    mean = integrate(op, image)
    assert np.isnan(mean[0])  # low q bins have no pixel
    ok = ~np.isnan(mean)
    np.testing.assert_allclose(mean[ok], op.radial[ok], atol=(op.edges[1] - op.edges[0]))


def test_explicit_grid_drops_what_lies_outside() -> None:
    q = geo.q_map(SMALL, 1)
    lo, hi = np.percentile(q, [30, 70])
    edges = tuple(lo + (hi - lo) * np.linspace(0, 1, 11) ** 1.5)  # non-uniform
    op = build_operator(SMALL, mask_config(radial_edges=edges), np.ones(SMALL.image_shape, bool))
    assert op.nbins == 10
    np.testing.assert_allclose(op.edges, edges)
    # a pixel here spans ~0.07 nm^-1: keep that far from the ends of the grid
    inside = (q > lo + 0.12) & (q < hi - 0.12)
    w = pixel_weights(op).reshape(q.shape)
    np.testing.assert_allclose(w[inside], 1.0, atol=1e-12)
    assert np.all(w[(q < lo - 0.12) | (q > hi + 0.12)] == 0)


def test_phi_mode_recovers_an_azimuthal_pattern() -> None:
    mc = mask_config(phi_mode=True, q_start=0.5, q_stop=5.0, oversampling=2)
    op = build_operator(SMALL, mc, np.ones(SMALL.image_shape, bool))
    dx, dy = geo.subpixel_offsets(SMALL, 1)
    phi = np.arctan2(dy[:, None], dx[None, :])
    image = 2.0 + np.cos(phi)
    mean = integrate(op, image)
    ok = ~np.isnan(mean)
    assert op.kind == "Phi" and ok.sum() > 5
    assert np.all(op.radial >= -np.pi) and np.all(op.radial <= np.pi)
    # pixels are ~0.1 rad wide here: the bin mean follows the pattern to that resolution
    np.testing.assert_allclose(mean[ok], 2.0 + np.cos(op.radial[ok]), atol=0.1)


def test_mask_of_the_wrong_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match="mask shape"):
        build_operator(SMALL, mask_config(), np.ones((10, 10), bool))


def test_cache_saves_and_loads_by_content(tmp_path) -> None:
    valid = small_valid()
    mc = mask_config(pixel_splitting="linear")
    a = cached_operator(SMALL, mc, valid, POL, tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and files[0].stem == a.key
    inode = files[0].stat().st_ino  # a save writes a new file and renames it
    b = cached_operator(SMALL, mc, valid, POL, tmp_path)
    assert files[0].stat().st_ino == inode  # loaded, not rebuilt
    image = np.random.default_rng(0).random(SMALL.image_shape)
    np.testing.assert_array_equal(integrate(a, image), integrate(b, image))
    np.testing.assert_array_equal(b.valid, valid.ravel())
    other = valid.copy()
    other[0, 0] = not other[0, 0]
    assert operator_key(SMALL, mc, POL, other) != a.key
    assert operator_key(SMALL, mask_config(pixel_splitting="point"), POL, valid) != a.key


def test_torn_cache_file_is_rebuilt(tmp_path) -> None:
    valid = small_valid()
    op = cached_operator(SMALL, mask_config(), valid, None, tmp_path)
    path = tmp_path / f"{op.key}.npz"
    path.write_bytes(path.read_bytes()[:100])
    again = cached_operator(SMALL, mask_config(), valid, None, tmp_path)
    assert again.nbins == op.nbins and path.stat().st_size > 100


def test_original_grid_on_the_real_set_up() -> None:
    # Original compatibility (research original.md 11): cal_flat.json at ov 2 gives
    # 1003 bins, q[0] = 3.362765e-3 and dq = 6.7255306e-3 nm^-1.
    cal = load_calibration(require("cal_flat.json"))
    mc = cal.masks[0]
    valid = load_mask(cal, mc)
    t = time.perf_counter()
    op = build_operator(cal.geometry, mc, valid)
    print(f"build {time.perf_counter() - t:.3f} s")  # reported, not asserted: see benchmarks
    assert op.nbins == 1003
    assert op.radial[0] == pytest.approx(3.362765e-3, rel=1e-6)
    assert op.edges[1] - op.edges[0] == pytest.approx(6.7255306e-3, rel=1e-6)
    # masked pixels are not stored (the original kept 34 % explicit zeros)
    assert op.matrix.nnz == int((op.matrix64.data != 0).sum())
    assert os.path.basename(str(cal.mask_path(mc))) == "AAA_integ.msk"
