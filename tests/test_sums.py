"""Per-bin sums: re-binning and frame averaging from the sums alone.

Tolerances: 1e-9 relative for everything the module doc calls exact (float64 weights and
images, so the differences are rounding only, ~1e-15); the propagated error after
re-binning with ov 3 is only a lower bound (cross terms), checked as such.
"""

from __future__ import annotations

import numpy as np
import pytest

from saxs_pipeline.ops.integrate import integrate_poisson
from saxs_pipeline.ops.operator import build_operator
from saxs_pipeline.ops.sums import (
    BinSums,
    average_sums,
    coarse_edges,
    curve_from_sums,
    frame_sums,
    rebin,
)

from enginecases import POL, SMALL, mask_config, small_valid

FINE = np.linspace(0.2, 6.0, 61)  # 60 bins in 1/nm, inside the SMALL detector's q range


def image(seed: int) -> np.ndarray:
    img = np.random.default_rng(seed).poisson(200.0, SMALL.image_shape).astype(np.float64)
    img[5, :4] = -1  # Pilatus gap pixels: excluded per frame
    img[7, 9] = np.nan
    return img


def operators(ov: int):
    valid = small_valid()
    fine = build_operator(SMALL, mask_config(oversampling=ov, radial_edges=tuple(FINE),
                                             pixel_splitting="point"), valid, POL)
    coarse = build_operator(SMALL, mask_config(oversampling=ov,
                                               radial_edges=tuple(coarse_edges(FINE, 2)),
                                               pixel_splitting="point"), valid, POL)
    return fine, coarse


def close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-9) -> None:
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    np.testing.assert_allclose(a[ok], b[ok], rtol=rtol, atol=0)


def test_curve_from_sums_is_the_pipeline_curve() -> None:
    fine, _ = operators(3)
    img = image(1)
    curve = curve_from_sums(frame_sums(fine, img))
    mean, poisson = integrate_poisson(fine, img)
    close(curve.mean, mean)
    close(curve.poisson, poisson)


@pytest.mark.parametrize("ov", [1, 3])
def test_rebin_by_two_equals_direct_integration(ov: int) -> None:
    fine, coarse = operators(ov)
    img = image(2)
    merged = rebin(frame_sums(fine, img), 2)
    direct = frame_sums(coarse, img)
    close(merged.signal, direct.signal)
    close(merged.norm, direct.norm, rtol=1e-9)
    got, want = curve_from_sums(merged), curve_from_sums(direct)
    close(got.mean, want.mean)
    close(got.poisson, want.poisson)
    mean, _ = integrate_poisson(coarse, img)
    close(got.mean, mean)
    if ov == 1:  # one sub-pixel per pixel: no pixel reaches two bins, all sums exact
        close(merged.variance, direct.variance)
        close(merged.count, direct.count)
    else:  # pixels straddling merged bins: the summed variance misses the cross terms
        ok = np.isfinite(want.sigma)
        assert np.all(got.sigma[ok] <= want.sigma[ok] * (1 + 1e-12))
        assert np.any(got.sigma[ok] < want.sigma[ok] * (1 - 1e-6))


def test_average_of_ten_frames_equals_integrating_the_average_image() -> None:
    fine, _ = operators(3)
    frames = [np.random.default_rng(10 + i).poisson(150.0, SMALL.image_shape).astype(np.float64)
              for i in range(10)]
    combined = average_sums([frame_sums(fine, f) for f in frames])
    avg = curve_from_sums(combined)
    mean_image = np.mean(frames, axis=0)
    close(avg.mean, integrate_poisson(fine, mean_image)[0])
    # the error of the average is the error of the summed counts divided by 10
    total = curve_from_sums(frame_sums(fine, np.sum(frames, axis=0)))
    close(avg.sigma * 10, total.sigma)
    # a 2-D BinSums (one row per frame) gives the same
    rows = [frame_sums(fine, f) for f in frames]
    stacked = BinSums(*(np.stack([getattr(r, name) for r in rows]) for name in
                        ("signal", "variance", "norm", "count")))
    close(curve_from_sums(average_sums(stacked)).mean, avg.mean)


def test_rebin_2d_and_remainder() -> None:
    sums = BinSums(*(np.arange(14.0).reshape(2, 7) for _ in range(4)))
    merged = rebin(sums, 3)
    np.testing.assert_array_equal(merged.signal, [[3.0, 12.0], [24.0, 33.0]])
    np.testing.assert_array_equal(coarse_edges(np.arange(8.0), 3), [0.0, 3.0, 6.0])


def test_bad_input() -> None:
    sums = BinSums(*(np.ones(4) for _ in range(4)))
    with pytest.raises(ValueError, match="positive whole number"):
        rebin(sums, 0)
    with pytest.raises(ValueError, match="only 4"):
        rebin(sums, 5)
    with pytest.raises(ValueError, match="differ in shape"):
        BinSums(np.ones(3), np.ones(4), np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="different numbers of bins"):
        average_sums([sums, BinSums(*(np.ones(5) for _ in range(4)))])
    with pytest.raises(ValueError, match="no frames"):
        average_sums([])
    fine, _ = operators(1)
    with pytest.raises(ValueError, match="operator expects"):
        frame_sums(fine, np.ones((3, 3)))
