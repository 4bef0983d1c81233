"""Geometry from a calibrant frame with no starting geometry (issue 23).

The steps, each its own module:

1. usable pixels: the detector's invalid ones out (negative, not finite, the unsigned
   type's maximum, a given mask), and -- when given -- a data mask (:mod:`datamask`);
2. the beam centre by gradient votes (:mod:`beamcentre`);
3. rings as circles about it (:mod:`ringfind`);
4. their calibrant reflections from the radius ratios (:mod:`ringorders`); the
   distance follows, and the beam centre is the ring centres extrapolated to 2theta = 0
   (a tilt moves ring centres by ~ tan^2 2theta);
5. refinement on the circle points, then rounds of sub-pixel extraction of *every*
   calibrant ring the current geometry predicts in view (:mod:`ringpoints`, in the
   model's own 2theta coordinate, so tilted rings are straight in their profiles) and
   robust refinement (:mod:`georefine`), until the parameters move by less than a
   twentieth of their sigma;
6. checks that refuse a result that cannot be trusted (:class:`CalibrationRefused`).

The tilt is refined when at least two rings are used: with one ring a tilt and a beam
centre shift make the same ellipse to first order, so the tilt is held at zero and the
result says so. The wavelength is refined only when asked and when at least three rings
reach 2theta >= 10 deg (below that it is interchangeable with the distance).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from saxs_pipeline.ops.beamcentre import vote_centre
from saxs_pipeline.ops.calibrants import Calibrant
from saxs_pipeline.ops.calibresult import (
    CalibrationRefused,
    CalibrationResult,
    DroppedRing,
    RingReport,
)
from saxs_pipeline.ops.datamask import invalid_values, mask_from_frames
from saxs_pipeline.ops.georefine import Refinement, RingPointSet, refine, tilt_sigma
from saxs_pipeline.ops.ringfind import FoundRing, find_rings
from saxs_pipeline.ops.ringmodel import Frame, Params
from saxs_pipeline.ops.ringorders import OrderError, assign_orders, describe
from saxs_pipeline.ops.ringsample import Pixels, extract_rings

__all__ = ["CalibrationOptions", "calibrate", "refine_on_frame", "usable_pixels"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationOptions:
    """Knobs with defaults that suit SAXS/WAXS calibrant frames.

    ``refine_tilt``: None = when two or more rings are used. ``max_rms_px``: a fit whose
    rms residual exceeds this is refused (a right geometry on a calibrant gives a few
    tenths of a pixel). ``min_points``: a ring with fewer sector points is dropped.
    ``distance_range_mm``: plausible distances for the order assignment. ``data_mask``:
    mask hot pixels, the beam stop and shadows found in the frame (:mod:`datamask`)."""

    refine_tilt: bool | None = None
    refine_wavelength: bool = False
    max_rms_px: float = 1.0
    min_points: int = 6
    rounds: int = 4
    distance_range_mm: tuple[float, float] = (20.0, 50_000.0)
    arc_px: float = 20.0
    data_mask: bool = True


def usable_pixels(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Pixels with a measurement: finite, not negative (Pilatus gaps and bad pixels are
    -1/-2), not the unsigned type's maximum (EIGER/PILATUS4 gaps), and valid in ``valid``."""
    if valid is not None and valid.shape != image.shape:
        raise CalibrationRefused(f"the frame's shape {image.shape[0]} x {image.shape[1]} differs from the "
                                 f"mask's {valid.shape[0]} x {valid.shape[1]}")
    ok = ~invalid_values(image)
    return ok if valid is None else ok & valid.astype(bool)


