"""Compiled (numba) kernels of the integration hot path.

Layout (:class:`~saxs_pipeline.ops.operator.CompactLayout`): the used pixels in image order,
grouped into ``segments`` of consecutive used pixels (``[first flat index, length]``); for
each used pixel ``j`` the first bin ``start[j]`` (uint16) and ``K`` weights ``weights[j]``
for bins ``start[j] .. start[j] + K - 1`` (a pixel's bins are contiguous; shorter runs are
padded with zero weights). The kernels read the frame once, sequentially and in its own
dtype (no float copy), and scatter into per-bin accumulators that stay in L1/L2. Every
accumulator is float64.

Consecutive pixels of a row often fall into the same bin; a scatter ``acc[b] += ...`` would
then wait on the store of the previous pixel. Each accumulator is therefore split into
``LANES`` interleaved copies (pixel ``j`` adds into lane ``j % LANES``), summed at the end.

Pixels excluded per frame (negative values, NaN, +-inf, or ``invalid``) are skipped and their flat
indices written to ``bad``; the caller corrects the per-bin constants for them (rare).

``pass1_batch`` is ``pass1`` for up to ``BATCH`` frames at once: each pixel's bin and
weights are loaded once for all of them, and the frames' accumulators side by side take
vector instructions (the frames are the lanes).

``pass1`` gives ``S1 = sum W x`` and ``S2 = sum W^2 x`` (mean and Poisson variance) in one
pass; ``pass2`` fuses the back-projection of the bin means onto each pixel and the squared
deviation ``(x - off - scale * back)^2`` scattered with ``W`` (the standard deviation), so
all three columns take two passes over the operator.

Compiled code is cached on disk (numba's ``cache=True``: beside this file, or in the
user-wide cache when the package directory is read-only; ``NUMBA_CACHE_DIR`` overrides),
so a worker that restarts does not recompile.
"""

from __future__ import annotations

import logging

import numba
import numpy as np

__all__ = ["BATCH", "LANES", "pass1", "pass1_batch", "pass1_csc", "pass2", "pass2_csc"]

log = logging.getLogger(__name__)

LANES = 4
BATCH = 8
FMAX = float(np.finfo(np.float64).max)  # the largest finite value: +inf lies above it


def _jit(fn):
    options = {"nogil": True, "boundscheck": False, "error_model": "numpy"}
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError as exc:  # no writable cache location at all
        log.warning("numba cache unavailable (%s); kernels compile on first use", exc)
        return numba.njit(**options)(fn)


@_jit
def _excluded(v, lower, invalid):  # pragma: no cover - compiled
    # One test for all the rules: lower = 0 drops negatives and NaN (NaN compares False),
    # lower = -FMAX NaN and -inf; +inf lies above FMAX; invalid = NaN matches nothing.
    f = np.float64(v)
    return not (lower <= f <= FMAX) or f == invalid


@_jit
def _reduce_lanes(acc, out):  # pragma: no cover - compiled
    for k in range(out.size):
        s = 0.0
        for lane in range(LANES):
            s += acc[k, lane]
        out[k] = s


@_jit
def pass1(x, segments, start, weights, s1, s2, bad, lower, invalid):
    """``s1[k] = sum W x`` and, unless ``s2`` is None, ``s2[k] = sum W^2 x`` over the used
    pixels; returns the number of excluded pixels (their flat indices in ``bad[:n]``).
    ``s2 is None`` is resolved at compile time (numba prunes the branch), so the plain mean
    pays nothing for the variance."""
    nbins = s1.size
    width = len(weights)
    acc1 = np.zeros((nbins + width, LANES))
    acc2 = np.zeros((nbins + width if s2 is not None else 0, LANES))
    j = 0
    nbad = 0
    for s in range(segments.shape[0]):
        first = segments[s, 0]
        for i in range(segments[s, 1]):
            v = x[first + i]
            if _excluded(v, lower, invalid):
                bad[nbad] = first + i
                nbad += 1
            else:
                fv = np.float64(v)
                b = np.int64(start[j])
                lane = j & (LANES - 1)
                for t in range(width):
                    w = np.float64(weights[t][j])
                    wx = w * fv
                    acc1[b + t, lane] += wx
                    if s2 is not None:
                        acc2[b + t, lane] += w * wx
            j += 1
    _reduce_lanes(acc1, s1)
    if s2 is not None:
        _reduce_lanes(acc2, s2)
    return nbad


