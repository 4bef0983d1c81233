"""NXcanSAS files read back by real readers: h5py, nexusformat (and its NXcanSAS
application-definition validator) and sasdata (SasView's loader).

Tolerances: float64 arrays round-trip with rtol 0 (bit for bit) through h5py and
nexusformat, and I/Idev through sasdata; sasdata converts Q to 1/angstrom on load, so Q
is compared bit for bit with sasdata's own converter applied to it and within 5e-16
relative of q / 10 (from 1/nm) or q (from 1/angstrom). sasdata drops bins where Q, I or Idev is NaN, so its arrays are
compared with the finite bins.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from nexusformat.nexus import nxload
from sasdata.data_util.nxsunit import Converter
from sasdata.dataloader.loader import Loader

from saxs_pipeline.curves.nxcansas import NXcanSASError, export_stack, write_nxcansas

from stackcases import CALIBRATION, Q, make_stack

RNG = np.random.default_rng(4)
I1 = 1e3 * np.exp(-Q) + RNG.random(Q.size)
E1 = np.sqrt(I1)
I1[-2:] = np.nan
E1[-2:] = np.nan


def sasdata_load(path: Path) -> list:
    return Loader().load(str(path))


def validate(path: Path, entry: str = "sasentry01") -> tuple[int, int]:
    logging.getLogger("nexusformat").setLevel(logging.CRITICAL)  # it logs every check
    return nxload(str(path))[entry].validate(level="warning")


def test_single_curve_structure(tmp_path: Path) -> None:
    path = write_nxcansas(tmp_path / "one.h5", Q, I1, E1, title="lysozyme", run="run 7",
                          qdev=np.full(Q.size, 0.01), frame_times=[1.7e9],
                          calibration=CALIBRATION, process_notes={"kept": [0, 1, 2]})
    with h5py.File(path, "r") as f:
        assert f.attrs["default"] == "sasentry01"
        e = f["sasentry01"]
        assert (e.attrs["NX_class"], e.attrs["canSAS_class"], e.attrs["version"]) == (
            "NXentry", "SASentry", "1.1")
        assert e["definition"][()] == b"NXcanSAS" and e["title"][()] == b"lysozyme"
        assert e["run"][()] == b"run 7" and e.attrs["default"] == "sasdata01"
        d = e["sasdata01"]
        assert (d.attrs["canSAS_class"], d.attrs["signal"], d.attrs["I_axes"]) == (
            "SASdata", "I", "Q")
        assert d.attrs["Q_indices"] == 0 and d.attrs["timestamp"].startswith("2023-11-14T22:13:20")
        assert d["Q"].attrs["units"] == "1/nm" and d["Q"].attrs["resolutions"] == "Qdev"
        assert d["I"].attrs["units"] == "arbitrary" and d["I"].attrs["uncertainties"] == "Idev"
        assert d["Idev"].attrs["units"] == "arbitrary" and d["Qdev"].attrs["units"] == "1/nm"
        np.testing.assert_array_equal(d["I"][()], I1)
        det = e["sasinstrument/sasdetector"]
        assert det.attrs["canSAS_class"] == "SASdetector" and det["SDD"][()] == 1000.0
        assert det["beam_center_x"][()] == pytest.approx(20.7 * 0.172)
        assert e["sasinstrument/sassource/incident_wavelength"].attrs["units"] == "angstrom"
        assert e["sassample/thickness"][()] == 0.15
        proc = e["sasprocess"]
        assert proc.attrs["canSAS_class"] == "SASprocess"
        assert proc["software"][()].decode().startswith("saxs_pipeline")
        assert b'"Wavelength": 1.54' in proc["calibration"][()]
        assert proc["kept"][()] == b"[0, 1, 2]"
    assert validate(path) == (0, 0)


@pytest.mark.parametrize(("units", "per_angstrom"), [("1/nm", 0.1), ("1/angstrom", 1.0)])
def test_sasdata_reads_equal_arrays(tmp_path: Path, units: str, per_angstrom: float) -> None:
    path = write_nxcansas(tmp_path / "one.h5", Q, I1, E1, title="t", run="r", q_units=units,
                          i_units="1/cm", qdev=Q * 0.02)
    (data,) = sasdata_load(path)
    ok = np.isfinite(I1)
    # sasdata always converts Q to 1/angstrom (scale in, scale out: a few ulp even for
    # 1/angstrom itself); I and Idev are not converted and come back bit for bit
    to_a = Converter(units)
    np.testing.assert_array_equal(data.x, to_a(Q, units="1/A")[ok])
    np.testing.assert_array_equal(data.dx, to_a(Q * 0.02, units="1/A")[ok])
    np.testing.assert_allclose(data.x, Q[ok] * per_angstrom, rtol=5e-16, atol=0)
    np.testing.assert_array_equal(data.y, I1[ok])
    np.testing.assert_array_equal(data.dy, E1[ok])
    assert data.x_unit == "A^{-1}" and data.y_unit == "cm^{-1}"
    assert data.title == "t" and data.run == ["r"] and data.errors == []


def test_frame_stack_read_by_h5py_and_nexusformat(tmp_path: Path) -> None:
    frames = np.vstack([I1, I1 * 2, I1 * 3])
    errors = np.sqrt(np.abs(frames))
    times = 1.7e9 + np.array([0.0, 1.5, 3.0])
    path = write_nxcansas(tmp_path / "stack.h5", Q, frames, errors, title="series", run="r1",
                          frame_names=["a.tif", "b.tif", "c.tif"], frame_times=times)
    with h5py.File(path, "r") as f:
        d = f["sasentry01/sasdata01"]
        assert list(d.attrs["I_axes"]) == ["Time", "Q"]
        assert (d.attrs["Time_indices"], d.attrs["Q_indices"]) == (0, 1)
        np.testing.assert_array_equal(d["I"][()], frames)
        np.testing.assert_array_equal(d["Idev"][()], errors)
        np.testing.assert_array_equal(d["Time"][()], [0.0, 1.5, 3.0])
        assert [n.decode() for n in d["frame_name"][()]] == ["a.tif", "b.tif", "c.tif"]
    root = nxload(str(path))
    nxd = root["sasentry01/sasdata01"]
    np.testing.assert_array_equal(nxd["I"].nxvalue, frames)
    np.testing.assert_array_equal(nxd["Q"].nxvalue, Q)
    np.testing.assert_array_equal(nxd["Idev"].nxvalue, errors)
    assert nxd.nxsignal.nxname == "I"
    assert validate(path) == (0, 0)
    no_times = write_nxcansas(tmp_path / "frames.h5", Q, frames, errors, title="s", run="r")
    with h5py.File(no_times, "r") as f:
        assert list(f["sasentry01/sasdata01"].attrs["I_axes"]) == ["Frame", "Q"]


def test_entries_layout_is_read_frame_by_frame_by_sasdata(tmp_path: Path) -> None:
    frames = np.vstack([I1, I1 * 2, I1 * 3])
    errors = np.sqrt(np.abs(frames))
    path = write_nxcansas(tmp_path / "entries.h5", Q, frames, errors, title="series", run="r1",
                          frame_names=["a.tif", "b.tif", "c.tif"], calibration=CALIBRATION,
                          layout="entries", q_units="1/angstrom")
    data = sasdata_load(path)
    ok = np.isfinite(I1)
    assert [d.title for d in data] == ["series a.tif", "series b.tif", "series c.tif"]
    for d, want, err in zip(data, frames, errors, strict=True):
        np.testing.assert_array_equal(d.y, want[ok])
        np.testing.assert_array_equal(d.dy, err[ok])
        np.testing.assert_allclose(d.x, Q[ok], rtol=5e-16, atol=0)
    with h5py.File(path, "r") as f:
        # shared metadata: one object under two names (hard links, not external links)
        assert f["sasentry01/sasprocess"] == f["sasentry03/sasprocess"]
    for entry in ("sasentry01", "sasentry02", "sasentry03"):
        assert validate(path, entry) == (0, 0)


def test_export_stack(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "run.zarr", n=4)
    out = export_stack(stack.path, tmp_path / "run.h5", indices="1-2", q_units="1/angstrom",
                       layout="stack")
    with h5py.File(out, "r") as f:
        d = f["sasentry01/sasdata01"]
        np.testing.assert_array_equal(d["I"][()], stack.intensity[1:3].astype(np.float64))
        np.testing.assert_array_equal(d["Idev"][()], stack.error[1:3].astype(np.float64))
        np.testing.assert_array_equal(d["Q"][()], Q * 0.1)
        np.testing.assert_array_equal(d["Time"][()], [0.0, 2.0])
        assert f["sasentry01/run"][()] == b"run.zarr"
    one = export_stack(stack.path, tmp_path / "one.h5", patterns=["sample_00003.tif"])
    (data,) = sasdata_load(one)
    assert data.title == "sample_00003.tif"
    np.testing.assert_array_equal(data.y, stack.intensity[3][:-3].astype(np.float64))


def test_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "x.h5"
    with pytest.raises(NXcanSASError, match="Q units must be one of"):
        write_nxcansas(out, Q, I1, title="t", run="r", q_units="1/A")
    with pytest.raises(NXcanSASError, match="I units must be one of"):
        write_nxcansas(out, Q, I1, title="t", run="r", i_units="counts")
    with pytest.raises(NXcanSASError, match=r"I must be \(n_q,\) or \(n_frames, n_q\)"):
        write_nxcansas(out, Q, I1[:5], title="t", run="r")
    with pytest.raises(NXcanSASError, match="Idev has shape"):
        write_nxcansas(out, Q, I1, E1[:3], title="t", run="r")
    with pytest.raises(NXcanSASError, match="2 frame names for 1 frames"):
        write_nxcansas(out, Q, I1, title="t", run="r", frame_names=["a", "b"])
    with pytest.raises(NXcanSASError, match="layout must be"):
        write_nxcansas(out, Q, I1, title="t", run="r", layout="grid")  # type: ignore[arg-type]
    with pytest.raises(NXcanSASError, match="clashes"):
        write_nxcansas(out, Q, I1, title="t", run="r", process_notes={"name": "x"})
    assert not out.exists() and not list(tmp_path.glob(".x.h5*"))  # no partial file left
