"""A detector mask made from the frames themselves, with the cause of every masked pixel.

Causes, in the order they win when several apply:

* ``gap`` -- invalid pixels on rows/columns that are (nearly) all invalid: module gaps;
* ``invalid`` -- any other pixel that is negative, not finite or the unsigned type's
  maximum in some frame (Pilatus writes -1/-2, EIGER/PILATUS4 2^32-1);
* ``detector`` -- flagged by the detector's own pixel mask (NeXus ``pixel_mask``);
* ``beam stop`` -- the connected shadow around the beam centre, arm included (bridged
  across module gaps), grown by a pixel or two for its penumbra;
* ``shadow`` -- other large regions far below the scattering level at their angle (the
  edge of a flight tube, a window frame);
* ``hot`` -- far above the azimuthal median at its angle *and* above its own neighbours
  (so a spot of a spotty ring or a streak, which spans several pixels, is kept);
* ``dead`` -- zero in every frame where the azimuthal level says zero is implausible
  (at least 10 expected counts: below that a zero is just Poisson).

"Far below the level" compares a box-smoothed image (so single Poisson lows do not count)
with the level at each angle: the 90th percentile of its ring of pixels (robust to
shadows covering most of the ring), then the running median over +-25 px of angle, which
the narrow peak of a calibrant ring or the few rings across a shadow's edge cannot move.
The rings inside the beam stop's disk, where every pixel is shadowed, take the level of
the first ring fully outside it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from saxs_pipeline.ops import geometry as geo

__all__ = ["CAUSES", "DataMask", "invalid_values", "mask_from_frames"]

GOOD, GAP, INVALID, DETECTOR, BEAMSTOP, SHADOW, HOT, DEAD = range(8)
CAUSES = {GAP: "module gap", INVALID: "invalid value", DETECTOR: "detector mask", BEAMSTOP: "beam stop",
          SHADOW: "shadow", HOT: "hot", DEAD: "dead"}


@dataclass(frozen=True)
class DataMask:
    """``valid`` (True = use the pixel), ``cause`` per pixel (0 = good, see ``CAUSES``),
    the beam centre used (image coordinates, px) and the number of pixels per cause."""

    valid: np.ndarray
    cause: np.ndarray
    centre_uv: tuple[float, float] | None
    counts: dict[str, int]


def invalid_values(frame: np.ndarray) -> np.ndarray:
    """Pixels with no measurement: not finite, negative, or the unsigned type's maximum."""
    bad = np.zeros(frame.shape, dtype=bool)
    if frame.dtype.kind == "f":
        bad |= ~np.isfinite(frame)
    if frame.dtype.kind in "fi":
        bad |= frame < 0
    if frame.dtype.kind == "u":
        bad |= frame == np.iinfo(frame.dtype).max
    return bad


def _gaps(invalid: np.ndarray, fraction: float = 0.9) -> np.ndarray:
    rows = invalid.mean(axis=1) >= fraction
    cols = invalid.mean(axis=0) >= fraction
    return invalid & (rows[:, None] | cols[None, :])


def _bin_quantiles(bins: np.ndarray, values: np.ndarray, nbins: int, qs: Sequence[float]) -> list[np.ndarray]:
    """Per-bin quantiles (NaN for empty bins) by one sort of ``bin + scaled value`` (a
    single float key sorts about twice as fast as a two-key lexsort)."""
    v = values.astype(np.float64)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    key = bins + (v - lo) * (0.999 / (hi - lo if hi > lo else 1.0))
    order = np.argsort(key)
    v = v[order]
    counts = np.bincount(bins, minlength=nbins)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    last = np.maximum(counts - 1, 0)
    out = []
    for q in qs:
        idx = np.minimum(starts + np.round(q * last).astype(np.int64), max(v.size - 1, 0))
        out.append(np.where(counts > 0, v[idx] if v.size else np.nan, np.nan))
    return out


def _radius(shape, geometry: geo.Geometry | None, centre_uv) -> np.ndarray:
    """Radial coordinate (px) per pixel: ``D tan 2theta / pixel`` with a geometry (so tilted
    rings are circles of it), the distance from ``centre_uv`` without."""
    rows, cols = shape
    if geometry is not None:
        from saxs_pipeline.ops.ringmodel import Frame, Params, two_theta_at

        frame = Frame(shape, tuple(geometry.pixel_size_um))
        p = Params.from_geometry(geometry)
        vv, uu = np.mgrid[0:rows, 0:cols]
        tth = two_theta_at(uu + 0.5, vv + 0.5, p, frame)
        return geometry.distance_mm * np.tan(tth) / frame.mean_pixel_mm
    cu, cv = centre_uv
    return np.hypot(np.arange(cols)[None, :] + 0.5 - cu, np.arange(rows)[:, None] + 0.5 - cv)


