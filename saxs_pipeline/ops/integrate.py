"""Integration of frames with a built :class:`IntegrationOperator`.

Two definitions (calibration ``IntensityDefinition``). The original's, per-bin means in
counts per pixel (its and FIT2D's unit): ``mean[k] = sum_p A[p,k] c[p] x[p] / sum_p A[p,k]``
(:func:`integrate`, :func:`integrate_poisson`, :func:`integrate_error`). pyFAI's, the summed
signal over the summed normalisation (:func:`integrate_corrected`, definitions in
:mod:`saxs_pipeline.ops.corrections`). Bins without any used pixel are NaN.

Pixels excluded per frame: negative values (Pilatus marks module gaps -1 and bad pixels
-2; they are excluded even where the mask misses them) and NaN. The fast path checks for
them with one vectorised pass and only then corrects the sums for the few pixels found.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from saxs_pipeline.ops.corrections import Corrections
from saxs_pipeline.ops.operator import MAX_RUN, IntegrationOperator

__all__ = [
    "ERROR_MODELS",
    "IntegrationResult",
    "integral_parameters",
    "integrate",
    "integrate_batch",
    "integrate_corrected",
    "integrate_error",
    "integrate_poisson",
]

@dataclass(frozen=True)
class IntegrationResult:
    """One integrated frame. ``std`` is the weighted standard deviation of the pixels in a
    bin, ``sem`` the standard error of the mean (``std * sqrt(sum A^2) / sum A`` in the
    original's definition), ``poisson`` the Poisson error of the chosen error model
    (:data:`ERROR_MODELS`; :mod:`saxs_pipeline.ops.corrections` for the summed
    normalisation), ``area`` the effective pixel count ``sum A``."""

    radial: np.ndarray
    mean: np.ndarray
    poisson: np.ndarray
    std: np.ndarray | None = None
    sem: np.ndarray | None = None
    area: np.ndarray | None = None


_scratch = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread scratch array: fresh megabytes on every frame cost page faults (a
    first touch of a new 50 MB batch buffer took longer than the product itself)."""
    n = int(np.prod(shape))
    key = f"{name}-{np.dtype(dtype).str}"
    buf = getattr(_scratch, key, None)
    if buf is None or buf.size < n:
        buf = np.empty(n, dtype=dtype)
        setattr(_scratch, key, buf)
    return buf[:n].reshape(shape)


def _flags(n: int) -> np.ndarray:
    return _buffer("flags", (n,), np.dtype(bool))


def _excluded(op: IntegrationOperator, xs: np.ndarray, exclude_negative: bool) -> np.ndarray:
    """Flat indices of used pixels whose value must not count in this frame; ``xs`` is
    the frame over the operator's span."""
    lo, hi = op.span
    bad = _flags(xs.size)
    # NaN compares False both ways, so "not (x >= 0)" catches it with the negatives.
    np.greater_equal(xs, 0, out=bad) if exclude_negative else np.equal(xs, xs, out=bad)
    np.logical_not(bad, out=bad)
    bad &= op.valid[lo:hi]
    return np.flatnonzero(bad) + lo if bad.any() else np.empty(0, dtype=np.intp)


def _areas_without(op: IntegrationOperator, bad: np.ndarray, m) -> tuple[np.ndarray, np.ndarray]:
    """Effective areas and squared areas with the pixels ``bad`` taken out."""
    sub = m[:, bad - op.span[0]]
    if op.correction is not None:
        sub = sub.multiply(1.0 / op.correction[bad][None, :]).tocsc()
    areas = op.areas - np.asarray(sub.sum(axis=1)).ravel()
    area_sq = op.area_sq - np.asarray(sub.multiply(sub).sum(axis=1)).ravel()
    # Exact zeros where every pixel of a bin was excluded, so the bin becomes NaN.
    areas[np.isclose(areas, 0, atol=1e-12)] = 0
    return areas, area_sq


def _frame(op: IntegrationOperator, image: np.ndarray) -> np.ndarray:
    """The frame as a flat array in its own dtype (the kernels read integers directly)."""
    image = np.asarray(image)
    if image.shape != op.shape and image.size != op.shape[0] * op.shape[1]:
        raise ValueError(f"frame has shape {image.shape} but the operator expects {op.shape}")
    x = image.reshape(-1)
    if x.dtype.kind not in "iuf" or x.dtype.itemsize > 8:
        x = x.astype(np.float64)
    return x


def _limits(exclude_negative: bool, invalid: float | None) -> tuple[float, float]:
    # the lowest finite value, not -inf: -inf pixels are excluded too (kernels._excluded)
    lower = 0.0 if exclude_negative else -float(np.finfo(np.float64).max)
    return lower, (np.nan if invalid is None else float(invalid))


def _pass1(op: IntegrationOperator, x: np.ndarray, limits, *, variance: bool):
    """One pass: ``sum W x`` (and ``sum W^2 x``), and the excluded used pixels."""
    from saxs_pipeline.ops import kernels  # numba: imported on the first frame, not the build

    nbins = op.nbins
    s1 = np.empty(nbins)
    s2 = np.empty(nbins) if variance else None
    layout = op.compact(x.dtype)
    if layout is not None:
        bad = _buffer("bad", (layout.start.size,), np.dtype(np.int64))
        n = kernels.pass1(x, layout.segments, layout.start, layout.weights, s1, s2, bad, *limits)
    else:
        m = op.matrix_for(x.dtype)
        bad = _buffer("bad", (m.shape[1],), np.dtype(np.int64))
        n = kernels.pass1_csc(x, op.span[0], m.indptr, m.indices, m.data, s1, s2, bad, *limits)
    return s1, s2, bad[:n].copy()


def _sums(op: IntegrationOperator, x: np.ndarray, exclude_negative: bool, invalid: float | None = None,
          *, variance: bool = False):
    """Weighted sums, effective areas, sum of squared areas and excluded pixels."""
    limits = _limits(exclude_negative, invalid)
    s1, s2, bad = _pass1(op, x, limits, variance=variance)
    if bad.size == 0:
        return s1, s2, op.areas, op.area_sq, bad, limits
    areas, area_sq = _areas_without(op, bad, op.matrix64)
    return s1, s2, areas, area_sq, bad, limits


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def integrate(
    op: IntegrationOperator, image: np.ndarray, *, exclude_negative: bool = True,
    invalid: float | None = None,
) -> np.ndarray:
    """Mean intensity per bin (counts per pixel); NaN for bins with no used pixel.
    ``invalid``: a value that marks a pixel as unusable in this frame (e.g. ``2**32 - 1``
    in EIGER uint32 frames), excluded like negative and NaN pixels."""
    sums, _, areas, _, _, _ = _sums(op, _frame(op, image), exclude_negative, invalid)
    return _divide(sums, areas)


ERROR_MODELS = {
    "poisson": "sqrt(sum_p W[k,p]^2 x_p) / sum_p A[p,k]: the Poisson standard error of the "
               "weighted mean (W = A c, A the area fractions, c the per-pixel correction)",
    "saxsdog": "sqrt(sum_p W[k,p] x_p) / sum_p A[p,k]: the original Saxsdog's Poisson error; "
               "about 20 % too large where pixels are split between bins",
}


def _check_model(error_model: str) -> None:
    if error_model not in ERROR_MODELS:
        raise ValueError(f"error_model must be one of {sorted(ERROR_MODELS)}, not {error_model!r}")


def integrate_poisson(
    op: IntegrationOperator, image: np.ndarray, *, exclude_negative: bool = True,
    invalid: float | None = None, error_model: str = "saxsdog",
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Poisson error from one pass. ``error_model`` (see :data:`ERROR_MODELS`):
    ``"saxsdog"`` the original's ``sqrt(sum)/area`` (the seed API's), ``"poisson"`` the
    variance of the weighted mean, ``sqrt(sum W^2 x)/area``."""
    _check_model(error_model)
    variance = error_model == "poisson"
    sums, s2, areas, _, _, _ = _sums(op, _frame(op, image), exclude_negative, invalid, variance=variance)
    return _mean_and_error(sums, s2, areas)


def _mean_and_error(sums: np.ndarray, s2: np.ndarray | None, areas: np.ndarray):
    # s2 (sum W^2 x) is there for the "poisson" model, None for the original's sqrt(sum)
    counts = sums if s2 is None else s2
    return _divide(sums, areas), _divide(np.sqrt(np.maximum(counts, 0)), areas)


def integrate_error(
    op: IntegrationOperator, image: np.ndarray, *, exclude_negative: bool = True,
    invalid: float | None = None, error_model: str = "saxsdog",
) -> IntegrationResult:
    """Mean, standard deviation (original's definition), Poisson error and standard error.

    The standard deviation back-projects the bin means onto the pixels
    (``back = W^T mean``) and averages ``(x - back)^2`` with the bin weights, as the
    original's ``integrateerror``; two passes over the operator (the second fuses the
    back-projection and the squared deviations per pixel).
    """
    _check_model(error_model)
    x = _frame(op, image)
    variance = error_model == "poisson"
    sums, s2, areas, area_sq, _, limits = _sums(op, x, exclude_negative, invalid, variance=variance)
    mean = _divide(sums, areas)
    spread = _pass2(op, x, mean, None, None, limits)
    std = np.sqrt(_divide(spread, areas))
    sem = std * _divide(np.sqrt(area_sq), areas)
    poisson = _divide(np.sqrt(np.maximum(s2 if variance else sums, 0)), areas)
    return IntegrationResult(op.radial, mean, poisson, std, sem, areas)


def _pass2(op: IntegrationOperator, x: np.ndarray, mean: np.ndarray, off: np.ndarray | None,
           scale: np.ndarray | None, limits) -> np.ndarray:
    """``sum_p W[k,p] (x_p - off_p - scale_p back_p)^2`` with ``back = W^T mean`` (one pass;
    ``off``/``scale`` in the order of :meth:`Corrections.pass2_arrays`, None for 0/1)."""
    from saxs_pipeline.ops import kernels

    padded = np.zeros(op.nbins + MAX_RUN)
    padded[: op.nbins] = np.nan_to_num(mean, nan=0.0)
    spread = np.empty(op.nbins)
    layout = op.compact(x.dtype)
    if layout is not None:
        kernels.pass2(x, layout.segments, layout.start, layout.weights, padded, off, scale,
                      spread, *limits)
    else:
        m = op.matrix_for(x.dtype)
        kernels.pass2_csc(x, op.span[0], m.indptr, m.indices, m.data, padded, off, scale,
                          spread, *limits)
    return spread


def integrate_corrected(
    op: IntegrationOperator, image: np.ndarray, corrections: Corrections, *,
    error_model: str = "poisson", with_std: bool = False, exclude_negative: bool = True,
    invalid: float | None = None,
) -> IntegrationResult:
    """The summed signal over the summed normalisation, ``sum A (x - d) / sum A c``, and
    its errors (definitions in :mod:`saxs_pipeline.ops.corrections`): one pass over the
    operator, two with ``with_std``. ``corrections`` from
    :func:`~saxs_pipeline.ops.corrections.corrections_for` of this operator. The frame's
    normalisation multiplier is applied by the caller (it scales every column)."""
    _check_model(error_model)
    x = _frame(op, image)
    limits = _limits(exclude_negative, invalid)
    poisson = error_model == "poisson"
    s1, s2, bad = _pass1(op, x, limits, variance=poisson)
    k = corrections.bins if bad.size == 0 else corrections.without(op, bad)
    mean = _divide(s1 - k.dark, k.norm)
    variance = s2 + k.dark_var_sq if poisson else s1 + k.dark_var
    error = _divide(np.sqrt(np.maximum(variance, 0)), k.norm)
    if not with_std:
        return IntegrationResult(op.radial, mean, error, area=k.areas)
    off, c = corrections.pass2_arrays(op, op.compact(x.dtype) is not None)
    std = np.sqrt(_divide(_pass2(op, x, mean, off, c, limits), k.norm_c2))
    sem = std * _divide(np.sqrt(k.norm_sq), k.norm)
    return IntegrationResult(op.radial, mean, error, std, sem, k.areas)


def integrate_batch(
    op: IntegrationOperator,
    frames: Sequence[np.ndarray] | np.ndarray,
    *,
    exclude_negative: bool = True,
    invalid: float | None = None,
    error_model: str = "saxsdog",
    corrections: Corrections | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Means and Poisson errors of several frames as two ``(n_frames, nbins)`` arrays
    (one array per batch, ready to ship): :func:`integrate_poisson`, or with
    ``corrections`` :func:`integrate_corrected`, per frame. Without corrections, frames of
    one dtype go through the compact layout up to ``BATCH`` at a time
    (:func:`~saxs_pipeline.ops.kernels.pass1_batch`: the operator is read once per group;
    the same bits as one by one), others one by one."""
    from saxs_pipeline.ops.kernels import BATCH

    _check_model(error_model)
    n = len(frames)
    means = np.empty((n, op.nbins))
    errs = np.empty((n, op.nbins))
    kw = {"exclude_negative": exclude_negative, "invalid": invalid, "error_model": error_model}
    xs = [_frame(op, f) for f in frames]
    i = 0
    while i < n:
        group = _batchable(op, xs[i:i + BATCH]) if corrections is None else 0
        if group > 1:
            means[i:i + group], errs[i:i + group] = _poisson_batch(
                op, xs[i:i + group], _limits(exclude_negative, invalid), error_model == "poisson")
            i += group
            continue
        if corrections is None:
            means[i], errs[i] = integrate_poisson(op, frames[i], **kw)
        else:
            r = integrate_corrected(op, frames[i], corrections, **kw)
            means[i], errs[i] = r.mean, r.poisson
        i += 1
    return means, errs


def _batchable(op: IntegrationOperator, xs: list[np.ndarray]) -> int:
    """How many of the leading frames share the first one's dtype and a compact layout."""
    if len(xs) < 2 or op.compact(xs[0].dtype) is None:
        return 0
    k = 1
    while k < len(xs) and xs[k].dtype == xs[0].dtype and xs[k].flags.c_contiguous:
        k += 1
    return k if xs[0].flags.c_contiguous else 0


def _readonly(x: np.ndarray) -> np.ndarray:
    # numba types read-only and writable arrays apart, and a tuple of both cannot be
    # indexed in a loop: decoded HDF5 chunks are read-only, partial ones copies
    view = x.view()
    view.flags.writeable = False
    return view


def _poisson_batch(op: IntegrationOperator, xs: list[np.ndarray], limits, variance: bool):
    from saxs_pipeline.ops import kernels

    k = len(xs)
    layout = op.compact(xs[0].dtype)
    s1 = np.empty((k, op.nbins))
    s2 = np.empty((k, op.nbins)) if variance else None
    bad = _buffer("badpairs", (layout.start.size, 2), np.dtype(np.int64))
    frames = tuple(_readonly(x) for x in xs) + (_readonly(xs[0]),) * (kernels.BATCH - k)
    nbad = kernels.pass1_batch(frames, k, layout.segments, layout.start, layout.weights,
                               s1, s2, bad, *limits)
    overflow = nbad > bad.shape[0]  # more excluded pixels than the buffer holds
    means = np.empty((k, op.nbins))
    errs = np.empty((k, op.nbins))
    for f in range(k):
        if overflow:  # one by one
            sums, sq, mine = _pass1(op, xs[f], limits, variance=variance)
        else:
            sums, sq = s1[f], None if s2 is None else s2[f]
            mine = bad[:nbad][bad[:nbad, 0] == f, 1]
        areas = op.areas if mine.size == 0 else _areas_without(op, mine, op.matrix64)[0]
        means[f], errs[f] = _mean_and_error(sums, sq, areas)
    return means, errs


def integral_parameters(
    radial: np.ndarray,
    intensity: np.ndarray,
    q_start: float,
    q_stop: float,
    edges: np.ndarray | None = None,
) -> dict[str, float]:
    """The original's integral parameters over bins ``q_start <= q < q_stop``:
    ``I0 = sum I dq``, ``I1 = sum I q dq``, ``I2 = sum I q^2 dq`` (NaN bins ignored).

    ``q_stop`` is clipped to the largest bin centre, as the original did. ``dq`` is the
    bin width (from ``edges`` when given, else the spacing of the first two centres).
    """
    q = np.asarray(radial, dtype=np.float64)
    intensity = np.asarray(intensity, dtype=np.float64)
    q_stop = min(q_stop, float(q[-1]))
    i_start = int(np.searchsorted(q, q_start, side="left"))
    i_stop = min(int(np.searchsorted(q, q_stop, side="left")), intensity.size)
    if edges is not None:
        dq = np.diff(np.asarray(edges, dtype=np.float64))[i_start:i_stop]
    else:
        dq = q[1] - q[0] if q.size > 1 else 0.0
    seg_i = intensity[i_start:i_stop] * dq
    seg_q = q[i_start:i_stop]
    return {
        "I0": float(np.nansum(seg_i)),
        "I1": float(np.nansum(seg_i * seg_q)),
        "I2": float(np.nansum(seg_i * seg_q * seg_q)),
    }
