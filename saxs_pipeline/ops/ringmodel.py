"""The forward model of a calibration: where a cone of given 2theta meets the detector.

Same geometry as :mod:`saxs_pipeline.ops.geometry` (FIT2D's convention), written for
scattered points instead of the pixel grid. Points are in *image coordinates*: ``u`` from
the left edge and ``v`` from the top edge, in pixels, so pixel (row i, column j) has its
centre at ``(u, v) = (j + 0.5, i + 0.5)``; FIT2D's beam centre ``[Y, X]`` is
``(u, v) = (X, rows - Y)``.

The tilt is carried as the two coefficients ``a = sin(tilt) cos(rot)`` and
``b = -sin(tilt) sin(rot)`` of :func:`~saxs_pipeline.ops.geometry.tilt_projection`: they
are smooth at zero tilt, where the rotation angle is undefined, which keeps a least-squares
fit well behaved for an untilted detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from saxs_pipeline.ops import geometry as geo

__all__ = ["Frame", "Params", "azimuth", "radial_scale", "ray_points", "two_theta_at"]


@dataclass(frozen=True)
class Frame:
    """What a calibration keeps fixed: the image shape (rows, cols) and pixel size (y, x) um."""

    shape: tuple[int, int]
    pixel_um: tuple[float, float]

    @property
    def pixel_mm(self) -> tuple[float, float]:
        return self.pixel_um[0] * 1e-3, self.pixel_um[1] * 1e-3

    @property
    def mean_pixel_mm(self) -> float:
        return 0.5e-3 * (self.pixel_um[0] + self.pixel_um[1])


@dataclass(frozen=True)
class Params:
    """Free parameters: beam centre in FIT2D's convention (Y from the bottom, X), distance
    (mm, sample to beam centre along the beam, FIT2D's), tilt coefficients a, b and the
    wavelength (Angstrom)."""

    y: float
    x: float
    distance_mm: float
    a: float
    b: float
    wavelength_a: float

    @classmethod
    def from_geometry(cls, g: geo.Geometry) -> Params:
        a, b = geo.tilt_projection(g)
        return cls(g.beam_center_y, g.beam_center_x, g.distance_mm, a, b, g.wavelength_a)

    def geometry(self, frame: Frame) -> geo.Geometry:
        tilt, rot = self.tilt_deg()
        return geo.Geometry(
            beam_center_y=float(self.y), beam_center_x=float(self.x), distance_mm=float(self.distance_mm),
            pixel_size_um=tuple(float(p) for p in frame.pixel_um), image_shape=tuple(frame.shape),
            tilt_angle_deg=tilt, tilt_rot_deg=rot, wavelength_a=float(self.wavelength_a))

    def tilt_deg(self) -> tuple[float, float]:
        """(TiltAngleDeg >= 0, TiltRotDeg in (-180, 180]); rot is 0 at zero tilt."""
        s = math.hypot(self.a, self.b)
        if s == 0.0:
            return 0.0, 0.0
        return math.degrees(math.asin(min(s, 1.0))), math.degrees(math.atan2(-self.b, self.a))

    def centre_uv(self, frame: Frame) -> tuple[float, float]:
        return self.x, frame.shape[0] - self.y


def _offsets(u, v, p: Params, frame: Frame):
    psy, psx = frame.pixel_mm
    return (np.asarray(u) - p.x) * psx, (np.asarray(v) - frame.shape[0] + p.y) * psy


def two_theta_at(u, v, p: Params, frame: Frame) -> np.ndarray:
    """2theta (rad) at image points ``(u, v)``: the formula of ``geometry.two_theta_q``."""
    dx, dy = _offsets(u, v, p, frame)
    h = p.a * dx + p.b * dy
    perp2 = np.maximum(dx * dx + dy * dy - h * h, 0.0)
    return np.arctan2(np.sqrt(perp2), p.distance_mm + h)


def azimuth(u, v, p: Params, frame: Frame) -> np.ndarray:
    """Azimuth (rad, in [-pi, pi)) about the beam centre in mm space: ``angle(dx + i dy)``,
    the convention of ``geometry`` (dy grows downwards on screen)."""
    dx, dy = _offsets(u, v, p, frame)
    return np.arctan2(dy, dx)


def _ray(phi, two_theta, p: Params):
    k = p.a * np.cos(phi) + p.b * np.sin(phi)
    c = np.sqrt(np.maximum(1.0 - k * k, 0.0))
    t = np.tan(two_theta)
    den = c - k * t
    return k, c, t, den


def ray_points(two_theta, phi, p: Params, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """Image points ``(u, v)`` at azimuth ``phi`` whose 2theta is ``two_theta``.

    Along the ray ``(dx, dy) = r (cos phi, sin phi)`` the tilt term is ``h = r k`` with
    ``k = a cos phi + b sin phi``, so ``tan 2theta = r sqrt(1-k^2) / (d + r k)`` gives
    ``r = d tan 2theta / (sqrt(1-k^2) - k tan 2theta)`` in closed form."""
    _, _, t, den = _ray(phi, two_theta, p)
    r = p.distance_mm * t / den
    psy, psx = frame.pixel_mm
    return p.x + r * np.cos(phi) / psx, frame.shape[0] - p.y + r * np.sin(phi) / psy


def radial_scale(two_theta, phi, p: Params, frame: Frame) -> np.ndarray:
    """Pixels per radian of 2theta along the ray at ``phi`` (|dr/d2theta| / pixel): turns a
    2theta residual into the radial distance in pixels a person sees on the image."""
    k, c, t, den = _ray(phi, two_theta, p)
    dr_dt = p.distance_mm * c / (den * den)
    psy, psx = frame.pixel_mm
    pix = 1.0 / np.hypot(np.cos(phi) / psx, np.sin(phi) / psy)  # mm per pixel along phi
    return dr_dt * (1.0 + t * t) / pix
