"""The weights of an integration operator from its sub-pixels' bin coordinates.

Pure functions of arrays, used by :func:`saxs_pipeline.ops.operator.build_operator`:
:func:`to_operator` turns per-pixel columns of summed sub-pixel fractions into the CSC
matrix (one column per pixel) and the per-bin areas. Curves get their columns from the
compiled :func:`saxs_pipeline.ops.buildkernels.pixel_columns`; cakes, whose pixels reach
bins ``nrad`` apart, from :func:`fractions` (each sub-pixel split over the bins its box
covers) and :func:`accumulate_cake`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from saxs_pipeline.config.calibration import Geometry
from saxs_pipeline.ops import geometry as geo

__all__ = ["accumulate_cake", "fractions", "subpixel_width", "to_operator"]


def subpixel_width(geometry: Geometry, ov: int, to_u) -> np.ndarray:
    """Width, in bins, of the box each sub-pixel is spread over: the linearised extent of
    a sub-pixel square in u, sqrt(a^2 + b^2) for the steps a, b along x and y (the box
    with the same variance as the exact trapezoid). Evaluated per pixel, shape
    ``(rows, 1, cols, 1)`` to broadcast over that pixel's sub-pixels."""
    u = to_u(geo.q_map(geometry, 1))
    gy, gx = np.gradient(u)
    width = np.hypot(gx, gy) / ov
    rows, cols = geometry.image_shape
    return width.reshape(rows, 1, cols, 1)


def fractions(u, width, rows, cols, ov):
    """Each sub-pixel covers [u - w/2, u + w/2) uniformly (w = 0: its centre only):
    its lowest bin ``base`` (``(rows, ov, cols, ov)`` int64) and the fractions of it in
    bins ``base + j`` (``[None]``: all of it in ``base``)."""
    u4 = u.reshape(rows, ov, cols, ov)
    if width is None:
        return np.floor(u4).astype(np.int64), [None]
    lower = u4 - 0.5 * width
    base = np.floor(lower)
    inv = np.divide(1.0, width, out=np.full(width.shape, np.inf), where=width > 0)
    n_edges = int(np.ceil(float(width.max()))) + 1
    fracs, prev = [], 0.0
    for j in range(1, n_edges + 1):
        # fraction of the box below the edge base + j; a zero-width box is all below.
        cum = np.clip((base + j - lower) * inv, 0.0, 1.0)
        cum[np.isnan(cum)] = 1.0
        fracs.append(cum - prev)
        prev = cum
    return base.astype(np.int64), fracs


def to_operator(indptr, indices, weights, ov, nbins, correction):
    """CSC operator and per-bin areas from per-pixel columns of summed sub-pixel
    fractions (``weights``, not yet divided by ov^2)."""
    npix = indptr.size - 1
    frac = weights / float(ov * ov)
    areas = np.bincount(indices, weights=frac, minlength=nbins)
    area_sq = np.bincount(indices, weights=frac * frac, minlength=nbins)
    if correction is not None:
        frac = frac * correction[np.repeat(np.arange(npix), np.diff(indptr))]
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    return sp.csc_matrix((frac, indices.astype(np.int32, copy=False), indptr),
                         shape=(nbins, npix)), areas, area_sq


def _to_csc(weights, bins, npix, ov, nbins, correction):
    """:func:`to_operator` from dense per-pixel rows of weights and their bins."""
    nz = weights > 1e-12
    indptr = np.zeros(npix + 1, dtype=np.int64)
    np.cumsum(nz.sum(axis=1), out=indptr[1:])
    return to_operator(indptr, bins[nz].astype(np.int32), weights[nz], ov, nbins, correction)


def accumulate_cake(base, fracs, drop, chi_bin, rows, cols, ov, nrad, n_chi, valid, correction):
    """A cake's operator, bin ``chi * nrad + radial``: a pixel straddling azimuth bins
    reaches bins ``nrad`` apart, so the (pixel, bin) pairs of all sub-pixels are summed
    by a sparse COO -> CSC conversion instead of in a short per-pixel run."""
    npix = rows * cols
    pix = (np.arange(rows)[:, None, None, None] * cols
           + np.arange(cols)[None, None, :, None]) + np.zeros_like(base)
    keep = valid[pix]
    if drop is not None:
        keep &= ~drop.reshape(base.shape)
    chi4 = chi_bin.reshape(base.shape)
    cols_, rows_, data = [], [], []
    for j, f in enumerate(fracs):
        rb = base + j
        # Parts outside the radial grid are dropped, not carried into the next chi row.
        ok = keep & (rb >= 0) & (rb < nrad)
        rows_.append(chi4[ok] * nrad + rb[ok])
        cols_.append(pix[ok])
        data.append(np.ones(int(ok.sum())) if f is None else f[ok])
    nbins = nrad * n_chi
    m = sp.coo_matrix((np.concatenate(data), (np.concatenate(rows_), np.concatenate(cols_))),
                      shape=(nbins, npix)).tocsc()
    m.sum_duplicates()
    m.eliminate_zeros()
    # Back to the dense-row form _to_csc thresholds and scales (same rules as radial).
    counts = np.diff(m.indptr)
    width = int(counts.max(initial=0))
    weights = np.zeros((npix, max(width, 1)))
    bins = np.zeros((npix, max(width, 1)), dtype=np.int64)
    slot = np.arange(m.indices.size) - np.repeat(m.indptr[:-1], counts)
    col = np.repeat(np.arange(npix), counts)
    weights[col, slot] = m.data
    bins[col, slot] = m.indices
    return _to_csc(weights, bins, npix, ov, nbins, correction)
