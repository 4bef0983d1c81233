"""Averaging the frames of one sample with outlier rejection, and buffer subtraction.

Frames are compared pairwise, by default with the **CorMap** test of Franke, Jeffries &
Svergun (Nature Methods 12 (2015) 419-422), as ATSAS ``datcmp`` and BioXTAS RAW do: for two
curves on the same q grid, the statistic C is the longest run of consecutive bins in which
one curve stays above the other (same sign of the difference). Two curves that differ only
by noise change sign like fair coin tosses, so C is distributed as the longest run of equal
outcomes in n tosses, which is the longest run of heads in n - 1 tosses plus one (Schilling,
"The longest run of heads", College Math. J. 21 (1990) 196-207). The p-value is exact
(:func:`longest_run_pvalue`). CorMap needs no error estimates, so it is not fooled by
errors that are too small or too large. The alternative ``"chi2"`` test uses the errors:
``sum (I1 - I2)^2 / (s1^2 + s2^2)`` against the chi-square distribution with n degrees of
freedom.

Multiple testing: n frames give n(n-1)/2 pairs. As RAW does, p-values are Bonferroni
adjusted by default (``p * pairs``, at most 1); ``"holm"`` (Holm-Bonferroni, as ATSAS'
FWER option) and ``"none"`` are the other choices. Default threshold alpha = 0.01
(RAW's and ATSAS' default): a pair with adjusted p < alpha is "different".

Rejection: while some pair of kept frames is different, the kept frame that differs from
the most other kept frames (ties: the smaller sum of log adjusted p-values, then the
later frame) is rejected. One frame with a 5 % intensity drop among 20 differs from all
19 others and goes first; then no different pair is left. Unlike RAW (which keeps the
frames similar to the *first* one), a bad first frame does not reject the good ones.

Bins that are NaN (empty) in either frame are left out of that pair's test; exact
zeros of the difference carry no sign and are left out of the run count. Averages ignore
NaN per bin: the mean over the frames where the bin is finite, its error
``sqrt(sum sigma_f^2) / n_k``; a bin finite in no frame is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import stats

__all__ = [
    "AverageResult",
    "PairTest",
    "Rejection",
    "average_frames",
    "longest_run",
    "longest_run_pvalue",
    "mean_curve",
    "pairwise_tests",
    "subtract",
]

Test = Literal["cormap", "chi2"]
Correction = Literal["bonferroni", "holm", "none"]


@dataclass(frozen=True)
class PairTest:
    """One pairwise comparison: frames ``i < j``, the statistic (CorMap: longest run C;
    chi2: the chi-square sum), the bins compared and the raw and adjusted p-values."""

    i: int
    j: int
    statistic: float
    n_points: int
    p: float
    p_adjusted: float


@dataclass(frozen=True)
class Rejection:
    """A rejected frame, why, and the smallest adjusted p-value against a frame still kept
    when it was rejected."""

    frame: int
    reason: str
    p_adjusted: float


@dataclass(frozen=True)
class AverageResult:
    """The average of the kept frames. ``count[k]`` is the number of kept frames in which
    bin k is finite. ``kept`` and ``rejected`` hold indices into the frames given."""

    intensity: np.ndarray
    error: np.ndarray
    count: np.ndarray
    kept: tuple[int, ...]
    rejected: tuple[Rejection, ...]
    pairs: tuple[PairTest, ...]
    test: str
    correction: str
    alpha: float


def longest_run(diff: np.ndarray) -> tuple[int, int]:
    """Longest run of equal signs in ``diff`` and the number of signed points, ignoring
    NaN and exact zeros."""
    d = np.asarray(diff, dtype=np.float64)
    s = np.sign(d[np.isfinite(d) & (d != 0)])
    n = int(s.size)
    if n == 0:
        return 0, 0
    # Run boundaries are where the sign changes; the longest gap between them is C.
    breaks = np.flatnonzero(s[1:] != s[:-1]) + 1
    edges = np.concatenate(([0], breaks, [n]))
    return int(np.diff(edges).max()), n


@lru_cache(maxsize=4096)
def _heads_run_probability(tosses: int, run: int) -> float:
    """P(some run of at least ``run`` heads in ``tosses`` fair tosses).

    Schilling's recursion for sequences without such a run, written for the complement
    g(m) so that tiny p-values keep their precision (only positive terms are added):
    g(m) = 2^-run + sum_{j=0}^{run-1} 2^-(j+1) g(m-1-j), g(m) = 0 for m < run. The
    weighted sum is updated in O(1) per step.
    """
    if run <= 0:
        return 1.0
    if tosses < run:
        return 0.0
    tail = 0.5**run
    g = [0.0] * (tosses + 1)
    window = 0.0  # sum_{j=0}^{run-1} 2^-(j+1) g(m-1-j) for the m being computed
    for m in range(run, tosses + 1):
        # slide the window from m-1 to m: new term g(m-1)/2, old terms halve, the oldest
        # g(m-1-run) drops out with its weight 2^-(run+1) (after halving).
        window = 0.5 * window + 0.5 * g[m - 1] - (tail * 0.5 * g[m - 1 - run] if m - 1 - run >= 0 else 0.0)
        g[m] = tail + window
    return min(1.0, g[tosses])


def longest_run_pvalue(n: int, c: int) -> float:
    """P(longest run of equal signs >= c) for n independent fair signs: the CorMap p-value."""
    if n <= 0 or c <= 1:
        return 1.0
    if c > n:
        return 0.0
    return _heads_run_probability(n - 1, c - 1)


def _pair(i1, e1, i2, e2, test: Test) -> tuple[float, int, float]:
    diff = i1 - i2
    if test == "cormap":
        c, n = longest_run(diff)
        return float(c), n, longest_run_pvalue(n, c)
    var = e1 * e1 + e2 * e2
    ok = np.isfinite(diff) & np.isfinite(var) & (var > 0)
    n = int(ok.sum())
    if n == 0:
        return 0.0, 0, 1.0
    chi2 = float(np.sum(diff[ok] ** 2 / var[ok]))
    return chi2, n, float(stats.chi2.sf(chi2, n))


def _adjust(p: np.ndarray, correction: Correction) -> np.ndarray:
    m = p.size
    if correction == "none" or m == 0:
        return p.copy()
    if correction == "bonferroni":
        return np.minimum(1.0, p * m)
    if correction == "holm":
        order = np.argsort(p, kind="stable")
        stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
        out = np.empty_like(p)
        out[order] = np.minimum(1.0, stepped)
        return out
    raise ValueError(f"correction must be 'bonferroni', 'holm' or 'none', not {correction!r}")


def _check_frames(intensity, error) -> tuple[np.ndarray, np.ndarray]:
    i = np.asarray(intensity, dtype=np.float64)
    if i.ndim != 2 or i.shape[0] == 0 or i.shape[1] == 0:
        raise ValueError(f"frames must be a (n_frames, n_q) array, not shape {i.shape}")
    e = np.asarray(error, dtype=np.float64)
    if e.shape != i.shape:
        raise ValueError(f"errors have shape {e.shape}, the intensities {i.shape}")
    return i, e


def pairwise_tests(
    intensity: np.ndarray,
    error: np.ndarray,
    *,
    test: Test = "cormap",
    correction: Correction = "bonferroni",
) -> list[PairTest]:
    """Every pair ``i < j`` of the frames (rows), compared with ``test``; p-values
    adjusted over all pairs with ``correction``."""
    if test not in ("cormap", "chi2"):
        raise ValueError(f"test must be 'cormap' or 'chi2', not {test!r}")
    i, e = _check_frames(intensity, error)
    n = i.shape[0]
    raw = [(a, b, *_pair(i[a], e[a], i[b], e[b], test)) for a in range(n) for b in range(a + 1, n)]
    p = np.array([r[4] for r in raw], dtype=np.float64)
    adj = _adjust(p, correction)
    return [PairTest(a, b, s, k, float(pv), float(pa))
            for (a, b, s, k, pv), pa in zip(raw, adj, strict=True)]


def mean_curve(
    intensity: np.ndarray, error: np.ndarray, frames: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, its error ``sqrt(sum sigma^2) / n_k`` and ``n_k`` per bin over ``frames``
    (all by default), each bin over the frames where it is finite."""
    i, e = _check_frames(intensity, error)
    rows = list(range(i.shape[0])) if frames is None else list(frames)
    if not rows:
        raise ValueError("no frames to average")
    i, e = i[rows], e[rows]
    ok = np.isfinite(i) & np.isfinite(e)
    count = ok.sum(axis=0)
    total = np.where(ok, i, 0.0).sum(axis=0)
    var = np.where(ok, e * e, 0.0).sum(axis=0)
    mean = np.full(i.shape[1], np.nan)
    err = np.full(i.shape[1], np.nan)
    has = count > 0
    mean[has] = total[has] / count[has]
    err[has] = np.sqrt(var[has]) / count[has]
    return mean, err, count


