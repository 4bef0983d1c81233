"""Detector geometry: pixel positions, scattering angle with tilt, q, polarization.

Conventions are the original Saxsdog's (= FIT2D's):

* ``BeamCenter = [Y, X]``: Y counted from the *bottom* edge of the image, X from the left
  edge, in pixels measured from pixel edges (pixel k spans [k, k+1), centre k + 0.5).
* The offset of a point from the beam is ``dx`` (towards increasing column) and ``dy``
  (towards increasing numpy row, i.e. downwards on screen). The azimuth ``phi`` is
  ``angle(dx + i*dy)``.
* Tilt: the detector plane is tilted by ``TiltAngleDeg`` about an axis set by
  ``TiltRotDeg``. The original computes ``alpha = arcsin(sin(tilt) cos(phi + rot))`` and
  ``2theta`` from the law of cosines in the sample/centre/pixel triangle. The distance of
  the pixel along the beam beyond the centre, ``h = r sin(alpha)``, is linear in
  ``(dx, dy)``, which gives a square-root-only form of the same angle used below: it is
  exact, stable at small angles and cheap for millions of sub-pixels.
"""

from __future__ import annotations

import numpy as np

from saxs_pipeline.config.calibration import Geometry, Polarization

__all__ = [
    "ANGSTROM_NM",
    "calc_theta",
    "incidence_cosine",
    "normal_incidence",
    "polarization_factor",
    "q_map",
    "q_scale",
    "solid_angle",
    "subpixel_offsets",
    "tilt_projection",
    "two_theta_q",
]

# The original's "Angstrom" in nm (the "A*" unit, +1.5e-5 relative to 0.1 nm); its q values
# and bin widths depend on it, so compatibility needs it.
ANGSTROM_NM = 1.00001495e-1


def q_scale(wavelength_a: float) -> float:
    """4*pi/lambda in nm^-1 for a wavelength in Angstrom (original's constant)."""
    return 4.0 * np.pi / (wavelength_a * ANGSTROM_NM)


