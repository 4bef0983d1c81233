"""The summed-normalisation definition: closed forms, every column against its written-out
definition, per-frame exclusions, sensor efficiency, flat normalisation, and agreement with
pyFAI ``integrate1d`` with the same corrections on the real frame.

Tolerances: 1e-9 for closed forms and written-out definitions on float64 images (float64
weights and sums: rounding only, ~1e-15); pyFAI 1e-4 median (the brief's bound; the
uncorrected agreement on the same grid is 6.8e-5).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from saxs_pipeline.config.calibration import Polarization, Sensor, load_calibration
from saxs_pipeline.config.masks import load_mask
from saxs_pipeline.frames.tiff import read_image
from saxs_pipeline.ops import corrections as corr
from saxs_pipeline.ops import geometry as geo
from saxs_pipeline.ops.integrate import integrate, integrate_batch, integrate_corrected
from saxs_pipeline.ops.operator import build_operator

from enginecases import POL, SMALL, mask_config, small_valid
from realdata import require

SILICON = Sensor("Si", 450.0, mu_per_cm=146.0)


def chain(valid: np.ndarray, seed: int = 0, **kw) -> corr.PixelCorrections:
    """Every correction at once: a +-10 % flat, solid angle, sensor, polarization, dark."""
    rng = np.random.default_rng(seed)
    flat = corr.normalised_flat(1 + 0.1 * rng.uniform(-1, 1, SMALL.image_shape), valid)
    dark = rng.uniform(5, 50, SMALL.image_shape)
    args = {"polarization": POL, "solid_angle": True, "sensor": SILICON, "flat": flat,
            "dark": dark, "dark_exposures": 4, **kw}
    return corr.pixel_corrections(SMALL, **args)


@pytest.mark.parametrize("layout", ["compact", "csc"])
@pytest.mark.parametrize("kw", [{}, {"phi_mode": True, "q_start": 0.5, "q_stop": 5.0}], ids=["radial", "phi"])
def test_dark_plus_constant_times_normalisation_integrates_to_the_constant(layout, kw) -> None:
    valid = small_valid()
    op = build_operator(SMALL, mask_config(pixel_splitting="linear", **kw), valid)
    if layout == "csc":
        op._compact["f8"] = None  # force the CSC kernels (the compact layout's cache entry)
    pix = chain(valid)
    image = pix.dark + 3.25 * pix.normalisation  # float64: the f8 weights
    r = integrate_corrected(op, image.reshape(SMALL.image_shape), corr.corrections_for(op, pix),
                            with_std=True)
    filled = ~np.isnan(r.mean)
    assert filled.sum() > 10
    np.testing.assert_allclose(r.mean[filled], 3.25, rtol=1e-9)
    if not kw:  # no spread about the model where every pixel lies whole inside the grid
        np.testing.assert_allclose(r.std[filled], 0.0, atol=1e-9)


def test_every_column_follows_its_definition() -> None:
    valid = small_valid()
    op = build_operator(SMALL, mask_config(pixel_splitting="linear"), valid)
    pix = chain(valid)
    x = np.random.default_rng(2).poisson(300, SMALL.image_shape).astype(np.float64).ravel()
    c, d, v = pix.normalisation, pix.dark, pix.dark_variance
    a = np.zeros((op.nbins, x.size))
    a[:, op.span[0]:op.span[1]] = op.matrix64.toarray()
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = a @ c
        mean = a @ (x - d) / norm
        poisson = np.sqrt((a * a) @ (x + v)) / norm
        saxsdog = np.sqrt(a @ (x + v)) / norm
        back = a.T @ np.nan_to_num(mean)
        std = np.sqrt(a @ (x - d - c * back) ** 2 / (a @ (c * c)))
        sem = std * np.sqrt((a * a) @ (c * c)) / norm
    cor = corr.corrections_for(op, pix)
    r = integrate_corrected(op, x.reshape(SMALL.image_shape), cor, with_std=True)
    for ours, ref in ((r.mean, mean), (r.poisson, poisson), (r.std, std), (r.sem, sem)):
        np.testing.assert_allclose(ours, ref, rtol=1e-9, equal_nan=True)
    r2 = integrate_corrected(op, x.reshape(SMALL.image_shape), cor, error_model="saxsdog")
    np.testing.assert_allclose(r2.poisson, saxsdog, rtol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(r2.mean, r.mean)
    means, errs = integrate_batch(op, [x.reshape(SMALL.image_shape)] * 2, error_model="poisson",
                                  corrections=cor)
    np.testing.assert_array_equal(means[1], r.mean)
    np.testing.assert_array_equal(errs[1], r.poisson)


@pytest.mark.parametrize("marker", [np.nan, -2.0])
def test_excluded_pixels_leave_the_constants_too(marker) -> None:
    valid = small_valid()
    mc = mask_config(pixel_splitting="linear")
    op = build_operator(SMALL, mc, valid)
    pix = chain(valid)
    image = np.random.default_rng(5).poisson(200, SMALL.image_shape).astype(np.float64)
    holed = image.copy()
    holes = np.argwhere(valid)[[3, 100, 1000]]
    holed[tuple(holes.T)] = marker
    reference = build_operator(SMALL, mc, valid & (holed == image))
    ours = integrate_corrected(op, holed, corr.corrections_for(op, pix), with_std=True)
    ref = integrate_corrected(reference, image, corr.corrections_for(reference, pix), with_std=True)
    for a, b in ((ours.mean, ref.mean), (ours.poisson, ref.poisson), (ours.std, ref.std),
                 (ours.sem, ref.sem)):
        np.testing.assert_allclose(a, b, rtol=1e-9, equal_nan=True)


def test_without_any_correction_it_is_the_plain_mean() -> None:
    valid = small_valid()
    op = build_operator(SMALL, mask_config(pixel_splitting="linear"), valid)
    image = np.random.default_rng(6).gamma(3.0, 40.0, SMALL.image_shape)
    pix = corr.pixel_corrections(SMALL)
    np.testing.assert_allclose(integrate_corrected(op, image, corr.corrections_for(op, pix)).mean,
                               integrate(op, image), rtol=1e-12, equal_nan=True)


def test_operator_with_folded_polarization_is_refused() -> None:
    valid = small_valid()
    op = build_operator(SMALL, mask_config(), valid, POL)
    with pytest.raises(ValueError, match="plain area fractions"):
        corr.corrections_for(op, corr.pixel_corrections(SMALL))


def test_sensor_efficiency_is_the_absorbed_fraction_along_the_ray() -> None:
    import xraydb

    cal_energy = 8050.9  # eV at 1.54 A
    mu = xraydb.material_mu("Si", cal_energy, kind="photo")
    eta = corr.sensor_efficiency(SMALL, Sensor("Si", 450.0, mu))
    cosa = geo.incidence_cosine(SMALL)
    np.testing.assert_allclose(eta, 1 - np.exp(-mu * 0.045 / cosa), rtol=1e-12)
    assert 0.99 < eta.min() and eta.max() < 1  # 450 um Si absorbs 99.86 % at normal incidence
    # oblique rays cross more silicon: the efficiency grows with the incidence angle
    order = np.argsort(cosa.ravel())
    assert np.all(np.diff(eta.ravel()[order]) <= 1e-15)


def test_flat_normalisation_and_bad_flats() -> None:
    valid = small_valid()
    flat = np.random.default_rng(7).uniform(0.5, 1.5, SMALL.image_shape)
    flat[~valid] = 0  # zeros where the masks do not look are fine
    norm = corr.normalised_flat(flat, valid, "flat.tif")
    assert norm[valid].mean() == pytest.approx(1.0, rel=1e-12)
    flat[np.argwhere(valid)[10][0], np.argwhere(valid)[10][1]] = 0
    with pytest.raises(ValueError, match=r"flat.tif: 1 pixels the masks use are zero"):
        corr.normalised_flat(flat, valid, "flat.tif")


@pytest.fixture(scope="module")
def real():
    cal = load_calibration(require("cal_flat.json"))
    fit2d = np.loadtxt(require("buf1_00000.chi"), skiprows=4)
    return cal, load_mask(cal, cal.masks[0]), read_image(require("buf1_00000.tif")), fit2d


def test_agrees_with_pyfai_with_the_same_corrections(real) -> None:
    # FIT2D's grid, ov 3 linear splitting against pyFAI full/csr; the frame flipped into
    # FIT2D's frame for pyFAI (research pyfai.md 0, recipe 1). Bound: 1e-4 median over
    # bins with > 100 pixels (uncorrected on this grid: 6.8e-5).
    pyfai = pytest.importorskip("pyFAI.integrator.azimuthal")
    cal, valid, image, fit2d = real
    g = cal.geometry
    q = fit2d[:, 0]
    dq = q[1] - q[0]
    edges = np.concatenate([q - dq / 2, [q[-1] + dq / 2]])
    op = build_operator(g, dataclasses.replace(cal.masks[0], oversampling=3, radial_edges=tuple(edges)), valid)
    rng = np.random.default_rng(3)
    flat = corr.normalised_flat(1 + 0.1 * rng.uniform(-1, 1, g.image_shape), valid)
    dark = rng.poisson(2.0, g.image_shape).astype(np.float64)
    pix = corr.pixel_corrections(g, polarization=Polarization(0.995, 0.0), solid_angle=True,
                                 flat=flat, dark=dark)
    monitor = 2.5
    ours = integrate_corrected(op, image, corr.corrections_for(op, pix)).mean / monitor

    ai = pyfai.AzimuthalIntegrator(detector="Pilatus1M")
    ai.setFit2D(directDist=g.distance_mm, centerX=g.beam_center_x, centerY=g.beam_center_y,
                tilt=g.tilt_angle_deg, tiltPlanRotation=g.tilt_rot_deg, pixelX=g.pixel_size_um[1],
                pixelY=g.pixel_size_um[0], wavelength=g.wavelength_a)
    theirs = ai.integrate1d(
        np.flipud(image).astype(np.float64), q.size, unit="q_nm^-1", radial_range=(edges[0], edges[-1]),
        method=("full", "csr", "cython"), mask=np.flipud(~valid).astype(np.int8),
        correctSolidAngle=True, dark=np.flipud(dark), flat=np.flipud(flat), polarization_factor=0.99,
        normalization_factor=monitor)
    np.testing.assert_allclose(theirs.radial, op.radial, rtol=2e-6)
    use = (theirs.count > 100) & (fit2d[:, 1] > 0)
    rel = np.abs(ours[use] / theirs.intensity[use] - 1)
    # The other definition, the mean of per-pixel corrected values, is not pyFAI's:
    c = pix.normalisation.reshape(g.image_shape)
    pixel_mean = integrate(op, (image - dark) / c) / monitor
    rel_mean = np.abs(pixel_mean[use] / theirs.intensity[use] - 1)
    print(f"vs pyFAI with dark, flat, solid angle, P 0.99, monitor: median {np.median(rel):.2e} "
          f"max {rel.max():.2e}; mean of corrected pixels: median {np.median(rel_mean):.2e}")
    assert np.median(rel) <= 1e-4
    assert np.median(rel_mean) > 5 * np.median(rel)
