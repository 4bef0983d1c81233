"""Sector (wedge) binning: agreement with pyFAI's azimuth_range on the real frame, and
the closed forms (constant image, wrap-around = union of halves, wedges partitioning the
circle), and grids that miss the detector."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.config.masks import load_mask
from saxs_pipeline.frames.tiff import read_image
from saxs_pipeline.ops import binning
from saxs_pipeline.ops import geometry as geo
from saxs_pipeline.ops.integrate import integrate
from saxs_pipeline.ops.operator import build_operator

from enginecases import POL, SMALL, mask_config, small_valid
from realdata import require

# Sums of the same float64 weights in another order: 1e-9 (the bound) is far
# above the rounding (1e-13) and far below any sub-pixel misassignment (1 / ov^2 / npix).
EXACT = 1e-9


def _sums(op, image):
    x = np.asarray(image, dtype=np.float64).ravel()[op.span[0]:op.span[1]]
    return op.matrix64 @ x, op.areas


def _frame(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(10, 1000, SMALL.image_shape)


def test_chi_convention() -> None:
    # 0 deg along +x, 90 deg towards decreasing numpy row (the top of the image).
    chi = binning.azimuth_deg(np.array([1.0, 0.0, -1.0, 0.0]), np.array([0.0, -1.0, 0.0, 1.0]))
    np.testing.assert_allclose(np.mod(chi, 360), [0, 90, 180, 270])


@pytest.mark.parametrize("wedges", [((30.0, 70.0),), ((330.0, 30.0),), ((-15.0, 15.0), (165.0, 195.0))],
                         ids=["plain", "wrap", "pair"])
def test_constant_image_gives_one(wedges) -> None:
    valid = small_valid()
    op = build_operator(SMALL, mask_config(radial_bins=30, azimuth=wedges), valid, None)
    mean = integrate(op, np.full(SMALL.image_shape, 7.0))
    filled = op.areas > 0
    assert filled.sum() > 5
    np.testing.assert_allclose(mean[filled] / 7.0, 1.0, rtol=1e-12)


@pytest.mark.parametrize("splitting", ["point", "linear"])
def test_wrap_around_is_the_union_of_its_halves(splitting) -> None:
    valid, image = small_valid(), _frame()
    build = lambda w: build_operator(SMALL, mask_config(radial_bins=30, azimuth=w,  # noqa: E731
                                                        pixel_splitting=splitting), valid, POL)
    s, a = _sums(build(((330.0, 30.0),)), image)
    s1, a1 = _sums(build(((330.0, 360.0),)), image)
    s2, a2 = _sums(build(((0.0, 30.0),)), image)
    assert a.sum() > 0
    np.testing.assert_allclose(s, s1 + s2, rtol=EXACT, atol=EXACT * s.max())
    np.testing.assert_allclose(a, a1 + a2, rtol=EXACT, atol=EXACT * a.max())
    # Negative angles name the same wedge.
    s3, _ = _sums(build(((-30.0, 30.0),)), image)
    np.testing.assert_allclose(s3, s, rtol=EXACT, atol=EXACT * s.max())


def test_wedges_partition_the_circle() -> None:
    valid, image = small_valid(), _frame()
    mc = mask_config(radial_bins=30, pixel_splitting="linear")
    full = build_operator(SMALL, mc, valid, POL)
    parts = [build_operator(SMALL, dataclasses.replace(mc, azimuth=(w,)), valid, POL)
             for w in ((-10.0, 100.0), (100.0, 200.0), (200.0, 350.0))]
    s, a = _sums(full, image)
    np.testing.assert_allclose(sum(_sums(p, image)[0] for p in parts), s, rtol=EXACT, atol=EXACT * s.max())
    np.testing.assert_allclose(sum(p.areas for p in parts), a, rtol=EXACT, atol=EXACT * a.max())
    # The pixel-weighted sum of the wedges' curves is the full curve.
    means = [np.nan_to_num(integrate(p, image)) for p in parts]
    weighted = sum(m * p.areas for m, p in zip(means, parts, strict=True))
    ok = a > 0
    np.testing.assert_allclose(weighted[ok] / a[ok], integrate(full, image)[ok], rtol=EXACT)


def test_pixels_are_split_at_wedge_edges_by_sub_pixels() -> None:
    # A wedge edge through a pixel gives it a fraction k / ov^2 of its area.
    valid = np.ones(SMALL.image_shape, dtype=bool)
    op = build_operator(SMALL, mask_config(radial_bins=10, azimuth=((10.0, 50.0),),
                                           pixel_splitting="point"), valid, None)
    per_pixel = np.asarray(op.matrix64.sum(axis=0)).ravel() * 9
    np.testing.assert_allclose(per_pixel, np.round(per_pixel), atol=1e-9)
    assert ((per_pixel > 0.5) & (per_pixel < 8.5)).any()


@pytest.mark.parametrize(("kw", "path"), [
    ({"radial_bins": 10, "radial_range": (50.0, 60.0)}, "RadialRange"),
    ({"radial_bins": 10, "radial_range": (50.0, 60.0), "azimuth_bins": 8}, "RadialRange"),
    ({"radial_edges": (40.0, 41.0, 45.0)}, "RadialEdges"),
    ({"phi_mode": True, "q_start": 40.0, "q_stop": 50.0}, "qStart"),
], ids=["range", "cake", "edges", "phi-window"])
def test_q_grid_outside_the_detector_names_its_path(kw, path) -> None:
    with pytest.raises(CalibrationError, match=rf"\$\.Masks\[0\]\.{path}.*outside the detector"):
        build_operator(SMALL, mask_config(**kw), small_valid(), None)


@pytest.fixture(scope="module")
def real():
    cal = load_calibration(require("cal_flat.json"))
    return cal, load_mask(cal, cal.masks[0]), read_image(require("buf1_00000.tif")).astype(np.float64)


def _pyfai(cal):
    azimuthal = pytest.importorskip("pyFAI.integrator.azimuthal")
    g = cal.geometry
    ai = azimuthal.AzimuthalIntegrator(pixel1=g.pixel_size_um[0] * 1e-6, pixel2=g.pixel_size_um[1] * 1e-6)
    # Our wavelength unit is the original's Angstrom (geometry.ANGSTROM_NM): same q.
    ai.setFit2D(directDist=g.distance_mm, centerX=g.beam_center_x, centerY=g.beam_center_y,
                tilt=g.tilt_angle_deg, tiltPlanRotation=g.tilt_rot_deg, pixelX=g.pixel_size_um[1],
                pixelY=g.pixel_size_um[0], wavelength=g.wavelength_a * geo.ANGSTROM_NM * 10)
    return ai


def test_wedge_matches_pyfai_azimuth_range(real) -> None:
    # pyFAI in FIT2D's orientation (image flipped, research pyfai.md 0): its chi is ours.
    # Median over bins with > 100 pixels: the 5e-4; both split pixels (pyFAI by
    # area, ours by 3 x 3 sub-pixels), which differ at the wedge edges and in q.
    cal, valid, image = real
    ai = _pyfai(cal)
    nbins, q_range, wedge = 400, (0.2, 6.0), (-75.0, -45.0)
    mc = dataclasses.replace(cal.masks[0], oversampling=3, radial_bins=nbins, radial_range=q_range,
                             azimuth=(wedge,))
    op = build_operator(cal.geometry, mc, valid, None)
    ours = integrate(op, image)
    res = ai.integrate1d(np.flipud(image), nbins, unit="q_nm^-1", radial_range=q_range,
                         azimuth_range=wedge, mask=np.flipud(~valid), method=("full", "csr", "cython"),
                         correctSolidAngle=False, polarization_factor=None)
    np.testing.assert_allclose(res.radial, op.radial, rtol=1e-6)  # pyFAI's float32
    use = (res.count > 100) & (op.areas > 100)
    assert use.sum() > 200
    rel = np.abs(ours[use] / res.intensity[use] - 1)
    print(f"wedge {wedge} vs pyFAI: median {np.median(rel):.2e}, max {rel.max():.2e} over {use.sum()} bins")
    assert np.median(rel) <= 5e-4
