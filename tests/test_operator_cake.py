"""2-D cakes I(q, chi) (AzimuthBins): the closed forms (constant image, chi-average = the
1-D curve), wedges on a cake, and agreement with pyFAI's integrate2d on the real frame."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_binning import _pyfai, real  # noqa: F401 (a fixture)

from saxs_pipeline.ops.integrate import integrate
from saxs_pipeline.ops.operator import build_operator, cached_operator, operator_key

from enginecases import POL, SMALL, mask_config, small_valid

# The same weights summed in another order (1e-13 rounding); the bound.
EXACT = 1e-9


def _frame(seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).uniform(10, 1000, SMALL.image_shape)


def test_cake_layout_and_constant_image() -> None:
    op = build_operator(SMALL, mask_config(radial_bins=20, azimuth_bins=12), small_valid(), None)
    assert (op.kind, op.n_chi, op.nrad, op.nbins) == ("Cake", 12, 20, 240)
    np.testing.assert_allclose(op.chi_edges, np.linspace(-180, 180, 13))
    mean = integrate(op, np.full(SMALL.image_shape, 3.0))
    filled = op.areas > 0
    assert filled.sum() > 50
    np.testing.assert_allclose(mean[filled], 3.0, rtol=1e-12)


@pytest.mark.parametrize("splitting", ["point", "linear"])
def test_chi_average_is_the_curve(splitting) -> None:
    valid, image = small_valid(), _frame()
    mc = mask_config(radial_bins=25, pixel_splitting=splitting)
    curve = build_operator(SMALL, mc, valid, POL)
    cake = build_operator(SMALL, dataclasses.replace(mc, azimuth_bins=16), valid, POL)
    areas = cake.areas.reshape(16, 25)
    means = np.nan_to_num(integrate(cake, image).reshape(16, 25))
    np.testing.assert_allclose(areas.sum(axis=0), curve.areas, rtol=EXACT, atol=EXACT)
    ok = curve.areas > 0
    average = (means * areas).sum(axis=0)[ok] / areas.sum(axis=0)[ok]
    np.testing.assert_allclose(average, integrate(curve, image)[ok], rtol=EXACT)


def test_cache_keeps_the_cake(tmp_path) -> None:
    mc = mask_config(radial_bins=10, azimuth_bins=6)
    valid = small_valid()
    built = cached_operator(SMALL, mc, valid, None, cache_dir=tmp_path)
    loaded = cached_operator(SMALL, mc, valid, None, cache_dir=tmp_path)  # from the file
    assert len(list(tmp_path.glob("*.npz"))) == 1
    np.testing.assert_array_equal(loaded.chi_edges, built.chi_edges)
    assert (loaded.kind, loaded.n_chi) == ("Cake", 6)
    # Cakes, wedges and curves of the same grid are different operators.
    keys = {operator_key(SMALL, m, None, valid) for m in
            (mc, mask_config(radial_bins=10), mask_config(radial_bins=10, azimuth=((0.0, 90.0),)))}
    assert len(keys) == 3


def test_wedges_leave_the_cells_outside_empty() -> None:
    op = build_operator(SMALL, mask_config(radial_bins=10, azimuth_bins=36, azimuth=((0.0, 90.0),)),
                        np.ones(SMALL.image_shape, dtype=bool), None)
    areas = op.areas.reshape(36, 10).sum(axis=1)
    chi = 0.5 * (op.chi_edges[:-1] + op.chi_edges[1:])
    assert (areas[(chi < 0) | (chi > 90)] == 0).all()
    assert (areas[(chi > 0) & (chi < 90)] > 0).any()


def test_cake_matches_pyfai_integrate2d(real) -> None:  # noqa: F811
    # 360 x 500 cells, as the benchmark: 3.7 unmasked pixels a cell on average, so "well
    # filled" is > 4 pixels in both (42,694 cells; measured median 5.8e-4, 8.6e-4 with > 2,
    # 4.1e-4 with > 16). The 1e-3: cells are small, so the edges, where pyFAI
    # splits pixels by area and we by 3 x 3 sub-pixels, weigh more than in curves.
    cal, valid, image = real
    ai = _pyfai(cal)
    nq, nchi, q_range = 500, 360, (0.0, 6.7)
    mc = dataclasses.replace(cal.masks[0], oversampling=3, radial_bins=nq, radial_range=q_range,
                             azimuth_bins=nchi)
    op = build_operator(cal.geometry, mc, valid, None)
    ours = integrate(op, image).reshape(nchi, nq)
    res = ai.integrate2d(np.flipud(image), nq, nchi, unit="q_nm^-1", radial_range=q_range,
                         azimuth_range=(-180, 180), mask=np.flipud(~valid),
                         method=("full", "csr", "cython"), correctSolidAngle=False,
                         polarization_factor=None)
    np.testing.assert_allclose(res.radial, op.radial[:nq], rtol=1e-6)
    np.testing.assert_allclose(res.azimuthal, 0.5 * (op.chi_edges[:-1] + op.chi_edges[1:]), atol=1e-4)
    use = (res.count > 4) & (op.areas.reshape(nchi, nq) > 4)
    assert use.sum() > 30000
    rel = np.abs(ours[use] / res.intensity[use] - 1)
    print(f"cake vs pyFAI integrate2d: median {np.median(rel):.2e} over {use.sum()} cells")
    assert np.median(rel) <= 1e-3
