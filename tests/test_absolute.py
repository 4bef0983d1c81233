"""Absolute scale from water and glassy carbon.

Synthetic curves with a known factor: the factor is recovered to 4 of its own reported
standard deviations (Poisson noise, fixed seed) and the noise-free curves to 1e-12
relative. Water's cross-section is exact at 20 C by construction (the published anchor)
and checked against the IAPWS-95 equation of state for its temperature dependence.
"""

from __future__ import annotations

import numpy as np
import pytest

from saxs_pipeline.ops.absolute import (
    WATER_20C,
    AbsoluteScale,
    calibration_with_scale,
    glassy_carbon_factor,
    water_cross_section,
    water_factor,
)

Q = np.linspace(0.1, 3.0, 200)  # 1/nm


def test_water_at_20c_and_its_temperature_dependence() -> None:
    assert water_cross_section(20.0) == pytest.approx(0.01632, rel=1e-12)
    assert water_cross_section() == WATER_20C
    # compressibility falls and then rises with T: a shallow minimum in the low 20s
    values = {t: water_cross_section(t) for t in (4.0, 20.0, 22.0, 25.0, 40.0)}
    assert values[22.0] < values[20.0] < values[25.0] < values[40.0] < values[4.0]
    assert values[40.0] == pytest.approx(0.01660, abs=5e-5)
    with pytest.raises(ValueError, match="between 0 and 100"):
        water_cross_section(120.0)


