"""The beam centre from the rings themselves, with no starting geometry.

Every pixel on the flank of a ring has its intensity gradient along the radius, so the
line through it along its gradient passes (close to) the beam centre; so do the lines of
a diffuse SAXS halo. Lines from the strongest gradients vote into a coarse accumulator
that extends beyond the detector (a centre near or past a corner still collects the votes
of its partial rings); the best cell is then refined to sub-cell precision as the point
nearest, in least squares, to the lines that pass close to it.

Why it is robust:

* the image is log-compressed and median-filtered first, so a hot pixel (whose own
  gradients point at itself and would make a star of votes) disappears and weak outer
  rings count as much as the bright first one;
* gradients are taken only where the whole 5 x 5 neighbourhood is valid, so module gaps
  and masked pixels draw no edges;
* straight edges (a beam-stop arm, a shadow) send parallel lines that spread over a band
  instead of meeting in one cell.

A tilted detector makes its rings ellipses whose centres drift with angle; the vote then
lands near the inner rings' centre, which is what the following ring fits start from.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["CentreVote", "vote_centre"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CentreVote:
    """The voted centre in image coordinates (``u`` from the left, ``v`` from the top, px),
    the number of lines used and the fraction of them passing within 3 cells of it."""

    u: float
    v: float
    lines: int
    support: float


def _edge_lines(image: np.ndarray, valid: np.ndarray, pixel_mm: tuple[float, float], max_lines: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points (mm) and unit normals of the strongest gradients."""
    fill = float(np.median(image[valid])) if valid.any() else 0.0
    x = np.where(valid, image, fill).astype(np.float32)
    x = np.log1p(np.maximum(x, 0.0))
    x = ndimage.median_filter(x, size=3, mode="nearest")
    x = ndimage.gaussian_filter(x, 1.0, mode="nearest")
    psy, psx = pixel_mm
    gv = ndimage.sobel(x, axis=0) / psy
    gu = ndimage.sobel(x, axis=1) / psx
    usable = ndimage.binary_erosion(valid, iterations=2, border_value=0)
    mag = np.hypot(gu, gv)
    mag[~usable] = 0.0
    cand = np.flatnonzero(mag > 0)
    if cand.size == 0:
        return (np.zeros(0),) * 4
    thr = np.quantile(mag.flat[cand], 0.96)
    strong = cand[mag.flat[cand] >= thr]
    if strong.size > max_lines:
        strong = rng.choice(strong, size=max_lines, replace=False)
    rows, cols = np.divmod(strong, image.shape[1])
    m = mag.flat[strong]
    return (cols + 0.5) * psx, (rows + 0.5) * psy, gu.flat[strong] / m, gv.flat[strong] / m


def _nearest_point(px, py, nx, ny, weights) -> tuple[float, float]:
    """Least-squares point nearest to the lines through (px, py) along (nx, ny)."""
    # distance of (X, Y) from a line = |(X - px) ny - (Y - py) nx|
    a11 = np.sum(weights * ny * ny)
    a12 = -np.sum(weights * nx * ny)
    a22 = np.sum(weights * nx * nx)
    c = px * ny - py * nx
    b1 = np.sum(weights * ny * c)
    b2 = -np.sum(weights * nx * c)
    det = a11 * a22 - a12 * a12
    return (a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det


def vote_centre(image: np.ndarray, valid: np.ndarray, pixel_um: tuple[float, float] = (172.0, 172.0), *,
                max_lines: int = 6000, seed: int = 0) -> CentreVote | None:
    """The beam centre of a frame with rings or a diffuse halo, or None when the frame has
    no usable gradients. ``valid`` marks the pixels to use."""
    rng = np.random.default_rng(seed)
    psy, psx = (p * 1e-3 for p in pixel_um)
    rows, cols = image.shape
    px, py, nx, ny = _edge_lines(image, valid, (psy, psx), max_lines, rng)
    if px.size < 20:
        return None
    height, width = rows * psy, cols * psx
    margin = 0.5 * max(height, width)
    cell = max(height, width) / 200.0
    nu = int(math.ceil((width + 2 * margin) / cell))
    nv = int(math.ceil((height + 2 * margin) / cell))
    reach = math.hypot(width, height) + margin
    t = np.arange(-reach, reach, 0.7 * cell, dtype=np.float64)
    acc = np.zeros(nu * nv)
    for chunk in range(0, px.size, 500):
        sl = slice(chunk, chunk + 500)
        xs = px[sl, None] + nx[sl, None] * t[None, :]
        ys = py[sl, None] + ny[sl, None] * t[None, :]
        iu = np.floor((xs + margin) / cell).astype(np.int64)
        iv = np.floor((ys + margin) / cell).astype(np.int64)
        inside = (iu >= 0) & (iu < nu) & (iv >= 0) & (iv < nv)
        acc += np.bincount((iv * nu + iu)[inside], minlength=nu * nv)
    acc = ndimage.gaussian_filter(acc.reshape(nv, nu), 1.0)
    kv, ku = np.unravel_index(int(np.argmax(acc)), acc.shape)
    cx, cy = (ku + 0.5) * cell - margin, (kv + 0.5) * cell - margin
    radius = 3.0 * cell
    weights = np.ones_like(px)
    near = np.zeros(px.size, dtype=bool)
    for _ in range(4):
        dist = np.abs((cx - px) * ny - (cy - py) * nx)
        near = dist < radius
        if near.sum() < 10:
            break
        cx, cy = _nearest_point(px[near], py[near], nx[near], ny[near], weights[near])
        radius = max(radius * 0.5, 2.0 * max(psx, psy))
    support = float(near.mean())
    log.debug("voted centre u=%.1f v=%.1f px from %d lines, %.0f%% near", cx / psx, cy / psy, px.size,
              100 * support)
    return CentreVote(u=float(cx / psx), v=float(cy / psy), lines=int(px.size), support=support)
