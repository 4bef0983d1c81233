"""Per-pixel corrections of the summed-normalisation definition and their per-bin constants.

Definition (pyFAI's, calibration ``IntensityDefinition`` "signal-over-normalisation"):
with ``A[p, k]`` the area fraction of pixel p in bin k (an operator built without the
polarization folded into its weights),

    I_k = s * sum_p A[p,k] (x_p - d_p) / sum_p A[p,k] c_p,   c = flat * Omega * eta * P

``d`` the dark, ``Omega`` the relative solid angle, ``eta`` the sensor efficiency, ``P``
the polarization factor and ``s`` the frame's normalisation multiplier (AbsoluteScale /
(Monitor * Transmission * ExposureTime * Thickness)). Summing before dividing keeps the
hot path one sparse product: ``sum A x`` per frame; the denominator and the dark term are
per-bin constants (:class:`BinConstants`) computed once per operator. Its errors:

* Poisson: ``var(x_p - d_p) = x_p + v_p`` with ``v = max(d, 0) / N`` the variance of a dark
  averaged over N exposures: ``sigma_k = s sqrt(sum A^2 (x + v)) / sum A c`` (the original's
  model uses ``sum A (x + v)``);
* standard deviation: the residual of a pixel is ``e_p = x_p - d_p - c_p back_p`` with
  ``back_p = sum_k A[p,k] I_k``, and ``std_k = s sqrt(sum A e^2 / sum A c^2)`` (with c = 1
  and no dark the original's definition); ``sem_k = std_k sqrt(sum A^2 c^2) / sum A c``.

This module holds the per-pixel arrays and the per-bin constants; the integration itself
is :func:`saxs_pipeline.ops.integrate.integrate_corrected`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import scipy.sparse as sp

from saxs_pipeline.config.calibration import Geometry, Polarization, Sensor
from saxs_pipeline.ops import geometry as geo
from saxs_pipeline.ops.operator import IntegrationOperator

__all__ = [
    "BinConstants",
    "Corrections",
    "PixelCorrections",
    "bin_constants",
    "corrections_for",
    "normalised_flat",
    "pixel_corrections",
    "sensor_efficiency",
]


@dataclass(frozen=True, eq=False)
class PixelCorrections:
    """Flat per-pixel arrays ``(rows * cols,)``, float64: the normalisation ``c`` and the
    dark ``d`` with its variance ``v`` (None: no dark)."""

    normalisation: np.ndarray
    dark: np.ndarray | None = None
    dark_variance: np.ndarray | None = None


def sensor_efficiency(geometry: Geometry, sensor: Sensor) -> np.ndarray:
    """``eta = 1 - exp(-mu t / cos a)`` per pixel (a: angle of incidence on the sensor)."""
    path = sensor.mu_per_cm * sensor.thickness_um * 1e-4 / geo.incidence_cosine(geometry)
    return -np.expm1(-path)


def normalised_flat(flat: np.ndarray, valid: np.ndarray, what: str = "flat") -> np.ndarray:
    """``flat`` divided by its mean over the ``valid`` pixels, where it must be a positive
    number (ValueError naming ``what`` and the first bad pixel otherwise)."""
    flat = np.asarray(flat, dtype=np.float64)
    bad = valid & ~(flat > 0)  # NaN fails the comparison too
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{what}: {int(bad.sum())} pixels the masks use are zero, negative or "
                         f"not a number (the first at row {row}, column {col}: {flat[row, col]})")
    if not valid.any():
        raise ValueError(f"{what}: the masks use no pixel to normalise it over")
    return flat / flat[valid].mean()


def pixel_corrections(
    geometry: Geometry,
    *,
    polarization: Polarization | None = None,
    solid_angle: bool = False,
    sensor: Sensor | None = None,
    flat: np.ndarray | None = None,
    dark: np.ndarray | None = None,
    dark_exposures: int = 1,
) -> PixelCorrections:
    """The per-pixel arrays of a calibration; ``flat`` already normalised
    (:func:`normalised_flat`), ``dark`` the mean of ``dark_exposures`` exposures."""
    c = np.ones(geometry.image_shape)
    if flat is not None:
        c *= flat
    if solid_angle:
        c *= geo.solid_angle(geometry)
    if sensor is not None:
        c *= sensor_efficiency(geometry, sensor)
    if polarization is not None:
        c *= geo.polarization_factor(geometry, polarization)
    if dark is None:
        return PixelCorrections(c.ravel())
    d = np.asarray(dark, dtype=np.float64).ravel()
    return PixelCorrections(c.ravel(), d, np.maximum(d, 0.0) / int(dark_exposures))


@dataclass(frozen=True, eq=False)
class BinConstants:
    """Per-bin sums over the used pixels (module doc): ``areas`` = sum A, ``norm`` =
    sum A c, ``norm_c2`` = sum A c^2, ``norm_sq`` = sum A^2 c^2, ``dark`` = sum A d,
    ``dark_var`` = sum A v, ``dark_var_sq`` = sum A^2 v."""

    areas: np.ndarray
    norm: np.ndarray
    norm_c2: np.ndarray
    norm_sq: np.ndarray
    dark: np.ndarray
    dark_var: np.ndarray
    dark_var_sq: np.ndarray

    def minus(self, other: BinConstants) -> BinConstants:
        """These sums without ``other``'s pixels; bins left without any pixel get exact
        zeros (so they become NaN)."""
        values = {f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        empty = np.isclose(values["areas"], 0, atol=1e-12)
        for v in values.values():
            v[empty] = 0
        return BinConstants(**values)


def bin_constants(a: sp.csc_matrix, c: np.ndarray, d: np.ndarray | None,
                  v: np.ndarray | None) -> BinConstants:
    """The sums of the pixels (columns) of ``a`` (area fractions, bins x pixels) with their
    normalisation ``c``, dark ``d`` and dark variance ``v`` (one value per column)."""
    a2 = a.multiply(a).tocsc()
    zeros = np.zeros(a.shape[0])
    return BinConstants(
        areas=np.asarray(a.sum(axis=1)).ravel(),
        norm=a @ c,
        norm_c2=a @ (c * c),
        norm_sq=a2 @ (c * c),
        dark=zeros if d is None else a @ d,
        dark_var=zeros if v is None else a @ v,
        dark_var_sq=zeros.copy() if v is None else a2 @ v,
    )


@dataclass(frozen=True, eq=False)
class Corrections:
    """The corrections of one operator: its per-pixel arrays and per-bin constants."""

    pixels: PixelCorrections
    bins: BinConstants
    _pass2: dict = field(default_factory=dict, repr=False)

    def without(self, op: IntegrationOperator, bad: np.ndarray) -> BinConstants:
        """The constants with the pixels ``bad`` (flat indices) of one frame taken out."""
        sub = op.matrix64[:, bad - op.span[0]]
        return self.bins.minus(bin_constants(sub, *_at(self.pixels, bad)))

    def pass2_arrays(self, op: IntegrationOperator, compact: bool) -> tuple[np.ndarray | None, np.ndarray]:
        """``(off, scale)`` = ``(d, c)`` in the order the second-pass kernel reads them: per
        used pixel for the compact layout, per column of the span for the CSC matrix;
        ``off`` is None without a dark."""
        if compact not in self._pass2:
            lo, hi = op.span
            if compact:
                columns = np.flatnonzero(np.diff(op.matrix64.indptr) > 0) + lo
            else:
                columns = np.arange(lo, hi)
            c, d, _ = _at(self.pixels, columns)
            self._pass2[compact] = (d, c)
        return self._pass2[compact]


def corrections_for(op: IntegrationOperator, pixels: PixelCorrections) -> Corrections:
    """:class:`Corrections` of ``op``, which must hold plain area fractions (built without
    polarization: in this definition the polarization is part of ``c``)."""
    if op.correction is not None:
        raise ValueError("the summed normalisation needs an operator of plain area fractions; "
                         "this one has the polarization folded into its weights")
    npix = op.shape[0] * op.shape[1]
    for name in ("normalisation", "dark", "dark_variance"):
        arr = getattr(pixels, name)
        if arr is not None and arr.shape != (npix,):
            raise ValueError(f"pixel {name} has shape {arr.shape}, the operator has {npix} pixels")
    return Corrections(pixels, bin_constants(op.matrix64, *_at(pixels, np.arange(*op.span))))


def _at(pixels: PixelCorrections, columns: np.ndarray) -> tuple:
    """``(c, d, v)`` at the flat pixel indices ``columns`` (None where not configured)."""
    return tuple(None if arr is None else arr[columns]
                 for arr in (pixels.normalisation, pixels.dark, pixels.dark_variance))
