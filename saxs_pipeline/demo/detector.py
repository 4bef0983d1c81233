"""The demo's detector and what all its frames share: a Pilatus 1M-like module layout
with gaps, a beam stop with its arm, a few bad pixels, and the per-pixel q and weight
that turn a 1-D intensity profile into Poisson counts (:mod:`saxs_pipeline.demo.beamtime`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saxs_pipeline.config.calibration import Calibration, Geometry
from saxs_pipeline.ops.geometry import polarization_factor, subpixel_offsets, two_theta_q

__all__ = ["N_BAD_PIXELS", "DetectorLayout", "ScatteringModel", "detector_layout"]

MODULE_SHAPE = (195, 487)  # rows, columns of one Pilatus module
MODULE_PITCH = (212, 494)  # module size plus the 17-row and 7-column gaps
BEAMSTOP_RADIUS_PX = 15.0
BEAMSTOP_ARM_HALF_WIDTH_PX = 4
BEAMSTOP_TRANSMISSION = 2e-3
N_BAD_PIXELS = 12
_Q_GRID_POINTS = 8192


@dataclass(frozen=True)
class DetectorLayout:
    """Boolean pixel classes of the demo detector (True = pixel is of that class)."""

    gaps: np.ndarray
    bad: np.ndarray
    beamstop: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return ~(self.gaps | self.bad | self.beamstop)


def _module_gaps(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = shape
    in_row = (np.arange(rows) % MODULE_PITCH[0]) < MODULE_SHAPE[0]
    in_col = (np.arange(cols) % MODULE_PITCH[1]) < MODULE_SHAPE[1]
    return ~(in_row[:, None] & in_col[None, :])


def detector_layout(geometry: Geometry, seed: int = 0) -> DetectorLayout:
    """Module gaps (Pilatus 1M: 5 x 2 modules of 195 x 487 px), a circular beam stop with
    a vertical arm up to the top edge, and a few bad pixels placed by ``seed``."""
    shape = geometry.image_shape
    gaps = _module_gaps(shape)
    dx, dy = subpixel_offsets(geometry, 1)
    px_y, px_x = (s * 1e-3 for s in geometry.pixel_size_um)
    x, y = dx / px_x, dy / px_y  # pixel-centre offsets from the beam, in pixels
    beamstop = (x[None, :] ** 2 + y[:, None] ** 2) <= BEAMSTOP_RADIUS_PX**2
    # y grows downwards, so the arm is every row above the beam (y <= 0)
    beamstop |= (np.abs(x)[None, :] <= BEAMSTOP_ARM_HALF_WIDTH_PX) & (y[:, None] <= 0)
    rng = np.random.default_rng([seed, 7])
    candidates = np.flatnonzero(~(gaps | beamstop))
    bad = np.zeros(shape, dtype=bool)
    bad.flat[rng.choice(candidates, size=min(N_BAD_PIXELS, candidates.size), replace=False)] = True
    return DetectorLayout(gaps, bad, beamstop)


class ScatteringModel:
    """What every frame of one demo set shares: the q of every pixel (as an index into a
    fine 1-D q grid, so a frame only evaluates its profile on that grid), the per-pixel
    weight (polarization, beam-stop shadow) and the detector layout."""

    def __init__(self, cal: Calibration, seed: int) -> None:
        geo = cal.geometry
        dx, dy = subpixel_offsets(geo, 1)
        q, _ = two_theta_q(dx[None, :], dy[:, None], geo)
        self.q_grid = np.linspace(0.0, float(q.max()) * 1.0001, _Q_GRID_POINTS)
        step = self.q_grid[1] - self.q_grid[0]
        self.index = np.rint(q / step).astype(np.intp)
        weight = np.ones(geo.image_shape, dtype=np.float64)
        if cal.polarization is not None:
            weight *= polarization_factor(geo, cal.polarization)
        self.layout = detector_layout(geo, seed)
        weight[self.layout.beamstop] *= BEAMSTOP_TRANSMISSION
        self.weight = weight
        self.gap_pixels = np.flatnonzero(self.layout.gaps)
        self.bad_pixels = np.flatnonzero(self.layout.bad)
        self.shape = geo.image_shape

    def counts(self, profile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Poisson counts for an expected-intensity ``profile`` on ``q_grid``, with the
        Pilatus markers for gaps (-1) and bad pixels (-2)."""
        lam = profile[self.index]
        lam *= self.weight
        image = rng.poisson(lam).astype(np.int32)
        image.flat[self.gap_pixels] = -1
        image.flat[self.bad_pixels] = -2
        return image