def subpixel_offsets(geometry: Geometry, oversampling: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from the beam of the sub-pixel centres, in mm.

    Returns ``(dx, dy)``: ``dx`` has one entry per sub-column (``cols * ov``), ``dy`` one per
    sub-row (``rows * ov``), so the grid is their outer combination.
    """
    rows, cols = geometry.image_shape
    ov = int(oversampling)
    psy, psx = (s * 1e-3 for s in geometry.pixel_size_um)
    dx = ((np.arange(cols * ov) + 0.5) / ov - geometry.beam_center_x) * psx
    dy = ((np.arange(rows * ov) + 0.5) / ov - rows + geometry.beam_center_y) * psy
    return dx, dy


def tilt_projection(geometry: Geometry) -> tuple[float, float]:
    """Coefficients ``(a, b)`` with ``h = a*dx + b*dy``: the distance of a detector point
    along the beam beyond the beam centre, ``r*sin(alpha)`` of the original."""
    tilt = np.deg2rad(geometry.tilt_angle_deg)
    rot = np.deg2rad(geometry.tilt_rot_deg)
    return float(np.sin(tilt) * np.cos(rot)), float(-np.sin(tilt) * np.sin(rot))


def two_theta_q(
    dx: np.ndarray, dy: np.ndarray, geometry: Geometry, *, need_two_theta: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """q (nm^-1) and optionally 2theta (rad) for points at offsets ``dx``, ``dy`` (mm),
    which broadcast against each other (pass ``dx[None, :]``, ``dy[:, None]`` for a grid).
    """
    a, b = tilt_projection(geometry)
    d = geometry.distance_mm
    h = a * dx + b * dy
    r2 = dx * dx + dy * dy
    perp2 = r2 - h * h  # squared distance of the point from the beam axis
    np.maximum(perp2, 0.0, out=perp2)
    dz = h + d  # position along the beam
    length = np.sqrt(r2 + d * d + 2.0 * d * h)
    # sin^2(theta) = (1 - cos 2theta)/2 written without cancellation.
    sin2 = perp2 / (2.0 * length * (length + dz))
    q = np.sqrt(sin2, out=sin2)
    q *= q_scale(geometry.wavelength_a)
    tth = np.arctan2(np.sqrt(perp2), dz) if need_two_theta else None
    return q, tth


def calc_theta(r: np.ndarray, phi: np.ndarray, d: float, tilt: float, tiltdir: float) -> np.ndarray:
    """The original's ``calc_theta``: full scattering angle 2theta (rad) of points at
    radius ``r`` (mm) and azimuth ``phi`` (rad) for distance ``d`` (mm), tilt and tilt
    direction in radians."""
    alpha = np.arcsin(np.sin(tilt) * np.cos(phi + tiltdir))
    return np.arctan2(r * np.cos(alpha), d + r * np.sin(alpha))


def q_map(geometry: Geometry, oversampling: int = 1, *, block_rows: int = 48) -> np.ndarray:
    """q (nm^-1) at every sub-pixel centre, shape ``(rows*ov, cols*ov)``.

    Same formula as :func:`two_theta_q`, evaluated in blocks of rows with in-place
    operations: a Pilatus 1M at ov 3 has 9.2 M sub-pixels, and cache-sized temporaries
    make this several times faster than whole-array expressions.
    """
    dx, dy = subpixel_offsets(geometry, oversampling)
    a, b = tilt_projection(geometry)
    d = geometry.distance_mm
    # Separable parts: h = hx + hy, r^2 = dx^2 + dy^2, l^2 = (dx^2 + 2d hx) + (dy^2 + d^2 + 2d hy)
    hx, hy = a * dx, b * dy
    l2x, l2y = dx * dx + 2 * d * hx, dy * dy + d * d + 2 * d * hy
    r2x, r2y = dx * dx, dy * dy
    out = np.empty((dy.size, dx.size), dtype=np.float64)
    k = q_scale(geometry.wavelength_a) / np.sqrt(2.0)
    shape = (block_rows, dx.size)
    t1, t2 = np.empty(shape), np.empty(shape)
    for start in range(0, dy.size, block_rows):
        stop = min(start + block_rows, dy.size)
        n = stop - start
        h, perp2, q = t1[:n], t2[:n], out[start:stop]
        np.add(hx[None, :], hy[start:stop, None], out=h)
        np.add(r2x[None, :], r2y[start:stop, None], out=perp2)
        np.add(l2x[None, :], l2y[start:stop, None], out=q)  # l^2
        np.sqrt(q, out=q)  # l
        h += d  # dz = distance along the beam
        perp2 -= (h - d) ** 2  # r^2 - h^2: squared distance from the beam axis
        h += q  # l + dz
        h *= q  # l (l + dz)
        np.divide(perp2, h, out=q)  # 2 sin^2(theta)
        np.sqrt(q, out=q)
        q *= k
    return out


def polarization_factor(geometry: Geometry, polarization: Polarization) -> np.ndarray:
    """Polarization factor at every pixel centre, shape ``image_shape``; intensities are
    divided by it.

    The original's ``F (1 - sin^2(phi-rot) sin^2 2theta) + (1-F) (1 - cos^2(phi-rot)
    sin^2 2theta)`` with ``rot = Angle - 90 deg``, rewritten as
    ``1 - sin^2 2theta [F cos^2(phi-A) + (1-F) sin^2(phi-A)]`` and evaluated without
    trigonometry: ``sin^2 2theta = perp^2 / l^2`` and ``cos(phi-A) = (dx cos A + dy sin A)/r``.
    ``F`` is the fraction polarized along ``Angle`` (0 = image x).
    """
    dx, dy = subpixel_offsets(geometry, 1)
    x, y = dx[None, :], dy[:, None]
    a, b = tilt_projection(geometry)
    d = geometry.distance_mm
    h = a * x + b * y
    r2 = x * x + y * y
    sin2_2theta = (r2 - h * h) / (r2 + d * d + 2 * d * h)
    angle = np.deg2rad(polarization.angle_deg)
    along = (x * np.cos(angle) + y * np.sin(angle)) ** 2
    cos2 = np.divide(along, r2, out=np.ones_like(r2), where=r2 > 0)
    f = polarization.fraction
    return 1.0 - sin2_2theta * (f * cos2 + (1.0 - f) * (1.0 - cos2))


def normal_incidence(geometry: Geometry) -> tuple[float, float, float]:
    """The point of normal incidence (pyFAI's PONI) as offsets ``(dx, dy)`` from the beam
    centre in mm, and the sample's perpendicular distance ``D`` from the detector plane.

    The distance of a detector point from the sample is ``l^2 = r^2 + d^2 + 2 d h`` with
    ``h = a dx + b dy`` (:func:`tilt_projection`), i.e. ``(dx + d a)^2 + (dy + d b)^2 + D^2``
    with ``D = d sqrt(1 - a^2 - b^2) = d cos(tilt)``."""
    a, b = tilt_projection(geometry)
    d = geometry.distance_mm
    return -d * a, -d * b, d * float(np.sqrt(1.0 - a * a - b * b))


def _plane_coordinates(geometry: Geometry, edges: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """In-plane coordinates (mm) from the point of normal incidence of the pixel centres
    (or of the pixel edges): ``u`` per column (or column edge), ``v`` per row; and ``D``."""
    rows, cols = geometry.image_shape
    psy, psx = (s * 1e-3 for s in geometry.pixel_size_um)
    u0, v0, dist = normal_incidence(geometry)
    shift = 0.0 if edges else 0.5
    u = (np.arange(cols + int(edges)) + shift - geometry.beam_center_x) * psx - u0
    v = (np.arange(rows + int(edges)) + shift - rows + geometry.beam_center_y) * psy - v0
    return u, v, dist


def incidence_cosine(geometry: Geometry) -> np.ndarray:
    """cos of the angle between the ray to each pixel centre and the detector normal,
    shape ``image_shape``."""
    u, v, dist = _plane_coordinates(geometry, edges=False)
    return dist / np.sqrt(u[None, :] ** 2 + v[:, None] ** 2 + dist * dist)


def solid_angle(geometry: Geometry) -> np.ndarray:
    """Solid angle of every pixel relative to that of a pixel centred at the point of
    normal incidence (pyFAI's normalisation at the PONI), shape ``image_shape``.

    Exact for the tilted pixel rectangle: with in-plane coordinates ``(u, v)`` from the
    point of normal incidence, ``dOmega = D du dv / (u^2 + v^2 + D^2)^(3/2)`` integrates
    to ``F(u, v) = arctan(u v / (D sqrt(u^2 + v^2 + D^2)))`` at the four corners. (pyFAI
    uses ``cos^3`` of the incidence angle at the pixel centre; the two differ by the
    square of the pixel size over the distance, 3e-8 for a Pilatus at 1 m.)"""
    u, v, dist = _plane_coordinates(geometry, edges=True)
    uu, vv = u[None, :], v[:, None]
    f = np.arctan(uu * vv / (dist * np.sqrt(uu * uu + vv * vv + dist * dist)))
    omega = f[1:, 1:] - f[1:, :-1] - f[:-1, 1:] + f[:-1, :-1]
    hx, hy = 0.5e-3 * geometry.pixel_size_um[1], 0.5e-3 * geometry.pixel_size_um[0]
    centred = 4.0 * np.arctan(hx * hy / (dist * np.sqrt(hx * hx + hy * hy + dist * dist)))
    return omega / centred
