"""Per-frame normalisation values: constants, Pilatus headers (real TIFFs written by
io.images), HDF5 datasets (real h5py files) and beamline CSV tables (real files).
Values are compared exactly: they are read, not computed (the divisor to 1e-15).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.normalisation import NormalisationError, NormalisationResolver
from saxs_pipeline.frames.tiff import read_header, write_pilatus_tiff


def tiff(path: Path, **header) -> Path:
    write_pilatus_tiff(path, np.zeros((4, 5), dtype=np.int32), header)
    return path


def table(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_constants_and_absolute_scale() -> None:
    r = NormalisationResolver({"Monitor": 2.0, "Transmission": 0.5, "Thickness": 0.1,
                               "AbsoluteScale": {"Factor": 3.0, "Uncertainty": 0.1}})
    n = r.resolve("any.tif")
    assert (n.monitor, n.transmission, n.exposure_time, n.thickness) == (2.0, 0.5, None, 0.1)
    assert n.divisor == pytest.approx(0.1, rel=1e-15)
    assert n.multiplier == pytest.approx(30.0, rel=1e-15)
    assert r.absolute_uncertainty == 0.1
    assert NormalisationResolver(None).resolve("x.tif").divisor == 1.0
    assert NormalisationResolver({"AbsoluteScale": 4.0}).resolve("x.tif").multiplier == 4.0


def test_header_values_from_real_tiff_headers(tmp_path: Path) -> None:
    frame = tiff(tmp_path / "s_00001.tif", Exposure_time=0.5, Exposure_time_unit="s",
                 Flux=1.5e12, Comment="no number")
    r = NormalisationResolver({"ExposureTime": {"Header": "Exposure_time"},
                               "Monitor": {"Header": "Flux"}})
    n = r.resolve(frame, 0, read_header(frame))
    assert (n.exposure_time, n.monitor) == (0.5, 1.5e12)
    assert r.resolve(frame).divisor == 0.5 * 1.5e12  # header read from the file itself
    with pytest.raises(NormalisationError, match=r"Monitor: frame .*s_00001.tif has no header key 'I0'"):
        NormalisationResolver({"Monitor": {"Header": "I0"}}).resolve(frame)
    with pytest.raises(NormalisationError, match="header 'Comment': 'no number' is not a number"):
        NormalisationResolver({"Monitor": {"Header": "Comment"}}).resolve(frame)
    zero = tiff(tmp_path / "z.tif", Flux=0)
    with pytest.raises(NormalisationError, match="z.tif header 'Flux': 0.0 is not a positive"):
        r.resolve(zero)


def test_hdf5_dataset_per_frame(tmp_path: Path) -> None:
    master = tmp_path / "run_master.h5"
    with h5py.File(master, "w") as fh:
        fh["entry/instrument/monitor/data"] = np.array([10.0, 20.0, 30.0])
        fh["entry/bad2d"] = np.ones((2, 2))
    r = NormalisationResolver({"Monitor": {"Dataset": "/entry/instrument/monitor/data"}})
    assert [r.resolve(master, i).monitor for i in range(3)] == [10.0, 20.0, 30.0]
    with pytest.raises(NormalisationError, match=r"has 3 values, no index 3"):
        r.resolve(master, 3)
    # a growing file: a later index re-reads the dataset
    with h5py.File(master, "a") as fh:
        del fh["entry/instrument/monitor/data"]
        fh["entry/instrument/monitor/data"] = np.array([10.0, 20.0, 30.0, 40.0])
    assert r.resolve(master, 3).monitor == 40.0
    with pytest.raises(NormalisationError, match="has no dataset /entry/nope"):
        NormalisationResolver({"Monitor": {"Dataset": "/entry/nope"}}).resolve(master)
    with pytest.raises(NormalisationError, match=r"must be 1-D .*\(2, 2\)"):
        NormalisationResolver({"Monitor": {"Dataset": "/entry/bad2d"}}).resolve(master)
    with pytest.raises(NormalisationError, match="not a readable HDF5 file"):
        r.resolve(tiff(tmp_path / "a.tif"))


def test_table_matches_by_file_name(tmp_path: Path) -> None:
    table(tmp_path / "run.csv",
          "filename,i0,trans\n"
          "/beamline/data/s_00001.tif,1000,0.8\n"
          "s_00002.tif,2000,\n"
          "/beamline/a/dup.tif,1,0.5\n"
          "/beamline/b/dup.tif,2,0.6\n")
    cal = tmp_path / "cal"
    cal.mkdir()
    r = NormalisationResolver(
        {"Monitor": {"Table": "../run.csv", "Column": "i0"},
         "Transmission": {"Table": "../run.csv", "Column": "trans", "FileColumn": "filename"}},
        base_dir=cal)
    n = r.resolve("/other/dir/s_00001.tif")
    assert (n.monitor, n.transmission) == (1000.0, 0.8)
    assert r.resolve("/x/b/dup.tif").transmission == 0.6  # directory suffix decides
    with pytest.raises(NormalisationError, match=r"line 3 \(s_00002.tif\) column 'trans': '' is not a number"):
        r.resolve("s_00002.tif")
    with pytest.raises(NormalisationError, match=r"no row for frame .*s_00009.tif"):
        r.resolve("s_00009.tif")
    with pytest.raises(NormalisationError, match=r"several rows for frame dup.tif \(lines 4, 5\)"):
        r.resolve("dup.tif")


def test_table_columns_are_checked_once(tmp_path: Path) -> None:
    table(tmp_path / "run.csv", "file,i0\na.tif,1\n")
    with pytest.raises(NormalisationError, match=r"has no column 'filename' \(columns: \['file', 'i0'\]\)"):
        NormalisationResolver({"Monitor": {"Table": "run.csv", "Column": "i0"}}, base_dir=tmp_path)
    with pytest.raises(NormalisationError, match="has no column 'mon'"):
        NormalisationResolver({"Monitor": {"Table": "run.csv", "Column": "mon", "FileColumn": "file"}},
                              base_dir=tmp_path)
    with pytest.raises(NormalisationError, match="cannot be read"):
        NormalisationResolver({"Monitor": {"Table": "missing.csv", "Column": "i0"}}, base_dir=tmp_path)


@pytest.mark.parametrize(("config", "message"), [
    ({"Monitr": 1}, r"unknown keys \['Monitr'\]"),
    ({"Monitor": -1}, r"\$.Normalisation.Monitor: -1.0 is not a positive number"),
    ({"Monitor": True}, "True is not a number"),
    ({"Thickness": 0}, r"\$.Normalisation.Thickness: 0.0 is not a positive"),
    ({"Monitor": {"Header": "a", "Dataset": "b"}}, "give a number or one of"),
    ({"Monitor": {"Header": ""}}, r"Monitor.Header must be a non-empty string"),
    ({"Monitor": {"Header": "a", "Column": "x"}}, r"unknown keys \['Column'\] for a Header"),
    ({"AbsoluteScale": {"Uncertainty": 1}}, "AbsoluteScale must be a number or"),
    ({"AbsoluteScale": {"Factor": 1, "Uncertainty": -1}}, "Uncertainty: -1 is not >= 0"),
])
def test_bad_configuration(config: dict, message: str) -> None:
    with pytest.raises(NormalisationError, match=message):
        NormalisationResolver(config)


def test_from_calibration_resolves_tables_next_to_the_calibration_file(tmp_path: Path) -> None:
    import json

    table(tmp_path / "mon.csv", "filename,i0\nf.tif,5\n")
    (tmp_path / "cal.json").write_text(json.dumps({
        "Geometry": {"Tilt": {"TiltAngleDeg": 0, "TiltRotDeg": 0}, "BeamCenter": [1, 1],
                     "DedectorDistanceMM": 100, "PixelSizeMicroM": [172], "Imagesize": [4, 5]},
        "Wavelength": 1.0, "Masks": [{"MaskFile": "m.msk"}]}))
    cal = load_calibration(tmp_path / "cal.json")
    cal.raw["Normalisation"] = {"Monitor": {"Table": "mon.csv", "Column": "i0"}}
    assert NormalisationResolver.from_calibration(cal).resolve("f.tif").monitor == 5.0
