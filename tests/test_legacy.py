"""The seed API for old scripts: same numbers as the clean API, the original's return
values and file layout, and a light package import."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import saxs_pipeline
from saxs_pipeline import legacy
from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.config.masks import encode_attachment, load_mask, read_mask
from saxs_pipeline.curves.chi import PHI_LABELS, RADIAL_LABELS, read_chi
from saxs_pipeline.frames.tiff import read_image
from saxs_pipeline.ops.integrate import integral_parameters, integrate, integrate_error
from saxs_pipeline.ops.operator import build_operator
from saxs_pipeline.ops.slices import build_slice, integrate_slice

from realdata import require

# The mask entry of cal_flat.json with the q window of the original's reference numbers.
REAL_MASK = {"MaskFile": "AAA_integ.msk", "Oversampling": 2, "PixelPerRadialElement": 1,
             "qStart": 0, "qStop": 5}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    cal_path = require("cal_flat.json")
    image = read_image(require("buf1_00000.tif"))
    seed = saxs_pipeline.calibration(
        cal_path, REAL_MASK, cache_dir=tmp_path_factory.mktemp("operators")
    )
    # The clean API, built independently of the seed API's cache.
    cal = load_calibration(cal_path)
    mc = dataclasses.replace(cal.masks[0], q_start=0.0, q_stop=5.0)
    op = build_operator(cal.geometry, mc, load_mask(cal, mc), cal.polarization)
    return seed, op, image


def test_seed_api_matches_the_clean_api(real) -> None:
    seed, op, image = real
    q, intensity = seed.integrate(image)
    np.testing.assert_allclose(q, op.radial, rtol=1e-15)
    np.testing.assert_allclose(intensity, integrate(op, image), rtol=1e-12, equal_nan=True)
    assert q.size == 1003 and seed.kind == "Radial"
    assert seed.mask == REAL_MASK and seed.maskconfig == REAL_MASK
    assert seed.config["Masks"][0]["Oversampling"] == 2  # flat file, nested form

    params = seed.integParameters(intensity)
    # The original at ov 2, qStart 0, qStop 5.
    assert params["I0"] == pytest.approx(498.056, rel=1e-5)
    assert params["I1"] == pytest.approx(752.055, rel=1e-5)
    assert params["I2"] == pytest.approx(2293.857, rel=1e-5)
    i0, i1, i2 = params  # old scripts unpack the original's tuple
    assert (i0, i1, i2) == (params.I0, params.I1, params.I2)
    assert dict(params) == integral_parameters(op.radial, integrate(op, image), 0.0, 5.0, op.edges)


def test_integrateerror_is_mean_std_poisson(real) -> None:
    seed, op, image = real
    err = seed.integrateerror(image)
    ref = integrate_error(op, image)
    assert err.shape == (3, op.nbins)
    for ours, theirs in zip(err, (ref.mean, ref.std, ref.poisson), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, equal_nan=True)


def test_integratechi_writes_a_file_read_chi_reads_back(real, tmp_path) -> None:
    seed, op, image = real
    path = tmp_path / "buf1_00000.chi"
    graph = seed.integratechi(image, path, "buf1_00000.tif")
    back = read_chi(path)
    err = seed.integrateerror(image)
    np.testing.assert_array_equal(back.radial, seed.qgrid)
    np.testing.assert_array_equal(back.intensity, err[0])
    np.testing.assert_array_equal(back.error, err[2])
    assert back.config == seed.config
    assert back.labels == RADIAL_LABELS
    assert back.integparams == pytest.approx({"I0": 498.056, "I1": 752.055, "I2": 2293.857}, rel=1e-5)

    assert set(graph) == {"array", "columnLabels", "kind", "conf", "mask", "Integparam"}
    assert graph["kind"] == "Radial" and graph["mask"] == REAL_MASK
    assert graph["conf"] == seed.config and graph["columnLabels"] == RADIAL_LABELS
    assert graph["Integparam"] == back.integparams
    np.testing.assert_array_equal(np.array(graph["array"]), np.array([back.radial, back.intensity, back.error]))
    json.dumps(graph)  # what the server ships to clients


def test_integratechi_to_xxx_writes_nothing(real, tmp_path, monkeypatch) -> None:
    seed, _, image = real
    monkeypatch.chdir(tmp_path)
    graph = seed.integratechi(image, "xxx", "buf1_00000.tif")
    assert list(tmp_path.iterdir()) == []
    assert len(graph["array"]) == 3


def test_plot_writes_a_png(real, tmp_path) -> None:
    seed, _, image = real
    out = tmp_path / "buf1_00000.png"
    fig = seed.plot(image, out, startplotat=10)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "q [1/nm]" and ax.get_ylabel() == "Intensity [counts/pixel]"
    assert ax.get_title() == str(out)
    x = ax.lines[0].get_xdata()
    mean = seed.integrateerror(image)[0]
    assert x[0] >= seed.qgrid[10]
    assert x.size == np.count_nonzero(mean[10:] > 0)
    assert len(ax.collections) == 2  # the stddev and Poisson bands
    # Drawing again into the same figure replaces the plot.
    seed.plot(image, out, fig=fig)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1


def test_mask_attachments_latin1_and_base64(real) -> None:
    seed, _, image = real
    msk = require("AAA_integ.msk")
    latin1 = encode_attachment(msk, "AAA_integ.msk")
    b64 = {"filename": "AAA_integ.msk", "data": base64.b64encode(msk.read_bytes()).decode()}
    for att in (latin1, b64):
        other = saxs_pipeline.calibration(require("cal_flat.json"), REAL_MASK, att, cache_dir=False)
        np.testing.assert_array_equal(other.valid, seed.valid)
        np.testing.assert_array_equal(saxs_pipeline.openmask("ignored.msk", att), seed.valid)
    valid = saxs_pipeline.openmask(msk)
    assert valid.shape == (1043, 981) and valid.sum() == 666395
    np.testing.assert_array_equal(valid, read_mask(msk))


# ---------------------------------------------------------------------------------------
# Small synthetic set-up

GEOMETRY = {
    "Tilt": {"TiltRotDeg": 30.0, "TiltAngleDeg": 4.0},
    "BeamCenter": [40.3, 20.7],
    "DedectorDistanceMM": 100.0,
    "PixelSizeMicroM": [172.0],
    "Imagesize": [64, 48],
}


def small(tmp_path: Path, **extra) -> dict:
    valid = np.ones((64, 48), bool)
    valid[20:24] = False
    valid[50, 10] = False
    np.save(tmp_path / "mask.npy", ~valid)  # .npy masks: nonzero = masked
    other = valid.copy()
    other[:, 30:] = False
    np.save(tmp_path / "other.npy", ~other)
    cal = {
        "Geometry": json.loads(json.dumps(GEOMETRY)),
        "Wavelength": 1.54,
        "Masks": [{"MaskFile": str(tmp_path / "mask.npy"), "Oversampling": 2,
                   "PixelPerRadialElement": 1, "qStart": 0.5, "qStop": 3.0}],
        "PolarizationCorrection": {"Fraction": 0.9, "Angle": 20.0},
    }
    cal.update(extra)
    return cal


def frame(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).poisson(200, (64, 48)).astype(np.int32)


def original_two_theta(r, phi, d, tilt, tiltdir):
    # The original's law-of-cosines form, written independently of the engine.
    alpha = np.arcsin(np.sin(tilt) * np.sin(phi + tiltdir + np.pi / 2))
    l2 = d**2 + r**2 - 2 * d * r * np.cos(np.pi / 2 + alpha)
    return np.arccos((l2 + d**2 - r**2) / (2 * np.sqrt(l2) * d))


def test_calc_theta_is_the_original_formula() -> None:
    rng = np.random.default_rng(0)
    r, phi = rng.uniform(1, 150, 500), rng.uniform(-np.pi, np.pi, 500)
    tilt, tiltdir = np.deg2rad(-3.0), np.deg2rad(73.0)
    np.testing.assert_allclose(
        saxs_pipeline.calc_theta(r, phi, 1000.0, tilt, tiltdir),
        original_two_theta(r, phi, 1000.0, tilt, tiltdir),
        rtol=1e-9,
    )


def test_polcorr_is_the_original_factor(tmp_path) -> None:
    cal = small(tmp_path)
    seed = saxs_pipeline.calibration(cal, cache_dir=False)
    pfrac, angle = 0.9, 20.0
    rot = angle / 180 * np.pi - np.pi / 2  # how the original called it
    factor = seed.polcorr(pfrac, rot)
    # The original's formula on pixel centres (complex coordinates, y from the bottom).
    rows, cols = 64, 48
    by, bx = GEOMETRY["BeamCenter"]
    z = (np.arange(cols) + 0.5 - bx)[None, :] + 1j * (np.arange(rows) + 0.5 - rows + by)[:, None]
    r, phi = np.abs(z) * 0.172, np.angle(z)
    tth = original_two_theta(r, phi, 100.0, np.deg2rad(4.0), np.deg2rad(30.0))
    expected = (pfrac * (1 - (np.sin(phi - rot) * np.sin(tth)) ** 2)
                + (1 - pfrac) * (1 - (np.cos(phi - rot) * np.sin(tth)) ** 2))
    assert factor.shape == (rows, cols)
    np.testing.assert_allclose(factor, expected, rtol=1e-12)
    # Intensities are divided by it: the operator's per-pixel correction is 1/factor.
    np.testing.assert_allclose(seed.operator.correction, 1 / factor.ravel(), rtol=1e-12)


@pytest.mark.parametrize(("rows", "cols", "ov"), [(3, 5, 2), (4, 2, 3), (2, 2, 1)])
def test_scalemat_averages_sub_pixel_blocks(rows, cols, ov) -> None:
    m = saxs_pipeline.scalemat(rows, cols, ov)
    assert m.shape == (rows * cols, rows * cols * ov * ov)
    np.testing.assert_allclose(m.data, 1 / ov**2)
    sub = np.random.default_rng(1).random((rows * ov, cols * ov))
    expected = sub.reshape(rows, ov, cols, ov).mean(axis=(1, 3)).ravel()
    np.testing.assert_allclose(m @ sub.ravel(), expected, rtol=1e-14)


def test_flat_nested_dict_and_path_give_the_same_curve(tmp_path) -> None:
    nested = small(tmp_path)
    flat = {
        **{k: nested["Geometry"][k] for k in ("Tilt", "BeamCenter", "DedectorDistanceMM",
                                               "PixelSizeMicroM", "Imagesize")},
        "MaskFile": nested["Masks"][0]["MaskFile"], "Oversampling": 2, "PixelPerRadialElement": 1,
        "Wavelength": 1.54, "PolarizationCorrection": nested["PolarizationCorrection"],
    }
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(nested))
    image = frame()
    curves = [saxs_pipeline.calibration(c, cache_dir=False).integrate(image)[1] for c in (nested, flat, path)]
    for c in curves[1:]:
        np.testing.assert_array_equal(c, curves[0])


def test_a_mask_dict_of_its_own_is_validated(tmp_path) -> None:
    cal = small(tmp_path)
    other = dict(cal["Masks"][0], MaskFile=str(tmp_path / "other.npy"), Oversampling=3)
    seed = saxs_pipeline.calibration(cal, other, cache_dir=False)
    assert seed.mask_config.oversampling == 3 and not seed.valid[:, 30:].any()
    assert seed.maskconfig is other
    with pytest.raises(CalibrationError, match=r"mask: \$\.Oversampling"):
        saxs_pipeline.calibration(cal, dict(other, Oversampling="3"), cache_dir=False)
    with pytest.raises(TypeError):
        saxs_pipeline.calibration(["not", "a", "config"])


def test_phi_mode_parameters_are_zero_and_labels_phi(tmp_path) -> None:
    cal = small(tmp_path)
    cal["Masks"][0]["Phi-mode"] = True
    seed = saxs_pipeline.calibration(cal, cache_dir=False)
    image = frame()
    _, intensity = seed.integrate(image)
    assert tuple(seed.integParameters(intensity)) == (0.0, 0.0, 0.0)
    step = seed.qgrid[1] - seed.qgrid[0]
    assert seed.qgrid[0] == pytest.approx(-np.pi + step / 2, rel=1e-12)  # phi bins from -pi
    graph = seed.integratechi(image, tmp_path / "phi.chi", None)
    assert graph["columnLabels"] == PHI_LABELS and graph["kind"] == "Radial"
    assert read_chi(tmp_path / "phi.chi").labels == PHI_LABELS


def test_plot_without_output_file_is_a_pyplot_figure(tmp_path) -> None:
    import matplotlib.pyplot as plt

    seed = saxs_pipeline.calibration(small(tmp_path), cache_dir=False)
    fig = seed.plot(frame())  # shown by plt.show() in old scripts, as the original
    try:
        assert plt.fignum_exists(fig.number)
        assert fig.axes[0].get_title() == "" and list(tmp_path.glob("*.png")) == []
    finally:
        plt.close(fig)


def test_slice_matches_the_engine_and_writes_its_chi(tmp_path) -> None:
    sliceconf = {"Direction": "x", "Plane": "InPlane", "CutPosition": 30, "CutMargin": 1, "MaskRef": 0}
    cal = small(tmp_path, Slices=[sliceconf])
    seed = saxs_pipeline.slice(cal, sliceconf)
    image = frame()
    parsed = load_calibration(cal)
    op = build_slice(parsed.geometry, parsed.slices[0], read_mask(tmp_path / "mask.npy"))
    mean, err = integrate_slice(op, image)
    assert seed.kind == "Slice" and seed.qname.startswith("horizontal")
    np.testing.assert_array_equal(seed.grid, op.axis)
    np.testing.assert_array_equal(seed.integrate(image), mean)

    path = tmp_path / "frame_cS1.chi"
    graph = seed.integratechi(image, path, "frame.tif")
    back = read_chi(path)
    assert back.header[2] == "Intensity" and back.labels == graph["columnLabels"]
    np.testing.assert_array_equal(back.intensity, mean)
    np.testing.assert_array_equal(back.error, err)
    assert graph["kind"] == "Slice" and graph["slice"] == sliceconf and "mask" not in graph
    assert seed.plot(image) is None  # the original's no-op


def test_slice_mask_ref_attachments_and_foreign_sliceconf(tmp_path) -> None:
    cal = small(tmp_path)  # no Slices: the entry is validated on its own
    image = frame()
    unmasked = saxs_pipeline.slice(cal, {"Direction": "y", "Plane": "Vertical", "CutPosition": 40,
                                          "CutMargin": 0, "MaskRef": -1})
    assert unmasked.mask is None
    np.testing.assert_allclose(unmasked.integrate(image), image[:, 39])

    sliceconf = {"Direction": "y", "Plane": "Vertical", "CutPosition": 40, "CutMargin": 0}
    # No attachments: the mask file is read (the original crashed here).
    from_file = saxs_pipeline.slice(cal, sliceconf)
    assert np.isnan(from_file.integrate(image)[20])
    # An attachment replaces the mask file: other.npy masks columns 30 and up.
    att = encode_attachment(tmp_path / "other.npy", "mask.npy")
    attached = saxs_pipeline.slice(cal, sliceconf, [att])
    assert np.isnan(attached.integrate(image)).all()
    with pytest.raises(CalibrationError, match=r"slice: \$\.Direction"):
        saxs_pipeline.slice(cal, dict(sliceconf, Direction="z"))


def test_package_import_is_light_and_exports_the_seed_api() -> None:
    code = (
        "import sys, saxs_pipeline\n"
        "heavy = [m for m in ('dask', 'distributed', 'zmq', 'scipy', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(saxs_pipeline.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == metadata.version("saxs-pipeline") == saxs_pipeline.__version__
    assert saxs_pipeline.calibration is legacy.LegacyCalibration
    assert saxs_pipeline.slice is legacy.LegacySlice
    for name in ("calc_theta", "scalemat", "openmask", "calibration", "slice", "__version__"):
        assert name in saxs_pipeline.__all__ and name in dir(saxs_pipeline)
    with pytest.raises(AttributeError):
        _ = saxs_pipeline.no_such_name


def test_seed_api_refuses_the_summed_normalisation(tmp_path) -> None:
    # The seed API keeps the original's definition; a calibration with corrections goes
    # to the Integrator instead of being integrated without them.
    raw = dict(load_calibration(require("cal_flat.json")).raw, SolidAngle=True)  # nested form
    with pytest.raises(CalibrationError, match=r"\$\.IntensityDefinition: .*Integrator"):
        saxs_pipeline.calibration(raw, cache_dir=tmp_path)
