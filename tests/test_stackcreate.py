"""The curve stack's store: sectors and cakes from a real Integrator into .chi and zarr,
CF-style attributes read by xarray, and the opt-in per-bin sums from which curves are
re-binned and frames averaged exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_integrator import calibration

from saxs_pipeline.integrator import Integrator
from saxs_pipeline.ops.sums import BinSums, average_sums, curve_from_sums, rebin
from saxs_pipeline.stack.layout import SUM_ARRAYS, CurveSpec
from saxs_pipeline.stack.read import open_dataset, read_stack
from saxs_pipeline.stack.writer import CurveStackWriter, stack_compatible

# Sums of float64 values in another order (1e-13); the bound.
EXACT = 1e-9
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
GRID = {"MaskFile": "mask.npy", "Oversampling": 2, "RadialBins": 40, "RadialRange": [0.1, 3.0],
        "PixelSplitting": "point", "qStart": 0.1, "qStop": 3.0}


def _integrator(tmp_path, masks) -> Integrator:
    return Integrator(calibration(tmp_path, Masks=masks, Slices=[]), cache_dir=False)


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.poisson(200.0, (64, 48)).astype(np.float64) for _ in range(n)]


def _write(path, integ: Integrator, frames) -> None:
    specs = CurveSpec.from_curves(integ.integrate(frames[0]))
    with CurveStackWriter(path, integ.calibration.to_json(), specs, block_rows=4,
                          definitions=integ.definitions()) as w:
        for i, image in enumerate(frames):
            w.add(f"f_{i:03d}.tif", integ.integrate(image), 1.7e9 + i, 1.7e9 + i)


def test_sector_and_cake_entries_in_chi_files_and_stack(tmp_path) -> None:
    integ = _integrator(tmp_path, [GRID, dict(GRID, Azimuth=[[330, 30], [150, 210]]),
                                   dict(GRID, AzimuthBins=12)])
    curves = integ.integrate(_frames(1)[0])
    assert [c.key for c in curves] == ["R0", "R1", "R2"]
    assert curves[2].shape == (12, 40) and curves[2].chi is not None
    graph = curves[2].to_graph({}, {})  # the "plot" reply: I as (chi, q)
    assert np.shape(graph["array"][1]) == (12, 40) and len(graph["chi"]) == 12
    # The sector is a curve of its own (.chi suffix _cR1); the cake has no .chi form.
    paths = integ.write_chi(curves, tmp_path / "frame")
    assert [p.name for p in paths] == ["frame.chi", "frame_cR1.chi"]
    assert integ.output_suffixes() == ["", "_cR1"]
    _write(tmp_path / "s.zarr", integ, _frames(5))
    stack = read_stack(tmp_path / "s.zarr")
    cake = stack["curves"]["R2"]
    assert cake["I"].shape == (5, 12, 40)
    np.testing.assert_allclose(cake["chi"], np.linspace(-165, 165, 12))
    np.testing.assert_allclose(cake["I"][0].ravel(), curves[2].mean, rtol=1e-6, equal_nan=True)
    assert stack_compatible(tmp_path / "s.zarr", CurveSpec.from_curves(curves))


def test_xarray_shows_units_and_names(tmp_path) -> None:
    pytest.importorskip("xarray")
    integ = _integrator(tmp_path, [GRID, dict(GRID, AzimuthBins=6)])
    _write(tmp_path / "s.zarr", integ, _frames(3))
    ds = open_dataset(tmp_path / "s.zarr", "R0")
    assert ds["q"].attrs["units"] == "1/nm" and "q" in ds.coords
    assert ds["I"].attrs["units"] == "counts/pixel"
    assert ds["I"].attrs["long_name"] == "mean intensity per pixel"
    assert "Poisson" in ds["poisson"].attrs["long_name"]
    assert ds["poisson"].attrs["definition"] == integ.definitions()["poisson"]
    import xarray as xr

    raw = xr.open_zarr(tmp_path / "s.zarr", group="R0", consolidated=False)
    assert raw["q"].attrs["units"] == "1/nm" and raw["I"].attrs["units"] == "counts/pixel"
    assert raw["I"].dims == ("frame", "q")
    cake = open_dataset(tmp_path / "s.zarr", "R1")
    assert cake["I"].dims == ("frame", "chi", "q")
    assert cake["chi"].attrs["units"] == "degree"


def _sums(entry: dict) -> BinSums:
    return BinSums(*(np.asarray(entry[name]) for name in SUM_ARRAYS))


def test_rebinning_and_averaging_from_stored_sums_are_exact(tmp_path) -> None:
    frames = _frames(10, seed=4)
    integ = _integrator(tmp_path, [dict(GRID, StoreSums=True), dict(GRID, AzimuthBins=4, StoreSums=True)])
    _write(tmp_path / "s.zarr", integ, frames)
    stored = read_stack(tmp_path / "s.zarr")["curves"]
    assert stored["R0"]["sum_signal"].shape == (10, 40)
    assert stored["R1"]["count"].shape == (10, 4, 40)
    fine = _sums(stored["R0"])
    # Averaging 10 frames from their sums = integrating the averaged image.
    direct = integ.integrate(np.mean(frames, axis=0))[0].mean
    np.testing.assert_allclose(curve_from_sums(average_sums(fine)).mean, direct, rtol=EXACT)
    # Merging bins by 2 = integrating onto the coarse grid (point splitting: module doc of
    # ops.sums), frame by frame.
    (tmp_path / "c").mkdir()
    coarse = _integrator(tmp_path / "c", [dict(GRID, RadialBins=20)])
    for i in (0, 7):
        merged = curve_from_sums(rebin(BinSums(*(getattr(fine, f)[i] for f in
                                                 ("signal", "variance", "norm", "count"))), 2))
        np.testing.assert_allclose(merged.mean, coarse.integrate(frames[i])[0].mean, rtol=EXACT)
    # The stored I is that of the sums (float32).
    np.testing.assert_allclose(curve_from_sums(fine).mean, stored["R0"]["I"], rtol=1e-6)


def test_workflow_example_averages_and_rebins_from_the_stack(tmp_path) -> None:
    frames = _frames(10, seed=2)
    integ = _integrator(tmp_path, [dict(GRID, StoreSums=True)])
    _write(tmp_path / "s.zarr", integ, frames)
    out = tmp_path / "avg.txt"
    subprocess.run([sys.executable, str(WORKFLOWS / "rebin_average_sums.py"), str(tmp_path / "s.zarr"),
                    "--factor", "2", "--frames", "10", "--out", str(out)], check=True, timeout=60,
                   capture_output=True)
    (tmp_path / "c").mkdir()
    coarse = _integrator(tmp_path / "c", [dict(GRID, RadialBins=20)])
    q, mean, _ = np.loadtxt(out).T
    direct = coarse.integrate(np.mean(frames, axis=0))[0]
    # The text file holds 18 significant digits: float64 round trip.
    np.testing.assert_allclose(mean, direct.mean, rtol=EXACT)
    np.testing.assert_allclose(q, direct.radial, rtol=1e-12)


def test_stored_sums_need_the_original_definition(tmp_path) -> None:
    from saxs_pipeline.config.calibschema import CalibrationError

    with pytest.raises(CalibrationError, match=r"\$\.Masks\[0\]\.StoreSums"):
        Integrator(calibration(tmp_path, Masks=[dict(GRID, StoreSums=True)], Slices=[],
                               SolidAngle=True), cache_dir=False)


def test_a_creation_killed_midway_leaves_no_half_stack(tmp_path: Path) -> None:
    """A stack is built aside and renamed into place: a process killed while building (a
    SIGKILLed Bluesky consumer) leaves only the hidden folder, which the next creation
    replaces; the stack itself is whole or absent."""
    building = tmp_path / ".s.zarr.creating"
    building.mkdir()
    (building / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    spec = CurveSpec("R0", "Radial", np.linspace(0.1, 1.0, 5))
    CurveStackWriter.open_or_create(tmp_path / "s.zarr", {"Title": "t"}, [spec]).close()
    assert not building.exists()
    assert read_stack(tmp_path / "s.zarr")["n_valid"] == 0
