"""The compiled build kernel against the independent numpy/COO path of the cakes.

``pixel_columns`` (curves) and ``fractions`` + ``accumulate_cake`` with one azimuth bin
must give the same operator: the same (pixel, bin) pairs, and weights (at most ~1.1)
equal to 1e-14 absolute. Both sum float64 fractions of the same boxes; the reference takes
differences of cumulative fractions, the kernel the first/whole/last parts directly, so
they differ by rounding only (measured <= 2e-15, which is 4e-12 relative on the smallest
weights).
"""

from __future__ import annotations

import numpy as np
import pytest

from saxs_pipeline.ops import binning
from saxs_pipeline.ops import geometry as geo
from saxs_pipeline.ops.accumulate import accumulate_cake, fractions, subpixel_width, to_operator
from saxs_pipeline.ops.buildkernels import pixel_columns

from enginecases import SMALL, mask_config, small_valid


def _inputs(kw: dict, ov: int):
    mc = mask_config(oversampling=ov, **kw)
    q = geo.q_map(SMALL, ov)
    bm = binning.bin_map(SMALL, mc, extent=(float(q.min()), float(q.max())))
    width = subpixel_width(SMALL, ov, bm.u) if bm.linear else None
    return bm.u(q), width, bm.nrad


@pytest.mark.parametrize("ov", [1, 2, 3])
@pytest.mark.parametrize("kw", [{}, {"pixel_splitting": "linear"}, {"radial_bins": 40}],
                         ids=["point", "linear", "explicit-linear"])
@pytest.mark.parametrize("with_drop", [False, True])
def test_kernel_equals_the_coo_path(kw: dict, ov: int, with_drop: bool) -> None:
    u, width, nbins = _inputs(kw, ov)
    rows, cols = SMALL.image_shape
    valid = small_valid().ravel()
    drop = (np.random.default_rng(1).random(u.shape) < 0.2) if with_drop else None
    corr = np.linspace(0.9, 1.1, rows * cols)
    fast, a_fast, s_fast = to_operator(*pixel_columns(u, width, drop, valid, ov, nbins), ov,
                                       nbins, corr)
    base, fracs = fractions(u, width, rows, cols, ov)
    ref, a_ref, s_ref = accumulate_cake(base, fracs, drop, np.zeros(u.size, dtype=np.int64),
                                        rows, cols, ov, nbins, 1, valid, corr)
    assert fast.nnz == ref.nnz > 0
    np.testing.assert_array_equal(fast.indptr, ref.indptr)
    np.testing.assert_array_equal(fast.indices, ref.indices)
    np.testing.assert_allclose(fast.data, ref.data, rtol=0, atol=1e-14)
    np.testing.assert_allclose(a_fast, a_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(s_fast, s_ref, rtol=1e-12, atol=1e-15)


def test_non_finite_coordinates_reach_no_bin() -> None:
    u, width, nbins = _inputs({}, 2)
    u = u.copy()
    u[:2, :2] = np.nan  # all four sub-pixels of pixel 0
    indptr, indices, data = pixel_columns(u, width, None, small_valid().ravel(), 2, nbins)
    assert indptr[1] == 0 and np.all((indices >= 0) & (indices < nbins))


def test_a_box_whose_top_edge_rounds_up_stays_in_its_slots() -> None:
    # (x - w/2) + w rounds up to 1321 here while floor(x + w/2) is 1320: the box's
    # bins must still fit the pixel's slots, and the pixel keeps its whole weight.
    rng = np.random.default_rng(3)
    x = np.concatenate([[1257.2627137670918], rng.uniform(40, 1500, 2000)])  # boxes inside the grid
    w = np.concatenate([[63.47457246581618], rng.uniform(0, 70, 2000)])
    u, width = x.reshape(1, -1), w.reshape(1, -1)
    indptr, indices, data = pixel_columns(u, width, None, np.ones(x.size, bool), 1, 4000)
    sums = np.add.reduceat(data, indptr[:-1])
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)  # conservation; rounding only
    col = np.repeat(np.arange(x.size), np.diff(indptr))
    assert np.all(indices >= np.floor(x - w / 2)[col]) and np.all(indices <= np.floor(x + w / 2)[col] + 1)
