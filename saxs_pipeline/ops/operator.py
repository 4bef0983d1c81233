"""The oversampled integration operator.

Each pixel is split into ``ov x ov`` sub-pixels; every sub-pixel centre gets a bin label
(q, or phi in Phi-mode). ``A[p, k]`` is the fraction of pixel ``p``'s sub-pixels that land
in bin ``k``. The operator stores ``W[k, p] = A[p, k] * c[p]`` (``c`` = 1 / polarization
factor, or 1) for unmasked pixels only, as a scipy CSC matrix with one column per pixel:
CSC streams the image once and scatters into a bin vector that stays in L1 (measured 2x
faster than pydata ``sparse``; see docs/design.md). The hot path runs compiled
kernels on a :class:`CompactLayout` derived from it (uint16 bins, per-pixel runs of at
most ``MAX_RUN`` bins); the CSC matrix serves the rare paths (excluded pixels, operators
the compact layout cannot hold) and the cache file. Which layout the kernels use on this
CPU is measured once (:func:`saxs_pipeline.ops.tuning.plan`).

``areas[k] = sum_p A[p, k]`` is the effective number of pixels in bin ``k``; the mean
intensity is ``(W @ image) / areas`` -- counts per pixel, the correction not included in
the normalisation, exactly as the original and FIT2D.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from saxs_pipeline.config.calibration import Geometry, MaskConfig, Polarization
from saxs_pipeline.ops import binning, cache
from saxs_pipeline.ops import geometry as geo
from saxs_pipeline.ops.accumulate import accumulate_cake, fractions, subpixel_width, to_operator
from saxs_pipeline.ops.binlayout import BinLayout, bin_layout
from saxs_pipeline.ops.buildkernels import pixel_columns

__all__ = ["IntegrationOperator", "build_operator", "cached_operator", "operator_key"]

log = logging.getLogger(__name__)

# Bump when the stored layout or the binning rules change, so stale caches are not used.
FORMAT_VERSION = 1


@dataclass(eq=False)
class IntegrationOperator:
    """A built integration operator for one (geometry, mask entry, mask) combination."""

    kind: str  # "Radial", "Phi" or "Cake"
    matrix: sp.csc_matrix  # (nbins, hi - lo) float32, W[k, p] = A[p, k] * c[p], p in span
    areas: np.ndarray  # (nbins,) float64, sum_p A[p, k] over unmasked pixels
    area_sq: np.ndarray  # (nbins,) float64, sum_p A[p, k]**2 (for the standard error)
    radial: np.ndarray  # (nbins,) bin centres: q in nm^-1 (Radial, Cake) or phi in rad (Phi)
    edges: np.ndarray  # (nrad + 1,) radial bin edges (a cake's bins: chi * nrad + radial)
    valid: np.ndarray  # (npix,) bool, pixels the operator uses
    correction: np.ndarray | None  # (npix,) float64 1/polarization factor, or None
    shape: tuple[int, int]
    span: tuple[int, int]  # [lo, hi): first to last used pixel (flat index); columns of matrix
    matrix64: sp.csc_matrix = field(default=None, repr=False)  # same layout, float64 data
    key: str = ""
    chi_edges: np.ndarray | None = None  # a cake's azimuth bin edges (deg), else None
    cache_file: Path | None = None  # its <key>.npz in the operator cache (kernel plans beside it)
    # the kernel plans measured for it, by (frame dtype, variance): ops.tuning.plan
    plans: dict = field(default_factory=dict, repr=False)
    _compact: dict = field(default_factory=dict, repr=False)
    _bins: dict = field(default_factory=dict, repr=False)

    @property
    def nbins(self) -> int:
        return int(self.radial.size)

    @property
    def nrad(self) -> int:
        return int(self.edges.size - 1)

    @property
    def n_chi(self) -> int:
        """Azimuth bins of a cake (its bins reshape to ``(n_chi, nrad)``); 1 for curves."""
        return 1 if self.chi_edges is None else int(self.chi_edges.size - 1)

    def compact(self, dtype: np.dtype) -> CompactLayout | None:
        """The compact layout of the kernels (:mod:`saxs_pipeline.ops.kernels`), float64
        weights for float64 frames and float32 otherwise; None where it does not fit
        (more than 65535 bins, or pixels that reach more than ``MAX_RUN`` bins, e.g.
        Phi-mode near the beam): the kernels then use the CSC matrix. Built on first use."""
        name = "f8" if np.dtype(dtype) == np.float64 else "f4"
        if name not in self._compact:
            self._compact[name] = compact_layout(self.matrix64, self.span[0], name)
        return self._compact[name]

    def bins(self, dtype: np.dtype) -> BinLayout:
        """The bin-major layout (:mod:`saxs_pipeline.ops.binlayout`), in the weights'
        precision of :meth:`compact`. Built on first use; only for operators the compact
        layout holds (it takes that layout's lanes)."""
        name = "f8" if np.dtype(dtype) == np.float64 else "f4"
        if name not in self._bins:
            self._bins[name] = bin_layout(self.matrix64, self.span[0], name)
        return self._bins[name]

    def drop_bins(self) -> None:
        """Free the bin-major layouts (measured, not chosen)."""
        self._bins.clear()

    def matrix_for(self, dtype: np.dtype) -> sp.csc_matrix:
        """The matrix in the precision of the input: float64 images use float64 weights
        (closed-form results hold to 1e-12); everything else the float32 ones."""
        if np.dtype(dtype) == np.float64:
            return self.matrix64
        return self.matrix

    def save(self, path: str | Path) -> None:
        """Save to an ``.npz`` (atomically: written to a temporary name, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        m = self.matrix64
        lo, hi = self.span
        buf = io.BytesIO()
        np.savez(
            buf,
            version=FORMAT_VERSION,
            kind=self.kind,
            indptr=m.indptr,
            indices=m.indices,
            data=m.data,
            nbins=self.nbins,
            areas=self.areas,
            area_sq=self.area_sq,
            radial=self.radial,
            edges=self.edges,
            valid=np.packbits(self.valid),
            correction=self.correction if self.correction is not None else np.zeros(0),
            shape=np.array(self.shape),
            span=np.array([lo, hi]),
            key=self.key,
            chi_edges=self.chi_edges if self.chi_edges is not None else np.zeros(0),
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> IntegrationOperator:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != FORMAT_VERSION:
                raise ValueError(f"{path}: operator format {int(z['version'])}, need {FORMAT_VERSION}")
            shape = tuple(int(v) for v in z["shape"])
            npix = shape[0] * shape[1]
            lo, hi = (int(v) for v in z["span"])
            m64 = sp.csc_matrix((z["data"], z["indices"], z["indptr"]), shape=(int(z["nbins"]), hi - lo))
            correction = z["correction"]
            chi_edges = z["chi_edges"] if "chi_edges" in z.files else np.zeros(0)
            return _assemble(
                kind=str(z["kind"]),
                m64=m64,
                areas=z["areas"],
                area_sq=z["area_sq"],
                radial=z["radial"],
                edges=z["edges"],
                valid=np.unpackbits(z["valid"], count=npix).astype(bool),
                correction=correction if correction.size else None,
                shape=(shape[0], shape[1]),
                span=(lo, hi),
                key=str(z["key"]),
                chi_edges=chi_edges if chi_edges.size else None,
            )


MAX_RUN = 4


@dataclass(frozen=True, eq=False)
class CompactLayout:
    """Used pixels as ``segments`` of consecutive flat indices (``[first, length]``), each
    pixel's first bin ``start`` (uint16) and its weights for ``start + t`` as ``width``
    arrays (zero-padded runs). 6-8 bytes per stored weight against scipy's 8 plus a float
    copy of the frame."""

    segments: np.ndarray
    start: np.ndarray
    weights: tuple[np.ndarray, ...]

    @property
    def width(self) -> int:
        return len(self.weights)


def compact_layout(m: sp.csc_matrix, lo: int, dtype: str = "f4") -> CompactLayout | None:
    """:class:`CompactLayout` of a CSC operator whose columns are pixels ``lo, lo+1, ...``."""
    counts = np.diff(m.indptr)
    used = counts > 0
    if not used.any() or m.shape[0] > np.iinfo(np.uint16).max:
        return None
    heads = m.indptr[:-1][used]
    first = np.minimum.reduceat(m.indices, heads)
    last = np.maximum.reduceat(m.indices, heads)
    width = int((last - first).max()) + 1
    if width > MAX_RUN:
        return None
    column = np.repeat(np.arange(counts.size), counts)
    row_of = np.cumsum(used) - 1  # used-pixel number of each column
    start_of_col = np.zeros(counts.size, dtype=np.int64)
    start_of_col[used] = first
    offset = m.indices - start_of_col[column]
    weights = np.zeros((width, int(used.sum())), dtype=dtype)
    weights[offset, row_of[column]] = m.data
    edge = np.diff(np.concatenate([[0], used.astype(np.int8), [0]]))
    begin, end = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    segments = np.stack([begin + lo, end - begin], axis=1).astype(np.int64)
    return CompactLayout(segments, first.astype(np.uint16), tuple(weights))


def _assemble(*, kind, m64, areas, area_sq, radial, edges, valid, correction, shape, key, span=None,
              chi_edges=None):
    if span is None:
        # Columns before the first and after the last used pixel are dropped: the beam
        # stop and edge rows of a real mask are long masked runs the product need not visit.
        used = np.flatnonzero(valid)
        span = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 0)
        m64 = m64[:, span[0] : span[1]]
    m32 = sp.csc_matrix(
        (m64.data.astype(np.float32), m64.indices, m64.indptr), shape=m64.shape, copy=False
    )
    return IntegrationOperator(
        kind=kind,
        matrix=m32,
        areas=areas,
        area_sq=area_sq,
        radial=radial,
        edges=edges,
        valid=valid,
        correction=correction,
        shape=shape,
        span=span,
        matrix64=m64,
        key=key,
        chi_edges=chi_edges,
    )


def operator_key(
    geometry: Geometry, mask_config: MaskConfig, polarization: Polarization | None, valid: np.ndarray
) -> str:
    """Content hash of everything the operator depends on (geometry, binning, polarization
    and the mask pixels), used as the cache name."""
    params = {
        "version": FORMAT_VERSION,
        "geometry": geometry.__dict__,
        "polarization": polarization.__dict__ if polarization else None,
        "ov": mask_config.oversampling,
        "ppre": mask_config.pixels_per_radial_element,
        "phi": mask_config.phi_mode,
        "window": [mask_config.q_start, mask_config.q_stop] if mask_config.phi_mode else None,
        "bins": mask_config.radial_bins,
        "range": mask_config.radial_range,
        "edges": mask_config.radial_edges,
        "splitting": None if mask_config.phi_mode else binning.splitting(mask_config),
    }
    # Only when set, so the keys (and caches) of entries without them stay as they were.
    if mask_config.azimuth is not None:
        params["azimuth"] = mask_config.azimuth
    if mask_config.azimuth_bins is not None:
        params["azimuth_bins"] = mask_config.azimuth_bins
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=list).encode())
    h.update(np.packbits(np.asarray(valid, dtype=bool)).tobytes())
    return h.hexdigest()[:32]


def cached_operator(
    geometry: Geometry,
    mask_config: MaskConfig,
    valid: np.ndarray,
    polarization: Polarization | None = None,
    cache_dir: str | Path | None | bool = None,
) -> IntegrationOperator:
    """:func:`build_operator`, saved and loaded by content hash so a restart does not
    rebuild. ``cache_dir=False`` disables the cache; ``None`` uses ``$SAXS_PIPELINE_CACHE``
    or ``~/.cache/saxs_pipeline/operators``; bounded, see :mod:`saxs_pipeline.ops.cache`."""
    if cache_dir is False:
        return build_operator(geometry, mask_config, valid, polarization)
    key = operator_key(geometry, mask_config, polarization, valid)
    path = Path(cache_dir) if cache_dir else cache.default_cache_dir()
    path = path / f"{key}.npz"
    if path.exists():
        try:
            op = IntegrationOperator.load(path)
            cache.touch(path)
            op.cache_file = path
            return op
        except Exception as exc:  # a torn or stale file: rebuild and overwrite
            log.warning("operator cache %s unreadable (%s); rebuilding", path, exc)
    op = build_operator(geometry, mask_config, valid, polarization, key=key)
    try:
        op.save(path)
        cache.evict(path.parent, keep=path)
        op.cache_file = path
    except OSError as exc:
        log.warning("cannot write operator cache %s: %s", path, exc)
    return op


def build_operator(
    geometry: Geometry,
    mask_config: MaskConfig,
    valid: np.ndarray,
    polarization: Polarization | None = None,
    *,
    key: str = "",
) -> IntegrationOperator:
    """Build the operator. ``valid`` is the boolean mask of usable pixels (True = used)
    with the calibration's image shape. The bins come from
    :func:`~saxs_pipeline.ops.binning.bin_map`; sub-pixels outside the entry's wedges
    (``Azimuth``) or Phi-mode q window are dropped; a cake's bins are (chi, q) in C order."""
    rows, cols = geometry.image_shape
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != (rows, cols):
        raise ValueError(f"mask shape {valid.shape} differs from Imagesize {(rows, cols)}")
    ov = mask_config.oversampling
    dx, dy = geo.subpixel_offsets(geometry, ov)
    q = geo.q_map(geometry, ov)

    drop = None
    if mask_config.phi_mode:
        phi = np.arctan2(dy[:, None], dx[None, :])
        bm = binning.bin_map(geometry, mask_config, extent=(float(q.min()), float(q.max())),
                             max_phi=float(phi.max()))
        u = bm.u(phi)
        del phi
        # The q window is applied per sub-pixel (the original used pixel centres).
        drop = (q < bm.window[0]) | (q > bm.window[1])
    else:
        bm = binning.bin_map(geometry, mask_config, extent=(float(q.min()), float(q.max())))
        u = bm.u(q)
    del q
    chi_bin = None
    if bm.wedges.shape[0] or bm.chi_edges is not None:
        chi = binning.azimuth_deg(dx[None, :], dy[:, None])
        keep = binning.in_wedges(bm, chi)
        if keep is not None:
            drop = ~keep if drop is None else drop | ~keep
        if bm.chi_edges is not None:
            chi_bin = binning.chi_index(bm, chi)
        del chi

    width = subpixel_width(geometry, ov, bm.u) if bm.linear else None

    correction = None
    if polarization is not None:
        correction = (1.0 / geo.polarization_factor(geometry, polarization)).ravel()

    if chi_bin is None:
        m64, areas, area_sq = to_operator(*pixel_columns(u, width, drop, valid, ov, bm.nrad),
                                          ov, bm.nrad, correction)
    else:
        base, fracs = fractions(u, width, rows, cols, ov)
        m64, areas, area_sq = accumulate_cake(base, fracs, drop, chi_bin, rows, cols, ov,
                                               bm.nrad, bm.n_chi, valid.ravel(), correction)
    del u
    centres = 0.5 * (bm.edges[:-1] + bm.edges[1:])
    return _assemble(
        kind=bm.kind,
        m64=m64,
        areas=areas,
        area_sq=area_sq,
        radial=np.tile(centres, bm.n_chi),
        edges=bm.edges,
        valid=valid.ravel().copy(),
        correction=correction,
        shape=(rows, cols),
        key=key,
        chi_edges=bm.chi_edges,
    )