def _neighbour_median(total: np.ndarray, ok: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Median of the valid 8 neighbours of the flat pixel indices ``idx``."""
    rows, cols = total.shape
    r, c = np.divmod(idx, cols)
    vals = []
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == dc == 0:
                continue
            rr, cc = np.clip(r + dr, 0, rows - 1), np.clip(c + dc, 0, cols - 1)
            inside = (r + dr >= 0) & (r + dr < rows) & (c + dc >= 0) & (c + dc < cols) & ok[rr, cc]
            vals.append(np.where(inside, total[rr, cc], np.nan))
    return np.nanmedian(np.stack(vals), axis=0)


def _background_level(rho_bin: np.ndarray, smooth: np.ndarray, use: np.ndarray, nbins: int,
                      window: int = 25) -> np.ndarray:
    """Per radial bin: the level a pixel is compared with to be called shadowed."""
    (p90,) = _bin_quantiles(rho_bin[use], smooth[use], nbins, [0.9])
    known = np.isfinite(p90)
    if not known.any():
        return np.zeros(nbins)
    typical = np.nanmedian(p90)
    bright = np.flatnonzero(known & (p90 >= 0.2 * typical))
    first = int(bright[0]) if bright.size else 0
    level = p90.copy()
    level[:first] = np.nan
    padded = np.pad(level, window, constant_values=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # windows with no pixels at all
        # a running median: ring peaks and the beam stop's edge are too narrow to move it
        ref = np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, 2 * window + 1), axis=1)
    inner = ref[min(first + window, nbins - 1)]
    ref[:first + window] = inner if np.isfinite(inner) else typical
    return np.nan_to_num(ref, nan=0.0)


def mask_from_frames(frames: np.ndarray | Sequence[np.ndarray], *, detector_mask: np.ndarray | None = None,
                     geometry: geo.Geometry | None = None, centre_uv: tuple[float, float] | None = None,
                     hot_sigma: float = 8.0, low_fraction: float = 0.3, smooth_px: int = 7, grow_px: int = 2,
                     min_shadow_px: int = 50, shadows: bool = True) -> DataMask:
    """The mask of one or more frames of the same detector.

    The radial coordinate comes from ``geometry`` when given, else from ``centre_uv``
    (image coordinates), else from the beam centre voted on the summed frame. Raises
    ``ValueError`` when the frames' shapes differ from each other or from ``detector_mask``."""
    stack = [np.asarray(f) for f in (frames if isinstance(frames, Sequence) else list(frames))]
    if not stack:
        raise ValueError("no frames given")
    shape = stack[0].shape
    for i, f in enumerate(stack):
        if f.shape != shape:
            raise ValueError(f"frame {i} has shape {f.shape[0]} x {f.shape[1]}, frame 0 {shape[0]} x {shape[1]}")
    if detector_mask is not None and detector_mask.shape != shape:
        raise ValueError(f"the frames' shape {shape[0]} x {shape[1]} differs from the detector mask's "
                         f"{detector_mask.shape[0]} x {detector_mask.shape[1]}")
    invalid = np.zeros(shape, dtype=bool)
    zero = np.ones(shape, dtype=bool)
    total = np.zeros(shape)
    for f in stack:
        bad = invalid_values(f)
        invalid |= bad
        zero &= f == 0
        total += np.where(bad, 0.0, f)
    gap = _gaps(invalid)
    det = np.zeros(shape, dtype=bool) if detector_mask is None else detector_mask.astype(bool) & ~invalid
    ok = ~invalid & ~det
    if geometry is None and centre_uv is None:
        from saxs_pipeline.ops.beamcentre import vote_centre

        vote = vote_centre(total, ok & ~zero)
        centre_uv = (vote.u, vote.v) if vote is not None else (shape[1] / 2, shape[0] / 2)
    if geometry is not None:
        centre_uv = (geometry.beam_center_x, shape[0] - geometry.beam_center_y)
    rho = _radius(shape, geometry, centre_uv)
    nbins = int(np.nanmax(rho)) + 2
    rho_bin = np.clip(rho.astype(np.int64), 0, nbins - 1)
    stats = ok & ~zero
    med, p25, p75 = _bin_quantiles(rho_bin[stats], total[stats], nbins, [0.5, 0.25, 0.75])
    level, spread = med[rho_bin], (p75 - p25)[rho_bin] / 1.349
    # hot: far above the azimuthal level, by counting noise or the ring's own spread
    noise = np.maximum(np.nan_to_num(spread), np.sqrt(np.maximum(np.nan_to_num(level), 1.0)))
    cand = np.flatnonzero((ok & (total > np.nan_to_num(level) + hot_sigma * noise)).ravel())
    hot = np.zeros(shape, dtype=bool)
    if cand.size:
        nb = _neighbour_median(total, ok & ~zero, cand)
        alone = total.flat[cand] > np.nan_to_num(nb) + hot_sigma * np.sqrt(np.maximum(np.nan_to_num(nb), 1.0))
        hot.flat[cand[alone]] = True
    dead = zero & ok & (np.nan_to_num(level) * len(stack) >= 10.0)
    beamstop = np.zeros(shape, dtype=bool)
    shadow = np.zeros(shape, dtype=bool)
    if shadows:
        use = ok & ~hot  # zeros count as zeros: a shadow is mostly zeros
        w = use.astype(float)
        num = ndimage.uniform_filter(np.where(use, total, 0.0), smooth_px, mode="constant")
        den = ndimage.uniform_filter(w, smooth_px, mode="constant")
        smooth = np.divide(num, den, out=np.zeros(shape), where=den > 0.2)
        ref = _background_level(rho_bin, smooth, use & (den > 0.2), nbins)[rho_bin]
        low = ok & (den > 0.2) & (smooth < low_fraction * ref)
        # single pixels clearly in shadow by their own counts (beyond Poisson doubt): they
        # extend a shadow where its smoothed edge stops short, e.g. where a bright ring
        # crosses the beam stop's arm
        cut = low_fraction * ref
        dark = ok & (total < cut - 2.0 * np.sqrt(cut))
        beamstop, shadow = _shadow_regions(low, dark, gap, centre_uv, min_shadow_px, grow_px, ok)
    cause = np.zeros(shape, dtype=np.uint8)
    for code, m in ((DEAD, dead), (HOT, hot), (SHADOW, shadow), (BEAMSTOP, beamstop), (DETECTOR, det),
                    (INVALID, invalid & ~gap), (GAP, gap)):
        cause[m] = code
    counts = {name: int((cause == code).sum()) for code, name in CAUSES.items()}
    return DataMask(valid=cause == GOOD, cause=cause, centre_uv=centre_uv, counts=counts)


def _shadow_regions(low: np.ndarray, dark: np.ndarray, gap: np.ndarray, centre_uv, min_px: int, grow: int,
                    ok: np.ndarray):
    """Split the low pixels into the beam stop (the component at the centre) and shadows;
    each grows by ``grow`` px and takes the ``dark`` pixels within ``grow + 3`` px of it."""
    shape = low.shape
    span = _gap_width(gap)
    bridge = gap & ndimage.binary_dilation(low, iterations=span // 2 + 2) if span else np.zeros(shape, bool)
    labels, n = ndimage.label(low | bridge, structure=np.ones((3, 3)))
    beamstop = np.zeros(shape, dtype=bool)
    shadow = np.zeros(shape, dtype=bool)
    if n == 0:
        return beamstop, shadow
    sizes = np.bincount(labels[low], minlength=n + 1)
    cu, cv = centre_uv
    stop_label = 0
    if 0 <= cv < shape[0] and 0 <= cu < shape[1]:
        # the component at the centre, or the nearest within 3 % of the detector's size
        lv, lu = np.nonzero(labels)
        if lv.size:
            d = np.hypot(lu + 0.5 - cu, lv + 0.5 - cv)
            k = int(np.argmin(d))
            if d[k] <= max(0.03 * max(shape), 5.0):
                stop_label = int(labels[lv[k], lu[k]])
    for lab in range(1, n + 1):
        if lab == stop_label:
            beamstop |= (labels == lab) & low
        elif sizes[lab] >= min_px:
            shadow |= (labels == lab) & low
    def extend(region: np.ndarray) -> np.ndarray:
        if not region.any():
            return region
        near = ndimage.binary_dilation(region, iterations=grow + 3) & dark
        grown = ndimage.binary_dilation(region, iterations=grow) if grow else region
        return (grown | near) & ok

    beamstop = extend(beamstop)
    shadow = extend(shadow) & ~beamstop
    return beamstop, shadow


def _gap_width(gap: np.ndarray) -> int:
    """Widest run of gap rows or columns."""
    best = 0
    for line in (gap.all(axis=1), gap.all(axis=0)):
        run = 0
        for x in line:
            run = run + 1 if x else 0
            best = max(best, run)
    return int(best)
