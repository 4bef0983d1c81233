"""The bin-major layout of the gather kernel (:func:`saxs_pipeline.ops.kernelvariants.pass1_bins`).

The compact layout (:class:`~saxs_pipeline.ops.operator.CompactLayout`) walks the pixels
and scatters into the bins; this one walks the bins and gathers their pixels, like a CSR
product, with each bin's four lane sums in registers instead of memory. The kernels add
pixel ``j`` (the ``j``-th used pixel in image order) into lane ``j % 4`` of its bins; here
bin ``k`` lists its pixels lane by lane in that same order, interleaved so one step of
the kernel reads one pixel of each lane: entries ``4 s + l`` for steps
``s = steps[k] .. steps[k + 1] - 1`` hold the ``(s - steps[k])``-th pixel of lane ``l``.
Lanes with fewer pixels are padded with weight 0 on a pixel of the same bin (2 % more
entries on a Pilatus 1M). Every (bin, lane) sum thus adds the same products in the same
order as the compact kernel: the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["BinLayout", "bin_layout"]

LANES = 4  # kernels.LANES (not imported: that would import numba with the build)
_SHIFT = 2  # log2(LANES): shifts and masks, not integer divisions, on a million entries


@dataclass(frozen=True, eq=False)
class BinLayout:
    """Bin ``k``'s entries are ``4 steps[k] .. 4 steps[k + 1]``: flat pixel index
    (uint32) and weight (zero for padding)."""

    steps: np.ndarray
    pixels: np.ndarray
    weights: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.steps.nbytes + self.pixels.nbytes + self.weights.nbytes


def bin_layout(m: sp.csc_matrix, lo: int, dtype: str = "f4") -> BinLayout:
    """:class:`BinLayout` of a CSC operator whose columns are pixels ``lo, lo+1, ...``
    (the lanes those of :func:`~saxs_pipeline.ops.operator.compact_layout`)."""
    if lo + m.shape[1] > np.iinfo(np.uint32).max:
        raise ValueError(f"{lo + m.shape[1]} pixels: the bin layout holds at most 2**32 - 1")
    nbins = m.shape[0]
    counts = np.diff(m.indptr)
    lane = (np.cumsum(counts > 0) - 1) & (LANES - 1)  # of each column's used-pixel number
    column = np.repeat(np.arange(counts.size), counts)
    rows = (m.indices.astype(np.int64) << _SHIFT) | lane[column]
    # scipy's CSC -> CSR conversion is a counting sort: within a row the columns stay in
    # increasing order, i.e. each (bin, lane) keeps its pixels in image order
    by_row = sp.csc_matrix((m.data, rows, m.indptr), shape=(nbins * LANES, m.shape[1])).tocsr()
    per_lane = np.diff(by_row.indptr).reshape(nbins, LANES)
    nsteps = per_lane.max(axis=1)
    steps = np.zeros(nbins + 1, dtype=np.int64)
    np.cumsum(nsteps, out=steps[1:])
    filled = nsteps > 0
    first = np.zeros(nbins, dtype=np.int64)  # padding pixel: the bin's first entry
    first[filled] = by_row.indices[by_row.indptr[:-1:LANES][filled]]
    pixels = np.repeat(first + lo, LANES * nsteps).astype(np.uint32)
    weights = np.zeros(pixels.size, dtype=dtype)
    row = np.repeat(np.arange(nbins * LANES), np.diff(by_row.indptr))
    position = np.arange(by_row.nnz) - by_row.indptr[row]
    dest = ((steps[row >> _SHIFT] + position) << _SHIFT) | (row & (LANES - 1))
    pixels[dest] = by_row.indices + lo
    weights[dest] = by_row.data
    return BinLayout(steps, pixels, weights)
