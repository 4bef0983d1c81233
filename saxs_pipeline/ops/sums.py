"""Per-bin sums of a frame, from which curves can be re-binned or averaged exactly.

With the operator's weights ``W[k, p] = A[p, k] c[p]`` (A the fraction of pixel p in bin
k, c the polarization correction or 1), one frame x gives per bin k:

* ``signal``   = sum_p W x             (the integrated counts, corrected)
* ``variance`` = sum_p W^2 x           (Poisson variance of ``signal``: var(x) = x)
* ``norm``     = sum_p A               (effective pixel count, the mean's denominator)
* ``count``    = number of pixels with A > 0

so that ``mean = signal / norm`` is exactly the pipeline's curve, ``sqrt(signal) / norm``
the original's Poisson error column and ``sqrt(variance) / norm`` the propagated Poisson
error. Pixels a frame excludes (negative Pilatus gap/bad values, NaN) contribute to
none of the four.

Averaging frames adds the sums of all frames: exact for all four (the mean of the
combined sums is the mean of the summed, i.e. averaged, images). Re-binning adds the
sums of neighbouring bins: exact for ``signal`` and ``norm`` (so for the mean and the
original Poisson column), because the coarse operator's rows are the sums of the fine
rows when sub-pixels are point-sampled. ``variance`` and ``count`` are exact only where
no pixel reaches both merged bins: a pixel split over bins a and b contributes
``(W_a + W_b)^2 x`` to the coarse variance but ``(W_a^2 + W_b^2) x`` to the sum, so the
re-binned propagated error is a lower bound (the difference is ``2 W_a W_b x``, zero
with one sub-pixel per pixel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from saxs_pipeline.ops.operator import IntegrationOperator

__all__ = ["BinSums", "SumsCurve", "average_sums", "coarse_edges", "curve_from_sums",
           "frame_sums", "rebin", "scaled_sums"]

FIELDS = ("signal", "variance", "norm", "count")


@dataclass(frozen=True, eq=False)
class BinSums:
    """The four per-bin sums (module doc), each ``(nbins,)`` or ``(n_frames, nbins)``."""

    signal: np.ndarray
    variance: np.ndarray
    norm: np.ndarray
    count: np.ndarray

    def __post_init__(self) -> None:
        shapes = {np.shape(getattr(self, f)) for f in FIELDS}
        if len(shapes) != 1:
            raise ValueError(f"bin sums differ in shape: {sorted(shapes)}")
        if len(next(iter(shapes))) not in (1, 2):
            raise ValueError(f"bin sums must be 1-D or 2-D, not shape {next(iter(shapes))}")

    @property
    def nbins(self) -> int:
        return int(np.shape(self.signal)[-1])


@dataclass(frozen=True, eq=False)
class SumsCurve:
    """Curve from sums: ``mean``, the original's Poisson column ``poisson`` =
    sqrt(signal) / norm and the propagated Poisson error ``sigma`` = sqrt(variance) /
    norm; NaN where ``norm`` is 0."""

    mean: np.ndarray
    poisson: np.ndarray
    sigma: np.ndarray


def _weights(op: IntegrationOperator) -> tuple[sp.csc_matrix, sp.csc_matrix, sp.csc_matrix]:
    """W, W^2 and A over the operator's span (A = W / c)."""
    w = op.matrix64
    a = w
    if op.correction is not None:
        lo, hi = op.span
        a = w @ sp.diags(1.0 / op.correction[lo:hi])
    return w, w.multiply(w).tocsc(), a.tocsc()


def frame_sums(op: IntegrationOperator, image: np.ndarray, *, invalid: float | None = None) -> BinSums:
    """The sums of one frame (float64 arithmetic, whatever the image dtype); pixels equal
    to ``invalid`` (an EIGER's 2**32 - 1) and non-finite ones are excluded like negative
    ones."""
    x = np.asarray(image, dtype=np.float64).reshape(-1)
    if x.size != op.shape[0] * op.shape[1]:
        raise ValueError(f"frame has shape {np.shape(image)} but the operator expects {op.shape}")
    lo, hi = op.span
    xs = x[lo:hi]
    # NaN fails every comparison, +inf the second: both are dropped.
    good = (xs >= 0) & (xs < np.inf) if invalid is None else (xs >= 0) & (xs < np.inf) & (xs != invalid)
    good = good.astype(np.float64)
    xs = np.where(good > 0, xs, 0.0)
    w, w2, a = _weights(op)
    pattern = a.copy()
    pattern.data = (pattern.data > 0).astype(np.float64)
    return BinSums(w @ xs, w2 @ xs, a @ good, pattern @ good)


def scaled_sums(sums: BinSums, scale: float) -> BinSums:
    """The sums of the frame multiplied by ``scale`` (a normalisation multiplier): the
    signal by ``scale``, its variance by ``scale**2``; norm and count stay."""
    return BinSums(sums.signal * scale, sums.variance * scale * scale, sums.norm, sums.count)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def curve_from_sums(sums: BinSums) -> SumsCurve:
    """Mean and errors (see :class:`SumsCurve`) from the sums."""
    return SumsCurve(
        _divide(sums.signal, sums.norm),
        _divide(np.sqrt(np.maximum(sums.signal, 0)), sums.norm),
        _divide(np.sqrt(np.maximum(sums.variance, 0)), sums.norm),
    )


def rebin(sums: BinSums, factor: int) -> BinSums:
    """Merge every ``factor`` neighbouring bins: bin k of the result is fine bins
    ``k*factor .. k*factor + factor - 1``; the last ``nbins % factor`` fine bins, which
    make no whole coarse bin, are dropped (see :func:`coarse_edges`)."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"the re-binning factor must be a positive whole number, not {factor}")
    factor = int(factor)
    n = sums.nbins // factor
    if n == 0:
        raise ValueError(f"cannot merge {factor} bins: there are only {sums.nbins}")

    def merge(values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)[..., : n * factor]
        return v.reshape(*v.shape[:-1], n, factor).sum(axis=-1)

    return BinSums(*(merge(getattr(sums, f)) for f in FIELDS))


def coarse_edges(edges: np.ndarray, factor: int) -> np.ndarray:
    """Bin edges matching :func:`rebin`: every ``factor``-th fine edge."""
    edges = np.asarray(edges, dtype=np.float64)
    n = (edges.size - 1) // int(factor)
    return edges[: n * int(factor) + 1 : int(factor)]


def average_sums(frames: Sequence[BinSums] | BinSums) -> BinSums:
    """The combined sums of several frames (a list of 1-D sums, or one 2-D ``BinSums``
    with a row per frame); :func:`curve_from_sums` of the result is their average curve
    with the average's error."""
    if isinstance(frames, BinSums):
        if np.ndim(frames.signal) != 2:
            raise ValueError("a single BinSums to average must have a row per frame")
        return BinSums(*(np.asarray(getattr(frames, f), dtype=np.float64).sum(axis=0)
                         for f in FIELDS))
    frames = list(frames)
    if not frames:
        raise ValueError("no frames to average")
    nbins = {s.nbins for s in frames}
    if len(nbins) != 1:
        raise ValueError(f"frames have different numbers of bins: {sorted(nbins)}")
    return BinSums(*(np.sum([np.asarray(getattr(s, f), dtype=np.float64) for s in frames], axis=0)
                     for f in FIELDS))
