"""Frame averaging with CorMap / chi2 outlier rejection, and buffer subtraction.

The CorMap p-value is checked exactly against brute-force enumeration of all sign
sequences (n <= 13, tolerance 1e-12) and against a Monte-Carlo estimate for n = 200
(binomial 4-sigma band). The rejection tests use Poisson frames with ~1 % noise per bin,
so a 5 % drop is many sigma; fixed seeds make them deterministic.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from saxs_pipeline.ops.average import (
    average_frames,
    longest_run,
    longest_run_pvalue,
    mean_curve,
    pairwise_tests,
    subtract,
)

Q = np.linspace(0.1, 5.0, 300)


def frames(n: int = 20, seed: int = 0, level: float = 2e4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    model = level * np.exp(-(Q**2) / 4) + level / 10
    counts = rng.poisson(model, (n, Q.size)).astype(np.float64)
    return counts, np.sqrt(counts)


@pytest.mark.parametrize("n", [1, 2, 5, 9, 13])
def test_pvalue_is_exact(n: int) -> None:
    runs = np.array([longest_run(np.array(s))[0]
                     for s in itertools.product((-1.0, 1.0), repeat=n)])
    for c in range(0, n + 2):
        assert longest_run_pvalue(n, c) == pytest.approx(np.mean(runs >= c), abs=1e-12)


def test_pvalue_matches_simulation_and_stays_precise_in_the_tail() -> None:
    rng = np.random.default_rng(5)
    signs = rng.choice([-1.0, 1.0], size=(20000, 200))
    runs = np.array([longest_run(s)[0] for s in signs])
    for c in (7, 9, 12):
        p = longest_run_pvalue(200, c)
        sim = float(np.mean(runs >= c))
        assert abs(sim - p) < 4 * np.sqrt(p * (1 - p) / runs.size)
    # tiny p-values are computed from positive terms only, no cancellation to 0
    assert 0 < longest_run_pvalue(1000, 200) < 1e-50


def test_longest_run_ignores_nan_and_zeros() -> None:
    assert longest_run(np.array([1, 2, np.nan, 3, 0, -1, -2])) == (3, 5)
    assert longest_run(np.zeros(5)) == (0, 0)


@pytest.mark.parametrize("test", ["cormap", "chi2"])
def test_a_frame_with_a_five_percent_drop_is_rejected(test: str) -> None:
    counts, err = frames()
    counts[7] *= 0.95
    result = average_frames(counts, err, test=test)
    assert [r.frame for r in result.rejected] == [7]
    assert result.kept == tuple(i for i in range(20) if i != 7)
    assert result.rejected[0].p_adjusted < 1e-6
    assert "differs from 19 of 19" in result.rejected[0].reason
    mean, e, count = mean_curve(counts, err, result.kept)
    np.testing.assert_array_equal(result.intensity, mean)
    assert np.all(count == 19)


def test_a_bad_first_frame_does_not_reject_the_others() -> None:
    counts, err = frames()
    counts[0] *= 1.05
    result = average_frames(counts, err)
    assert [r.frame for r in result.rejected] == [0]


def test_similar_frames_are_all_kept_and_error_propagates() -> None:
    counts, err = frames(seed=3)
    result = average_frames(counts, err, correction="holm")
    assert result.rejected == ()
    np.testing.assert_allclose(result.intensity, counts.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(result.error, np.sqrt((err**2).sum(axis=0)) / 20, rtol=1e-12)
    assert len(result.pairs) == 190


def test_nan_bins_are_averaged_over_the_frames_that_have_them() -> None:
    counts, err = frames(n=4, seed=4)
    counts[1, :10] = np.nan
    counts[:, -3:] = np.nan
    result = average_frames(counts, err)
    assert result.kept == (0, 1, 2, 3)
    np.testing.assert_array_equal(result.count[:10], 3)
    np.testing.assert_allclose(result.intensity[:10], counts[[0, 2, 3], :10].mean(axis=0))
    np.testing.assert_allclose(result.error[:10], np.sqrt((err[[0, 2, 3], :10] ** 2).sum(axis=0)) / 3)
    assert np.all(np.isnan(result.intensity[-3:])) and np.all(result.count[-3:] == 0)


def test_identical_frames_are_similar() -> None:
    counts, err = frames(n=3)
    same = np.repeat(counts[:1], 3, axis=0)
    pairs = pairwise_tests(same, err)
    assert all(p.p == 1.0 and p.n_points == 0 for p in pairs)


def test_buffer_subtraction_of_identical_frames_is_zero_within_error() -> None:
    counts, err = frames(n=10, seed=8)
    sample = average_frames(counts[:5], err[:5])
    buffer = average_frames(counts[5:], err[5:])
    diff, diff_err = subtract(sample.intensity, sample.error, buffer.intensity, buffer.error)
    np.testing.assert_allclose(diff_err, np.hypot(sample.error, buffer.error))
    z = diff / diff_err
    # the same distribution minus itself: standard normal residuals
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and 0.8 < z.std() < 1.2
    assert np.all(np.abs(z) < 5)
    zero, zero_err = subtract(counts[0], err[0], counts[0], err[0])
    np.testing.assert_array_equal(zero, 0.0)
    np.testing.assert_allclose(zero_err, np.sqrt(2) * err[0])


def test_bad_input() -> None:
    counts, err = frames(n=3)
    with pytest.raises(ValueError, match=r"\(n_frames, n_q\)"):
        average_frames(counts[0], err[0])
    with pytest.raises(ValueError, match="errors have shape"):
        average_frames(counts, err[:, :5])
    with pytest.raises(ValueError, match="test must be"):
        average_frames(counts, err, test="ks")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="correction must be"):
        average_frames(counts, err, correction="fdr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        average_frames(counts, err, alpha=0)
    with pytest.raises(ValueError, match="differ in shape"):
        subtract(counts[0], err[0], counts[0, :5], err[0, :5])
    with pytest.raises(ValueError, match="no frames"):
        mean_curve(counts, err, [])