def _coverage_profile(usable: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Fraction of each 1-px circle about ``centre`` that lies on usable pixels."""
    vv, uu = np.nonzero(usable)
    r = np.hypot(uu + 0.5 - centre[0], vv + 0.5 - centre[1])
    counts = np.bincount(r.astype(np.int64))
    return counts / (2 * math.pi * (np.arange(counts.size) + 0.5))


def _start(rings: list[FoundRing], match, tth: list[float], scale_px: float, frame: Frame,
           wavelength_a: float) -> Params:
    """Beam centre as the ring centres extrapolated to 2theta = 0, weighted by their points."""
    used = [(g, tth[j]) for g, j in zip(rings, match, strict=True) if j is not None]
    t2 = np.array([math.tan(t) ** 2 for _, t in used])
    w = np.array([g.pu.size / (g.rms + 0.05) for g, _ in used])
    cu = np.array([g.u for g, _ in used])
    cv = np.array([g.v for g, _ in used])
    if len(used) >= 2 and np.ptp(t2) > 0:
        a = np.stack([np.ones_like(t2), t2], axis=1) * np.sqrt(w)[:, None]
        u0 = float(np.linalg.lstsq(a, cu * np.sqrt(w), rcond=None)[0][0])
        v0 = float(np.linalg.lstsq(a, cv * np.sqrt(w), rcond=None)[0][0])
    else:
        u0, v0 = float(np.average(cu, weights=w)), float(np.average(cv, weights=w))
    return Params(y=frame.shape[0] - v0, x=u0, distance_mm=scale_px * frame.mean_pixel_mm, a=0.0, b=0.0,
                  wavelength_a=wavelength_a)


def calibrate(image: np.ndarray, calibrant: Calibrant, wavelength_a: float, pixel_um: tuple[float, float], *,
              valid: np.ndarray | None = None, options: CalibrationOptions = CalibrationOptions()
              ) -> CalibrationResult:
    """Calibrate a detector on a calibrant frame; raises :class:`CalibrationRefused`.

    ``image``: the frame (several frames summed by the caller); ``valid``: pixels to use
    (a detector mask or one from :func:`saxs_pipeline.ops.datamask.mask_from_frames`)."""
    t0 = time.perf_counter()
    image = np.asarray(image)
    usable = usable_pixels(image, valid)
    frame = Frame(tuple(image.shape), tuple(float(p) for p in pixel_um))
    vote = vote_centre(image, usable, frame.pixel_um)
    if vote is None:
        raise CalibrationRefused("no rings found: the frame has no intensity edges to locate a beam centre")
    if options.data_mask:
        # hot pixels, the beam stop and shadows out before any profile is fitted: a shadow
        # inside a ring's window pulls its sector fits
        usable &= mask_from_frames([np.where(usable, image, -1)], centre_uv=(vote.u, vote.v)).valid
    rings = find_rings(image, usable, (vote.u, vote.v))
    if not rings:
        raise CalibrationRefused(f"no rings found about the voted beam centre (X {vote.u:.1f}, "
                                 f"Y {image.shape[0] - vote.v:.1f} px)")
    centre = (rings[0].u, rings[0].v)
    cover = _coverage_profile(usable, centre)

    def seen(r: float) -> bool:
        k = int(r)
        return 3.0 <= r and k < cover.size and cover[max(k - 1, 0):k + 2].mean() >= 0.25

    lo, hi = options.distance_range_mm
    radii = np.array([g.radius for g in rings])
    try:
        orders = assign_orders(radii, calibrant, wavelength_a, seen=seen,
                               scale_range=(lo / frame.mean_pixel_mm, hi / frame.mean_pixel_mm))
    except OrderError as exc:
        raise CalibrationRefused(str(exc)) from None
    visible = calibrant.visible(wavelength_a)
    tth = [t for _, t in visible]
    start = _start(rings, orders.reflection, tth, orders.scale_px, frame, wavelength_a)
    # first refinement on the circle points (the rings' own centres carry the tilt)
    d_list = np.array([r.d_a for r, _ in visible])
    pts = RingPointSet(
        u=np.concatenate([g.pu for g, j in zip(rings, orders.reflection, strict=True) if j is not None]),
        v=np.concatenate([g.pv for g, j in zip(rings, orders.reflection, strict=True) if j is not None]),
        ring=np.concatenate([np.full(g.pu.size, j) for g, j in zip(rings, orders.reflection, strict=True)
                             if j is not None]),
        sigma=np.concatenate([np.maximum(g.ps, 0.02) for g, j in zip(rings, orders.reflection, strict=True)
                              if j is not None]),
        d_a=d_list)
    n_rings = sum(j is not None for j in orders.reflection)
    tilt = options.refine_tilt if options.refine_tilt is not None else n_rings >= 2
    first = refine(pts, start, frame, tilt=tilt)
    width = float(np.median([g.width for g in rings]))
    labels = [visible[j][0].label if j is not None else "?" for j in orders.reflection]
    result = refine_on_frame(image, usable, calibrant, first.params, frame, options=options, width_px=width,
                             found=describe(radii), matched=labels)
    return _with_time(result, time.perf_counter() - t0)


def _with_time(r: CalibrationResult, seconds: float) -> CalibrationResult:
    return replace(r, seconds=seconds)


def refine_on_frame(image: np.ndarray, usable: np.ndarray, calibrant: Calibrant, start: Params, frame: Frame, *,
                    options: CalibrationOptions = CalibrationOptions(), width_px: float = 1.5,
                    found: str = "", matched: list[str] | None = None) -> CalibrationResult:
    """Rounds of ring extraction and refinement from a geometry that is already close
    (within a few pixels): the second half of :func:`calibrate`, also usable on its own to
    re-fit a frame near a known geometry."""
    t0 = time.perf_counter()
    pix = Pixels.of(image, usable)
    p = start
    notes: list[str] = []
    ref: Refinement | None = None
    extraction = None
    for _ in range(options.rounds):
        extraction = extract_rings(pix, p, frame, calibrant, width_px=width_px, arc_px=options.arc_px,
                                   min_points=options.min_points)
        n_rings = len(extraction.used)
        if n_rings == 0:
            raise CalibrationRefused(f"no rings found: none of the {calibrant.name} rings this geometry "
                                     f"predicts shows on the frame ({found or 'no rings detected'})")
        tilt = options.refine_tilt if options.refine_tilt is not None else n_rings >= 2
        wave = options.refine_wavelength and _wavelength_ok(extraction, calibrant.name)
        new = refine(extraction.points, p, frame, tilt=tilt, wavelength=wave)
        moved = _moved(p, new)
        p, ref = new.params, new
        if moved < 0.05:
            break
    assert ref is not None and extraction is not None
    if ref.free.count("a") == 0:
        notes.append("tilt held at 0: one ring cannot separate a tilt from a beam-centre shift")
    if options.refine_wavelength and "wavelength_a" not in ref.free:
        notes.append("wavelength held fixed")
    rings, dropped = _ring_reports(extraction, ref, p, frame)
    if ref.rms_px > options.max_rms_px:
        orders = ", ".join(r.label for r in rings)
        head = f"{found}; " if found else ""
        raise CalibrationRefused(f"{head}{'they match ' if found else ''}{calibrant.name} orders {orders} but the "
                                 f"fit's rms is {ref.rms_px:.1f} px (limit {options.max_rms_px:g} px)")
    return CalibrationResult(
        geometry=p.geometry(frame), uncertainty=_uncertainty(ref), rings=tuple(rings), dropped=tuple(dropped),
        rms_px=ref.rms_px, chi2_red=ref.chi2_red, calibrant=calibrant.name, calibrant_source=calibrant.source,
        free=ref.free, covariance=ref.covariance, seconds=time.perf_counter() - t0, notes=tuple(notes))


def _wavelength_ok(extraction, name: str) -> bool:
    t = sorted(extraction.two_theta[k] for k in extraction.used)
    if len(t) < 3 or math.degrees(t[-1]) < 10.0:
        raise CalibrationRefused(
            f"refining the wavelength needs at least 3 {name} rings reaching 2theta >= 10 deg; this frame has "
            f"{len(t)} up to {math.degrees(t[-1]) if t else 0:.1f} deg (the wavelength would trade off against "
            "the distance)")
    return True


def _moved(old: Params, new: Refinement) -> float:
    """Largest parameter change in units of its sigma."""
    worst = 0.0
    for i, n in enumerate(new.free):
        s = math.sqrt(max(new.covariance[i, i], 1e-30))
        worst = max(worst, abs(getattr(new.params, n) - getattr(old, n)) / s)
    return worst


def _uncertainty(ref: Refinement) -> dict:
    st, sr = tilt_sigma(ref)
    return {"BeamCenter": [ref.sigma("y"), ref.sigma("x")], "DedectorDistanceMM": ref.sigma("distance_mm"),
            "TiltAngleDeg": st, "TiltRotDeg": sr, "Wavelength": ref.sigma("wavelength_a")}


def _ring_reports(extraction, ref: Refinement, p: Params, frame: Frame):
    rings, dropped = [], list(extraction.dropped)
    pts = extraction.points
    for k in extraction.used:
        sel = pts.ring == k
        keep = sel & ref.inlier
        rms = float(np.sqrt(np.mean(ref.residual_px[keep] ** 2))) if keep.any() else float("nan")
        refl = extraction.reflections[k]
        rings.append(RingReport(label=refl.label, d_a=refl.d_a, two_theta_deg=math.degrees(extraction.two_theta[k]),
                                radius_px=extraction.radius_px[k], points=int(sel.sum()), used=int(keep.sum()),
                                rms_px=rms))
    return rings, [DroppedRing(r.label, r.d_a, why) for r, why in dropped]
