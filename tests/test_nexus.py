"""NeXus master file -> calibration: the beam-centre convention checked numerically, units,
fallbacks, the mask file, and clear messages for missing fields."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from saxs_pipeline.cli.converter import main
from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.fit2d import ConverterError, convert_nexus
from saxs_pipeline.config.masks import read_mask
from saxs_pipeline.config.nexus import HC_EV_A, NexusError, NexusOverrides, read_nexus_geometry
from saxs_pipeline.demo.eiger import write_eiger_series

SHAPE = (40, 30)  # rows, cols


@pytest.fixture
def master(tmp_path: Path) -> Path:
    mask = np.zeros(SHAPE, np.uint32)
    mask[2, 3] = 1
    mask[30, 20] = 8
    stack = np.ones((2, *SHAPE), np.uint32)
    return write_eiger_series(
        tmp_path, iter(stack), n_frames=2, frames_per_file=2, shape=SHAPE, beam_center=(11.25, 7.5),
        distance_m=2.5, pixel_size_m=75e-6, wavelength_a=1.2, pixel_mask=mask,
    ).master


def test_geometry_and_beam_centre_convention(master: Path) -> None:
    geo = read_nexus_geometry(master)
    assert geo.distance_mm == pytest.approx(2500.0)
    assert geo.pixel_size_um == pytest.approx((75.0, 75.0))
    assert geo.wavelength_a == pytest.approx(1.2)
    assert geo.shape == SHAPE
    # beam_center_y = 7.5 px from the top of 40 rows -> 32.5 px from the bottom (FIT2D Y)
    assert geo.beam_center() == [pytest.approx(32.5), pytest.approx(11.25)]
    assert np.argwhere(geo.pixel_mask).tolist() == [[2, 3], [30, 20]]


def test_beam_centre_lands_on_the_same_pixel(master: Path, tmp_path: Path) -> None:
    """Independent check with our geometry code: the pixel whose centre is nearest the beam
    (q minimal) is the one at row floor(beam_center_y), column floor(beam_center_x)."""
    from saxs_pipeline.ops.geometry import subpixel_offsets

    config, _ = convert_nexus(master, tmp_path / "cal.json")
    cal = load_calibration(config)
    dx, dy = subpixel_offsets(cal.geometry, 1)
    r2 = dx[None, :] ** 2 + dy[:, None] ** 2
    assert np.unravel_index(np.argmin(r2), r2.shape) == (7, 11)


def test_cli_writes_calibration_and_mask(master: Path, tmp_path: Path) -> None:
    out = tmp_path / "cal.json"
    assert main([str(master), str(out), "-q"]) == 0
    cal = load_calibration(out)  # validates
    assert cal.geometry.beam_center_y == pytest.approx(32.5)
    assert cal.geometry.image_shape == SHAPE
    assert cal.masks[0].mask_file == "cal_mask.npy"
    valid = read_mask(cal.mask_path(cal.masks[0]), SHAPE)
    assert (~valid).sum() == 2 and not valid[2, 3] and not valid[30, 20]


def test_units_energy_fallback_and_nxmx_distance(master: Path) -> None:
    with h5py.File(master, "a") as fh:
        det = fh["/entry/instrument/detector"]
        del det["detector_distance"]
        det["distance"] = 1800.0
        det["distance"].attrs["units"] = "mm"
        del fh["/entry/instrument/beam/incident_wavelength"]
        fh["/entry/instrument/beam/incident_energy"] = 12.0
        fh["/entry/instrument/beam/incident_energy"].attrs["units"] = "keV"
    geo = read_nexus_geometry(master)
    assert geo.distance_mm == pytest.approx(1800.0)
    assert geo.wavelength_a == pytest.approx(HC_EV_A / 12000.0)
    assert geo.wavelength_a == pytest.approx(1.0332, abs=1e-4)


@pytest.mark.parametrize("field, flag", [
    ("detector/detector_distance", "--distance-mm"),
    ("detector/beam_center_y", "--beam-y"),
    ("detector/x_pixel_size", "--pixel-size-um"),
    ("beam/incident_wavelength", "--wavelength-a"),
])
def test_missing_field_names_path_and_flag(master: Path, tmp_path: Path, capsys, field: str, flag: str) -> None:
    with h5py.File(master, "a") as fh:
        del fh[f"/entry/instrument/{field}"]
        if field.startswith("beam/"):
            del fh["/entry/instrument/detector/detectorSpecific/photon_energy"]
    with pytest.raises(NexusError, match=rf"/entry/instrument/{field}.* missing; give it with {flag}"):
        read_nexus_geometry(master)
    assert main([str(master), str(tmp_path / "cal.json")]) == 1
    assert flag in capsys.readouterr().err


def test_flags_supply_and_override(master: Path, tmp_path: Path) -> None:
    with h5py.File(master, "a") as fh:
        del fh["/entry/instrument/detector/detector_distance"]
    out = tmp_path / "cal.json"
    assert main([str(master), str(out), "-q", "--distance-mm", "999", "--beam-y", "10"]) == 0
    geo = json.loads(out.read_text())["Geometry"]
    assert geo["DedectorDistanceMM"] == 999.0
    assert geo["BeamCenter"] == [30.0, 11.25]
    with pytest.raises(ConverterError, match="units 'furlong'"):
        with h5py.File(master, "a") as fh:
            fh["/entry/instrument/detector/x_pixel_size"].attrs["units"] = "furlong"
        convert_nexus(master, out, overrides=NexusOverrides(distance_mm=1.0))
    assert main([str(tmp_path / "cal.json"), str(tmp_path / "b.json"), "--distance-mm", "5"]) == 1