def _rank(frame: int, p_adjusted: list[float]) -> tuple[int, float, int]:
    strength = -sum(math.log(max(v, 1e-300)) for v in p_adjusted)
    return len(p_adjusted), strength, frame


def _reject(n: int, pairs: Sequence[PairTest], alpha: float) -> tuple[list[int], list[Rejection]]:
    kept = set(range(n))
    rejected: list[Rejection] = []
    different = [p for p in pairs if p.p_adjusted < alpha]
    while True:
        live = [p for p in different if p.i in kept and p.j in kept]
        if not live:
            break
        score: dict[int, list[float]] = {}
        for p in live:
            for f in (p.i, p.j):
                score.setdefault(f, []).append(p.p_adjusted)
        # Most differences first; then the strongest evidence; then the later frame.
        worst = max(score, key=lambda f, s=score: _rank(f, s[f]))
        ps = score[worst]
        rejected.append(Rejection(
            worst,
            f"differs from {len(ps)} of {len(kept) - 1} other kept frames "
            f"(adjusted p < {alpha:g}, smallest {min(ps):.3g})",
            float(min(ps)),
        ))
        kept.discard(worst)
    return sorted(kept), rejected


def average_frames(
    intensity: np.ndarray,
    error: np.ndarray,
    *,
    test: Test = "cormap",
    alpha: float = 0.01,
    correction: Correction = "bonferroni",
) -> AverageResult:
    """Average the frames (rows of ``intensity``/``error``, all on one q grid) after
    rejecting outliers by pairwise ``test`` at ``alpha`` (see the module doc)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    i, e = _check_frames(intensity, error)
    pairs = pairwise_tests(i, e, test=test, correction=correction)
    kept, rejected = _reject(i.shape[0], pairs, alpha)
    mean, err, count = mean_curve(i, e, kept)
    return AverageResult(mean, err, count, tuple(kept), tuple(rejected), tuple(pairs),
                         test, correction, float(alpha))


def subtract(
    sample: np.ndarray,
    sample_error: np.ndarray,
    buffer: np.ndarray,
    buffer_error: np.ndarray,
    *,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``sample - scale * buffer`` and its error ``sqrt(s_s^2 + (scale s_b)^2)``
    (uncorrelated errors, added in quadrature); NaN where either curve is NaN."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (sample, sample_error, buffer, buffer_error)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"sample, buffer and their errors differ in shape: {sorted(shapes)}")
    s, se, b, be = arrays
    return s - scale * b, np.hypot(se, scale * be)