def noisy(mean: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.random.default_rng(seed).poisson(mean).astype(np.float64)
    return counts, np.sqrt(counts)


def test_water_recovers_a_known_factor() -> None:
    factor, d, t_w, t_e, exp_w, exp_e = 2.5e-6, 0.1, 0.35, 0.9, 2.0, 3.0
    water_sigma = water_cross_section(25.0)
    empty_rate = 200.0 + 50.0 * np.exp(-Q)  # counts per exposure unit, the cell alone
    # measured = exposure * T * (dSigma/dOmega * d / F + empty-cell scattering)
    water_mean = exp_w * t_w * (water_sigma * d / factor + empty_rate)
    empty_mean = exp_e * t_e * empty_rate
    exact = water_factor(Q, water_mean, np.sqrt(water_mean), thickness_cm=d,
                         water_transmission=t_w, water_exposure=exp_w, empty=empty_mean,
                         empty_error=np.sqrt(empty_mean), empty_transmission=t_e,
                         empty_exposure=exp_e, temperature_c=25.0)
    assert exact.factor == pytest.approx(factor, rel=1e-12)
    assert exact.chi2_reduced == pytest.approx(0.0, abs=1e-20)
    w, we = noisy(water_mean, 1)
    e, ee = noisy(empty_mean, 2)
    fit = water_factor(Q, w, we, thickness_cm=d, water_transmission=t_w, water_exposure=exp_w,
                       empty=e, empty_error=ee, empty_transmission=t_e, empty_exposure=exp_e,
                       temperature_c=25.0, q_range=(0.5, 2.5))
    assert abs(fit.factor - factor) < 4 * fit.uncertainty
    assert 0 < fit.uncertainty / fit.factor < 0.01
    assert 0.5 <= fit.q_range[0] and fit.q_range[1] <= 2.5 and fit.n_points < Q.size
    thick = water_factor(Q, w, we, thickness_cm=d, water_transmission=t_w,
                         water_exposure=exp_w, empty=e, empty_error=ee, empty_transmission=t_e,
                         empty_exposure=exp_e, temperature_c=25.0, q_range=(0.5, 2.5),
                         thickness_uncertainty_cm=0.005)
    assert thick.uncertainty / thick.factor == pytest.approx(
        np.hypot(fit.uncertainty / fit.factor, 0.05), rel=1e-9)


def test_glassy_carbon_recovers_a_known_factor() -> None:
    factor, d, t, exposure = 3.0e-4, 0.1055, 0.5, 10.0
    ref_q = np.linspace(0.05, 2.0, 80)
    ref = 30.0 / (1 + (ref_q / 0.3) ** 2) ** 2 + 0.5  # cm^-1, a smooth GC-like curve
    model = np.interp(Q, ref_q, ref)
    measured = model * t * exposure * d / factor
    exact = glassy_carbon_factor(Q, measured, np.sqrt(measured), ref_q, ref, 0.01 * ref,
                                 thickness_cm=d, transmission=t, exposure=exposure)
    assert exact.factor == pytest.approx(factor, rel=1e-12)
    assert exact.q_range[1] <= 2.0  # only where the reference exists
    counts, err = noisy(measured, 3)
    fit = glassy_carbon_factor(Q, counts, err, ref_q, ref, thickness_cm=d, transmission=t,
                               exposure=exposure, q_range=(0.2, 1.5))
    assert abs(fit.factor - factor) < 4 * fit.uncertainty


def test_a_mismatched_reference_inflates_the_uncertainty() -> None:
    ref_q = Q.copy()
    ref = np.ones_like(Q)
    measured = 1e4 * (1 + 0.2 * np.sin(5 * Q))  # not proportional to the reference
    fit = glassy_carbon_factor(Q, measured, np.sqrt(measured), ref_q, ref, thickness_cm=1.0)
    assert fit.chi2_reduced > 100
    unscaled = glassy_carbon_factor(Q, measured, np.sqrt(measured) * np.sqrt(fit.chi2_reduced),
                                    ref_q, ref, thickness_cm=1.0)
    # the error scaled by sqrt(chi2) equals the fit with errors that explain the scatter
    assert fit.uncertainty == pytest.approx(unscaled.uncertainty, rel=1e-6)


def test_bad_input() -> None:
    flat = np.full(Q.size, 100.0)
    with pytest.raises(ValueError, match="thickness must be a positive number"):
        water_factor(Q, flat, np.sqrt(flat), thickness_cm=-0.1)
    with pytest.raises(ValueError, match="transmission must be at most 1"):
        water_factor(Q, flat, np.sqrt(flat), thickness_cm=0.1, water_transmission=1.5)
    with pytest.raises(ValueError, match="does not overlap"):
        water_factor(Q, flat, np.sqrt(flat), thickness_cm=0.1, q_range=(5.0, 6.0))
    with pytest.raises(ValueError, match="does not overlap the reference"):
        glassy_carbon_factor(Q, flat, np.sqrt(flat), np.linspace(10, 20, 5), np.ones(5),
                             thickness_cm=0.1)
    with pytest.raises(ValueError, match="is empty"):
        water_factor(Q, flat, np.sqrt(flat), thickness_cm=0.1, q_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="needs its error"):
        water_factor(Q, flat, np.sqrt(flat), thickness_cm=0.1, empty=flat)
    with pytest.raises(ValueError, match="1-D of one length"):
        water_factor(Q, flat[:5], np.sqrt(flat), thickness_cm=0.1)
    with pytest.raises(ValueError, match="not positive|usable points"):
        water_factor(Q, -flat, np.sqrt(flat), thickness_cm=0.1)


def test_calibration_with_scale_keeps_every_other_key_in_order() -> None:
    cal = {"Title": "x", "Geometry": {"a": 1}, "Normalisation": {"Monitor": 2.0, "Thickness": 0.1},
           "Masks": []}
    scale = AbsoluteScale(1.5e-5, 2e-7, (0.5, 2.0), 40, 1.1)
    out = calibration_with_scale(cal, scale)
    assert list(out) == list(cal)
    assert list(out["Normalisation"]) == ["Monitor", "Thickness", "AbsoluteScale"]
    assert out["Normalisation"]["AbsoluteScale"] == {"Factor": 1.5e-5, "Uncertainty": 2e-7}
    assert "AbsoluteScale" not in cal["Normalisation"]  # a copy
    bare = calibration_with_scale({"Title": "y"}, scale)
    assert list(bare) == ["Title", "Normalisation"]
    with pytest.raises(ValueError, match="must be an object"):
        calibration_with_scale({"Normalisation": 3}, scale)
