"""Where a sub-pixel goes: the bin grid of a mask entry and the coordinate it bins.

Every sub-pixel centre gets a continuous bin coordinate ``u`` (bin ``k`` is
``k <= u < k + 1``) from its q (nm^-1), or in Phi-mode from the original's azimuth phi
(rad): ``u = (v - e0) * per_bin`` on uniform grids, piecewise linear in the edges
otherwise. Sector wedges (``Azimuth``) and the Phi-mode q window drop the sub-pixels
outside them; a cake (``AzimuthBins``) adds an azimuth bin, ``bin = chi_bin * nrad +
radial_bin``, so its bins reshape to ``(chi, q)`` in C order.

Azimuth convention (``Azimuth``, cakes): ``chi = atan2(-dy, dx)`` in degrees, i.e. FIT2D's
azimuth and pyFAI's chi with the image in FIT2D's orientation: 0 deg along +x (increasing
column), 90 deg towards the top of the image as FIT2D shows it (decreasing numpy row of
the stored TIFF), counter-clockwise on screen. The original's Phi-mode angle is
``phi = atan2(dy, dx) = -chi`` (clockwise on screen, kept for compatibility).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from saxs_pipeline.config.calibration import Geometry, MaskConfig
from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.config.wedges import wedge_span
from saxs_pipeline.ops import geometry as geo

__all__ = ["BinMap", "azimuth_deg", "bin_map", "chi_index", "in_wedges", "q_extent", "splitting"]


@dataclass(frozen=True, eq=False)
class BinMap:
    """The bins of one mask entry. ``edges``: radial bin edges (q in nm^-1, or phi in rad
    for ``kind == "Phi"``); ``wedges``: ``(n, 2)`` [start, end) in degrees with start in
    [0, 360) and end = start + span (may pass 360); ``chi_edges``: the cake's azimuth
    edges in degrees, None for curves."""

    kind: str  # "Radial", "Phi" or "Cake"
    edges: np.ndarray
    uniform: bool
    e0: float
    per_bin: float
    linear: bool
    window: tuple[float, float] | None
    wedges: np.ndarray
    chi_edges: np.ndarray | None = None

    @property
    def nrad(self) -> int:
        return int(self.edges.size - 1)

    @property
    def n_chi(self) -> int:
        return 1 if self.chi_edges is None else int(self.chi_edges.size - 1)

    @property
    def nbins(self) -> int:
        return self.nrad * self.n_chi

    def u(self, v: np.ndarray) -> np.ndarray:
        """The bin coordinate of values ``v`` of the binned quantity."""
        if self.uniform:
            return (v - self.e0) * self.per_bin
        index = np.arange(self.edges.size, dtype=np.float64)
        # Beyond the edges u continues past the grid so that out-of-range parts are dropped.
        return np.interp(v, self.edges, index, left=-1.0, right=self.nrad + 1.0)


def splitting(mc: MaskConfig) -> str:
    """Point sampling of sub-pixel centres reproduces the original on its own grid;
    explicit grids (new, no legacy curves to match) default to linear splitting. Phi-mode
    bins are always point-sampled."""
    if mc.phi_mode:
        return "point"
    if mc.pixel_splitting is not None:
        return mc.pixel_splitting
    explicit = mc.radial_edges is not None or mc.radial_bins is not None
    return "linear" if explicit else "point"


def _corner_offsets(geometry: Geometry, ov: int) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = geo.subpixel_offsets(geometry, ov)
    return np.array([dx[0], dx[-1]]), np.array([dy[0], dy[-1]])


def q_extent(geometry: Geometry, ov: int) -> tuple[float, float]:
    """Smallest and largest q over the sub-pixel centres (masked or not). q grows with the
    angle from the beam axis, whose sublevel sets on the detector plane are convex (a
    solid cone cut by a plane): the maximum over the grid is at a corner, the minimum 0
    where the beam meets the detector and else on the border."""
    dx, dy = geo.subpixel_offsets(geometry, ov)
    cx, cy = _corner_offsets(geometry, ov)
    qmax = float(geo.two_theta_q(cx[None, :], cy[:, None], geometry)[0].max())
    if dx[0] <= 0 <= dx[-1] and dy[0] <= 0 <= dy[-1]:
        return 0.0, qmax
    border_x = np.concatenate([dx, dx, np.full(dy.size, dx[0]), np.full(dy.size, dx[-1])])
    border_y = np.concatenate([np.full(dx.size, dy[0]), np.full(dx.size, dy[-1]), dy, dy])
    return float(geo.two_theta_q(border_x, border_y, geometry)[0].min()), qmax


def _max_phi(geometry: Geometry, ov: int) -> float:
    """``max atan2(dy, dx)`` over the sub-pixel centres: along a sub-row the angle is
    monotonic in dx, so only the first and last sub-column can hold a row's maximum."""
    dx, dy = geo.subpixel_offsets(geometry, ov)
    return float(np.arctan2(dy[:, None], np.array([dx[0], dx[-1]])[None, :]).max())


def _grid_path(mc: MaskConfig) -> str:
    where = f"$.Masks[{mc.index}]"
    if mc.radial_edges is not None:
        return f"{where}.RadialEdges"
    return f"{where}.RadialRange" if mc.radial_range is not None else f"{where}.RadialBins"


def _check_overlap(lo: float, hi: float, qlo: float, qhi: float, path: str, what: str) -> None:
    if hi < qlo or lo > qhi:
        raise CalibrationError(
            "calibration", path, f"{what} [{lo:g}, {hi:g}] 1/nm lies outside the detector, "
            f"which covers q from {qlo:.6g} to {qhi:.6g} 1/nm")


