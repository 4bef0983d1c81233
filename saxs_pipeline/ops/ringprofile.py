"""What a powder ring's radial profile looks like in a sector, so that the bias of the
sector fit (:mod:`ringpoints`) can be measured on the model and taken off.

Two second-order effects of a ring's width move the maximum of its counts-per-pixel
profile inwards of the Bragg position, both ~1/radius:

* the powder shell: a ring's scattering is spread over a reciprocal-space shell of area
  ~q^2, so across the ring its counts per pixel carry a factor 1/q^2 ~ (r / (r + x))^2,
  which moves a ring of intrinsic width s0 inwards by ``2 s0^2 / r`` (0.14 px for the
  first AgBh ring at 834 mm);
* the beam's footprint: every point of the beam's cross-section draws the rings about its
  own centre, and a circle displaced by ``t`` meets the ray at azimuth phi at
  ``r + t_radial - t_across^2 / 2r``. A beam wider than high (the usual synchrotron beam,
  and the real Pilatus AgBh frame: rings 7 px wide at their sides, 3 px at top and bottom)
  so moves the top and bottom of a ring inwards by ``sigma_x^2 / 2r`` (0.17 px for its
  first ring); between the axes, where the displacement's radial and across parts are
  correlated, the same term skews the profile and a fit lands up to 0.1 px *outside*.

Neither depends on how the profile is fitted in a simple way, so the model's profiles are
fitted by the same estimator and the offset it finds is the bias.

The footprint is read off the rings' widths: it widens the ring at phi to
``S^2 = s0^2 + B_radial(phi)``, an ellipse ``a + b cos 2phi + c sin 2phi`` in phi. Its
long axis has variance ``2 hypot(b, c)``; its short axis is taken as point-like, so s0^2 is
the narrowest width the ring shows (the closest the frame comes to the intrinsic width).
That assumption errs on the safe side: a short axis of variance v moves the shift by
``1.5 v / r`` only, the same in every sector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["RingShape", "model_profiles", "ring_shape"]

# Gauss-Hermite nodes for a unit normal: the footprint's long axis, integrated exactly
# enough for profiles a few pixels wide
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(24)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


@dataclass(frozen=True)
class RingShape:
    """The intrinsic width^2 of a ring (px^2), the variance of the beam's footprint along
    its long axis (px^2; the short axis point-like) and that axis' azimuth (rad)."""

    intrinsic2: float
    beam2: float
    beam_axis: float


def ring_shape(phi: np.ndarray, widths: np.ndarray) -> RingShape:
    """The shape that explains the fitted Gaussian ``widths`` (px) of a ring's sectors at
    azimuths ``phi``. With fewer than 6 sectors, or sectors that cover too little of the
    ring to fix an ellipse, the ring is taken as isotropic with the width of its narrowest
    sectors (10th percentile)."""
    phi = np.asarray(phi, dtype=float)
    s2 = np.asarray(widths, dtype=float) ** 2
    design = np.stack([np.ones_like(phi), np.cos(2 * phi), np.sin(2 * phi)], axis=1)
    if s2.size < 6 or np.linalg.cond(design) > 5.0:
        return RingShape(float(np.percentile(s2, 10)) if s2.size else 0.0, 0.0, 0.0)
    a, b, c = _robust_lstsq(design, s2)
    m = math.hypot(b, c)
    return RingShape(max(a - m, 0.0), 2.0 * m, 0.5 * math.atan2(c, b))


def _robust_lstsq(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares, refitted once without the points beyond 3 robust sigmas (a sector
    whose window a gap or a neighbour's tail cut gives a width far off the others)."""
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    r = y - design @ coef
    keep = np.abs(r) <= 3.0 * 1.4826 * np.median(np.abs(r)) + 1e-12
    if keep.sum() >= design.shape[1] + 3:
        coef = np.linalg.lstsq(design[keep], y[keep], rcond=None)[0]
    return coef


def model_profiles(shape: RingShape, phi: np.ndarray, radius: float, x: np.ndarray) -> np.ndarray:
    """Counts per pixel (peak 1) across a ring of Bragg radius ``radius`` (px) at ``x`` px
    from it, in the sectors at azimuths ``phi``: a Gaussian of the intrinsic width times
    the powder shell's (r / (r + x))^2, averaged over the footprint's displacements."""
    s0 = math.sqrt(max(shape.intrinsic2, 0.09))  # a 0.3 px floor: no zero-width ring
    t = np.sqrt(shape.beam2) * _NODES  # displacements along the long axis
    rel = np.asarray(phi, dtype=float)[:, None] - shape.beam_axis
    along = t[None, :] * np.cos(rel)  # radial part
    across = t[None, :] * np.sin(rel)
    centre = along - across**2 / (2.0 * radius)  # where each displaced ring crosses the ray
    xr = x[None, None, :] - centre[:, :, None]  # position relative to the displaced ring
    ring = np.exp(-0.5 * (xr / s0) ** 2) * (radius / np.maximum(radius + xr, 1e-9)) ** 2
    prof = np.tensordot(ring, _WEIGHTS, axes=([1], [0]))
    return prof / np.max(prof, axis=1, keepdims=True)
