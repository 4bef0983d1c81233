"""Absolute intensity scale: the factor F that puts normalised curves in cm^-1.

Convention: ``dSigma/dOmega(q) = F * I(q) / (transmission * exposure * thickness)``, with
I the integrated curve (counts per pixel), ``exposure`` whatever else the pipeline
divides by (monitor counts times exposure time, see ``io.normalisation``) and the
thickness in cm. F is what ``Normalisation.AbsoluteScale`` of the calibration holds.

Two standards:

* **Water** (:func:`water_factor`): its forward scattering is flat over SAXS q and known
  from thermodynamics, dSigma/dOmega = r_e^2 Z^2 n^2 k_B T kappa_T (Z = 10 electrons per
  molecule, n the molecule number density, kappa_T the isothermal compressibility).
  Orthaber, Bergmann & Glatter, J. Appl. Cryst. 33 (2000) 218-225, give 1.632e-2 cm^-1
  at 20 C. The temperature dependence is taken from IAPWS-95 (Wagner & Pruss, J. Phys.
  Chem. Ref. Data 31 (2002) 387; the maintained ``iapws`` package) at 0.101325 MPa:
  ``0.01632 * g(T) / g(20 C)`` with ``g = n^2 T kappa_T``. (The formula itself gives
  1.642e-2 at 20 C with IAPWS-95; we keep the published value as the anchor and take
  only the ratio from the equation of state: 1.669e-2 at 4 C, 1.632e-2 at 25 C,
  1.660e-2 at 40 C, with a shallow minimum near 22 C.) The
  empty cell is subtracted, each curve divided by its own transmission and exposure.
* **Glassy carbon** (:func:`glassy_carbon_factor`): a reference curve in cm^-1 (e.g.
  NIST SRM 3600's certified curve) is interpolated linearly onto the measured q.

Both fit ``normalised = reference / F`` by weighted least squares over the chosen q
range. The uncertainty is the fit's standard error, scaled up by
sqrt(reduced chi^2) when the points scatter more than their errors (a standard that
is not flat, a reference that does not match), plus a relative thickness uncertainty
in quadrature when one is given.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "WATER_20C",
    "AbsoluteScale",
    "calibration_with_scale",
    "glassy_carbon_factor",
    "water_cross_section",
    "water_factor",
]

WATER_20C = 1.632e-2  # cm^-1, Orthaber, Bergmann & Glatter (2000)
_ATMOSPHERE_MPA = 0.101325


@dataclass(frozen=True)
class AbsoluteScale:
    """A fitted scale factor: ``factor`` and its ``uncertainty`` (one standard deviation),
    the q range and number of points used, and the reduced chi^2 of the fit."""

    factor: float
    uncertainty: float
    q_range: tuple[float, float]
    n_points: int
    chi2_reduced: float

    def as_calibration(self) -> dict[str, float]:
        """The ``Normalisation.AbsoluteScale`` entry."""
        return {"Factor": self.factor, "Uncertainty": self.uncertainty}


@lru_cache(maxsize=64)
def _water_g(temperature_c: float) -> float:
    from iapws import IAPWS95

    state = IAPWS95(T=temperature_c + 273.15, P=_ATMOSPHERE_MPA)
    if state.phase != "Liquid":
        raise ValueError(f"water at {temperature_c} C and 1 atm is not liquid ({state.phase})")
    n = state.rho / state.M  # mol/m^3 up to a constant factor, which cancels in the ratio
    return n * n * (temperature_c + 273.15) * state.kappa


def water_cross_section(temperature_c: float = 20.0) -> float:
    """dSigma/dOmega of water at ``temperature_c`` (C, 1 atm) in cm^-1 (module doc)."""
    t = float(temperature_c)
    if not 0.0 < t < 100.0:
        raise ValueError(f"water temperature must be between 0 and 100 C, not {temperature_c}")
    return WATER_20C * _water_g(t) / _water_g(20.0)


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, not {value}")
    return v


def _transmission(name: str, value: float) -> float:
    v = _positive(name, value)
    if v > 1:
        raise ValueError(f"{name} must be at most 1, not {value}")
    return v


def _curve(name: str, q, intensity, error) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(a, dtype=np.float64) for a in (q, intensity, error)]
    if any(a.ndim != 1 for a in arrays) or len({a.size for a in arrays}) != 1:
        raise ValueError(f"{name}: q, intensity and error must be 1-D of one length, "
                         f"not {[a.shape for a in arrays]}")
    return arrays[0], arrays[1], arrays[2]


def _window(q: np.ndarray, q_range: tuple[float, float] | None, lo: float, hi: float,
            what: str) -> np.ndarray:
    """Bins inside ``q_range`` (default: all) and inside [lo, hi]."""
    q_lo, q_hi = (lo, hi) if q_range is None else (float(q_range[0]), float(q_range[1]))
    if q_hi <= q_lo:
        raise ValueError(f"q range [{q_lo}, {q_hi}] is empty")
    inside = (q >= max(q_lo, lo)) & (q <= min(q_hi, hi))
    if not inside.any():
        raise ValueError(f"q range [{q_lo:g}, {q_hi:g}] does not overlap {what} "
                         f"[{lo:g}, {hi:g}]")
    return inside


def _fit(q, reference, reference_err, y, y_err, inside, thickness_rel: float) -> AbsoluteScale:
    # Fit y = k * reference (linear in the noisy y, so k is unbiased; a weighted mean of
    # reference / y would favour low y, whose ratios carry smaller errors), F = 1 / k.
    ok = (inside & np.isfinite(y) & np.isfinite(y_err) & (y_err > 0)
          & np.isfinite(reference) & (reference > 0))
    n = int(ok.sum())
    if n < 2:
        raise ValueError(f"only {n} usable points (finite, with errors) in the q range")
    r, re, yy, ye = reference[ok], reference_err[ok], y[ok], y_err[ok]
    k = float(np.sum(r * yy / ye**2) / np.sum(r * r / ye**2))
    for _ in range(3):  # the reference's own error enters through k
        var = ye**2 + (k * re) ** 2
        k = float(np.sum(r * yy / var) / np.sum(r * r / var))
    if not k > 0:
        raise ValueError("the normalised curve is not positive over the q range")
    var = ye**2 + (k * re) ** 2
    chi2 = float(np.sum((yy - k * r) ** 2 / var) / (n - 1))
    rel = math.sqrt(max(1.0, chi2) / float(np.sum(r * r / var))) / k
    rel = math.hypot(rel, thickness_rel)
    qs = q[ok]
    return AbsoluteScale(1.0 / k, rel / k, (float(qs.min()), float(qs.max())), n, chi2)


def water_factor(
    q: np.ndarray,
    water: np.ndarray,
    water_error: np.ndarray,
    *,
    thickness_cm: float,
    water_transmission: float = 1.0,
    water_exposure: float = 1.0,
    empty: np.ndarray | None = None,
    empty_error: np.ndarray | None = None,
    empty_transmission: float = 1.0,
    empty_exposure: float = 1.0,
    temperature_c: float = 20.0,
    q_range: tuple[float, float] | None = None,
    thickness_uncertainty_cm: float = 0.0,
) -> AbsoluteScale:
    """F from a water frame (and the empty cell frame) on the q grid ``q``: the water
    curve and the empty-cell curve, each divided by its transmission and exposure, are
    subtracted and divided by the water thickness; F = dSigma/dOmega(T) / that."""
    q, water, water_error = _curve("water", q, water, water_error)
    d = _positive("thickness", thickness_cm)
    y = water / (_transmission("water transmission", water_transmission)
                 * _positive("water exposure", water_exposure))
    y_err = water_error / (water_transmission * water_exposure)
    if empty is not None:
        if empty_error is None:
            raise ValueError("the empty-cell curve needs its error")
        _, empty, empty_error = _curve("empty cell", q, empty, empty_error)
        scale = (_transmission("empty-cell transmission", empty_transmission)
                 * _positive("empty-cell exposure", empty_exposure))
        y = y - empty / scale
        y_err = np.hypot(y_err, empty_error / scale)
    finite = q[np.isfinite(q)]
    inside = _window(q, q_range, float(finite.min()), float(finite.max()), "the water curve")
    reference = np.full(q.shape, water_cross_section(temperature_c))
    return _fit(q, reference, np.zeros(q.shape), y / d, y_err / d, inside,
                float(thickness_uncertainty_cm) / d)


def glassy_carbon_factor(
    q: np.ndarray,
    measured: np.ndarray,
    measured_error: np.ndarray,
    reference_q: np.ndarray,
    reference: np.ndarray,
    reference_error: np.ndarray | None = None,
    *,
    thickness_cm: float,
    transmission: float = 1.0,
    exposure: float = 1.0,
    q_range: tuple[float, float] | None = None,
    thickness_uncertainty_cm: float = 0.0,
) -> AbsoluteScale:
    """F from a glassy-carbon frame and its reference curve (cm^-1, same q units as
    ``q``), interpolated linearly onto ``q`` inside the reference's q range."""
    q, measured, measured_error = _curve("glassy carbon", q, measured, measured_error)
    ref_err = np.zeros(np.shape(reference)) if reference_error is None else reference_error
    rq, ref, ref_err = _curve("reference", reference_q, reference, ref_err)
    keep = np.isfinite(rq) & np.isfinite(ref)
    order = np.argsort(rq[keep], kind="stable")
    rq, ref, ref_err = rq[keep][order], ref[keep][order], ref_err[keep][order]
    if rq.size < 2:
        raise ValueError("the reference curve needs at least 2 finite points")
    d = _positive("thickness", thickness_cm)
    divisor = _transmission("transmission", transmission) * _positive("exposure", exposure) * d
    inside = _window(q, q_range, float(rq[0]), float(rq[-1]), "the reference curve")
    r = np.interp(q, rq, ref)
    r_err = np.interp(q, rq, np.nan_to_num(ref_err, nan=0.0))
    return _fit(q, r, r_err, measured / divisor, measured_error / divisor, inside,
                float(thickness_uncertainty_cm) / d)


def calibration_with_scale(calibration: Mapping[str, Any], scale: AbsoluteScale) -> dict[str, Any]:
    """A copy of the calibration (its raw JSON dict) with ``Normalisation.AbsoluteScale``
    set; every other key keeps its value and place."""
    out = copy.deepcopy(dict(calibration))
    norm = out.get("Normalisation")
    if norm is not None and not isinstance(norm, Mapping):
        raise ValueError(f"the calibration's Normalisation must be an object, not {norm!r}")
    norm = dict(norm or {})
    norm["AbsoluteScale"] = scale.as_calibration()
    out["Normalisation"] = norm
    return out