def _radial(geometry: Geometry, mc: MaskConfig, qlo: float, qhi: float):
    """(edges, uniform, e0, per_bin) of the radial grid."""
    if mc.radial_edges is not None or mc.radial_bins is not None:
        if mc.radial_edges is not None:
            edges = np.asarray(mc.radial_edges, dtype=np.float64)
        else:
            lo, hi = mc.radial_range if mc.radial_range is not None else (0.0, qhi)
            edges = np.linspace(lo, hi, int(mc.radial_bins) + 1)
        _check_overlap(float(edges[0]), float(edges[-1]), qlo, qhi, _grid_path(mc), "the q grid")
        width = np.diff(edges)
        if np.allclose(width, width[0], rtol=1e-12, atol=0):
            return edges, True, float(edges[0]), (edges.size - 1) / float(edges[-1] - edges[0])
        return edges, False, float(edges[0]), 1.0
    # The original's grid: bins uniform in q, about PixelPerRadialElement pixels wide at the
    # largest radius; both maxima over all sub-pixel centres, masked or not.
    cx, cy = _corner_offsets(geometry, mc.oversampling)
    psy = geometry.pixel_size_um[0] * 1e-3
    rmax_px = math.sqrt(max(cx[0] ** 2, cx[1] ** 2) + max(cy[0] ** 2, cy[1] ** 2)) / psy
    scale = rmax_px / qhi / mc.pixels_per_radial_element
    nb = int(qhi * scale) + 1
    return np.arange(nb + 1, dtype=np.float64) / scale, True, 0.0, scale


def _wedges(mc: MaskConfig) -> np.ndarray:
    out = np.zeros((0 if mc.azimuth is None else len(mc.azimuth), 2))
    for i, (start, stop) in enumerate(mc.azimuth or ()):
        s = start % 360.0
        out[i] = s, s + wedge_span(start, stop)
    return out


def bin_map(geometry: Geometry, mc: MaskConfig, *, extent: tuple[float, float] | None = None,
            max_phi: float | None = None) -> BinMap:
    """The :class:`BinMap` of mask entry ``mc``; a q grid or window that misses the
    detector is a :class:`~saxs_pipeline.config.calibschema.CalibrationError` naming its path.
    ``extent`` (q min, max) and ``max_phi`` may be given by a caller that has the full
    sub-pixel maps (the operator build): their maxima are the original's grid definition,
    and taking them from the same maps keeps existing operators bit-identical."""
    ov = mc.oversampling
    qlo, qhi = q_extent(geometry, ov) if extent is None else extent
    wedges = _wedges(mc)
    if mc.phi_mode:
        if mc.q_stop > 0:
            _check_overlap(mc.q_start, mc.q_stop, qlo, qhi, f"$.Masks[{mc.index}].qStart",
                           "the Phi-mode window [qStart, qStop]")
        cx, cy = _corner_offsets(geometry, ov)
        rmax_mm = math.sqrt(max(cx[0] ** 2, cx[1] ** 2) + max(cy[0] ** 2, cy[1] ** 2))
        # The original's grid (r in mm: about 1 degree bins on a Pilatus 1M at PPRE 1).
        max_phi = _max_phi(geometry, ov) if max_phi is None else max_phi
        scale = rmax_mm / max_phi / mc.pixels_per_radial_element
        nb = int((max_phi + np.pi) * scale) + 1
        edges = np.arange(nb + 1, dtype=np.float64) / scale - np.pi
        return BinMap("Phi", edges, True, -np.pi, scale, False, (mc.q_start, mc.q_stop), wedges)
    edges, uniform, e0, per_bin = _radial(geometry, mc, qlo, qhi)
    linear = splitting(mc) == "linear"
    if mc.azimuth_bins is None:
        return BinMap("Radial", edges, uniform, e0, per_bin, linear, None, wedges)
    if int(mc.azimuth_bins) < 1:
        raise CalibrationError("calibration", f"$.Masks[{mc.index}].AzimuthBins",
                               f"a cake needs at least 1 azimuth bin, not {mc.azimuth_bins}")
    chi_edges = np.linspace(-180.0, 180.0, int(mc.azimuth_bins) + 1)
    return BinMap("Cake", edges, uniform, e0, per_bin, linear, None, wedges, chi_edges)


def azimuth_deg(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """chi in degrees, (-180, 180], of offsets ``dx``, ``dy`` (broadcast; module doc)."""
    return np.degrees(np.arctan2(-dy, dx))


def in_wedges(bm: BinMap, chi: np.ndarray) -> np.ndarray | None:
    """True where ``chi`` (degrees) lies in one of the wedges ([start, end), counter-
    clockwise, through 360 when it wraps); None without wedges (everything counts)."""
    if bm.wedges.shape[0] == 0:
        return None
    keep = np.zeros(chi.shape, dtype=bool)
    for start, end in bm.wedges:
        # Angles measured counter-clockwise from the wedge's start, in [0, 360).
        keep |= np.mod(chi - start, 360.0) < end - start
    return keep


def chi_index(bm: BinMap, chi: np.ndarray) -> np.ndarray:
    """The cake's azimuth bin of ``chi`` (degrees): equal bins over [-180, 180), chi =
    180 (the -x axis) in the first bin, as -180."""
    n = bm.n_chi
    k = np.floor((chi + 180.0) * (n / 360.0)).astype(np.int64)
    return np.mod(k, n)