@_jit
def pass1_batch(xs, k, segments, start, weights, s1, s2, bad, lower, invalid):
    """:func:`pass1` of the first ``k`` frames of ``xs``, a tuple of ``BATCH`` flat frames
    of one dtype (entries past ``k`` repeat a real frame; their sums are computed and
    dropped: fixed-length inner loops measured ~1.5x faster than loops over ``k``; the
    group measured 1.3 ms per Pilatus 1M frame against 1.6 ms for ``pass1``).
    ``s1``/``s2`` are ``(k, nbins)``; excluded pixels go to ``bad`` as (frame, flat index)
    pairs, as many as it holds; their number is returned (more than ``bad`` holds: the
    caller redoes the frames one by one)."""
    nbins = s1.shape[1]
    width = len(weights)
    # pixel j adds into lane j % LANES as in pass1, so each frame's sums are added in
    # pass1's order: the same bits whichever frames share a group
    acc1 = np.zeros((nbins + width, LANES, BATCH))
    acc2 = np.zeros((nbins + width if s2 is not None else 0, LANES, BATCH))
    v = np.empty(BATCH)
    j = 0
    nbad = 0
    for s in range(segments.shape[0]):
        first = segments[s, 0]
        for i in range(segments[s, 1]):
            p = first + i
            anybad = False
            for f in range(BATCH):
                x = np.float64(xs[f][p])
                v[f] = x
                # _excluded without branches: this loop stays a straight line
                anybad |= not ((x >= lower) & (x <= FMAX) & (x != invalid))
            if anybad:  # rare: zero and record the excluded ones
                for f in range(BATCH):
                    if _excluded(v[f], lower, invalid):
                        v[f] = 0.0
                        if f < k:
                            if nbad < bad.shape[0]:
                                bad[nbad, 0] = f
                                bad[nbad, 1] = p
                            nbad += 1
            b = np.int64(start[j])
            lane = j & (LANES - 1)
            for t in range(width):
                w = np.float64(weights[t][j])
                for f in range(BATCH):
                    wx = w * v[f]
                    acc1[b + t, lane, f] += wx
                    if s2 is not None:
                        acc2[b + t, lane, f] += w * wx
            j += 1
    for f in range(k):
        for q in range(nbins):
            a1 = 0.0
            a2 = 0.0
            for lane in range(LANES):  # as _reduce_lanes
                a1 += acc1[q, lane, f]
                if s2 is not None:
                    a2 += acc2[q, lane, f]
            s1[f, q] = a1
            if s2 is not None:
                s2[f, q] = a2
    return nbad


@_jit
def pass2(x, segments, start, weights, mean, off, scale, out, lower, invalid):
    """``out[k] = sum_p W[k,p] (x_p - off_p - scale_p * back_p)^2`` with
    ``back_p = sum_k W[k,p] mean[k]``; ``off``/``scale`` per used pixel, or None for 0/1
    (resolved at compile time: a run-time test of empty arrays measured 1.5x slower).
    ``mean`` has ``nbins + K`` entries (zero past the last bin and for empty bins)."""
    nbins = out.size
    width = len(weights)
    acc = np.zeros((nbins + width, LANES))
    j = 0
    for s in range(segments.shape[0]):
        first = segments[s, 0]
        for i in range(segments[s, 1]):
            v = x[first + i]
            if not _excluded(v, lower, invalid):
                b = np.int64(start[j])
                # x - off does not wait for the back-projection: a shorter chain per pixel
                e = np.float64(v)
                if off is not None:
                    e -= off[j]
                back = 0.0
                for t in range(width):
                    back += np.float64(weights[t][j]) * mean[b + t]
                if scale is not None:
                    e -= scale[j] * back
                else:
                    e -= back
                e *= e
                lane = j & (LANES - 1)
                for t in range(width):
                    acc[b + t, lane] += np.float64(weights[t][j]) * e
            j += 1
    _reduce_lanes(acc, out)


@_jit
def pass1_csc(x, lo, indptr, indices, data, s1, s2, bad, lower, invalid):
    """:func:`pass1` on a CSC matrix (one column per pixel of ``[lo, lo + ncols)``), for
    operators whose pixels reach too many bins for the compact layout (Phi-mode)."""
    nbins = s1.size
    acc1 = np.zeros((nbins, LANES))
    acc2 = np.zeros((nbins if s2 is not None else 0, LANES))
    nbad = 0
    for p in range(indptr.size - 1):
        a = indptr[p]
        e = indptr[p + 1]
        if a == e:
            continue
        v = x[lo + p]
        if _excluded(v, lower, invalid):
            bad[nbad] = lo + p
            nbad += 1
            continue
        fv = np.float64(v)
        lane = p & (LANES - 1)
        for j in range(a, e):
            wx = np.float64(data[j]) * fv
            acc1[indices[j], lane] += wx
            if s2 is not None:
                acc2[indices[j], lane] += np.float64(data[j]) * wx
    _reduce_lanes(acc1, s1)
    if s2 is not None:
        _reduce_lanes(acc2, s2)
    return nbad


@_jit
def pass2_csc(x, lo, indptr, indices, data, mean, off, scale, out, lower, invalid):
    """:func:`pass2` on a CSC matrix; ``off``/``scale`` indexed by column (or None)."""
    acc = np.zeros((out.size, LANES))
    for p in range(indptr.size - 1):
        a = indptr[p]
        e = indptr[p + 1]
        if a == e:
            continue
        v = x[lo + p]
        if _excluded(v, lower, invalid):
            continue
        d = np.float64(v)
        if off is not None:
            d -= off[p]
        back = 0.0
        for j in range(a, e):
            back += np.float64(data[j]) * mean[indices[j]]
        if scale is not None:
            d -= scale[p] * back
        else:
            d -= back
        d *= d
        lane = p & (LANES - 1)
        for j in range(a, e):
            acc[indices[j], lane] += np.float64(data[j]) * d
    _reduce_lanes(acc, out)
