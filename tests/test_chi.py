"""``.chi`` files: byte-exact writing in the original's layout, reading every variant."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from saxs_pipeline.curves.chi import (
    PHI_LABELS,
    RADIAL_LABELS,
    ChiError,
    read_chi,
    write_chi,
    write_slice_chi,
)

from realdata import DATA

CONFIG = {"Geometry": {"Imagesize": [3, 4]}, "Wavelength": 1.54, "Masks": [{"MaskFile": "m.msk"}]}
CONFIG_JSON = json.dumps(CONFIG)

Q = [0.5, 1.25, 2.0]
INTENSITY = [10.0, float("nan"), 0.001]
ERROR = [1.0, float("nan"), -0.0]

EXPECTED_ROWS = (
    " 5.000000000000000000e-01 1.000000000000000000e+01 1.000000000000000000e+00\n"
    " 1.250000000000000000e+00 nan nan\n"
    " 2.000000000000000000e+00 1.000000000000000021e-03 -0.000000000000000000e+00\n"
    " "
)


def test_labels() -> None:
    assert RADIAL_LABELS[0] == "Scattering Vector  q [$nm^{-1}$]"
    assert PHI_LABELS == ["Phi Angle [rad]", "Intensity (Count/Pixel)", "Error Margin"]


def test_write_chi_byte_exact(tmp_path: Path) -> None:
    path = tmp_path / "curve.chi"
    write_chi(
        path,
        np.array(Q),
        np.array(INTENSITY),
        np.array(ERROR),
        config_json=CONFIG_JSON,
        integparams={"I0": 1.5, "I1": 2.0, "I2": 0.25},
    )
    expected = (
        '{"Geometry": {"Imagesize": [3, 4]}, "Wavelength": 1.54, "Masks": [{"MaskFile": "m.msk"}]}\n'
        '{"I0": 1.5, "I1": 2.0, "I2": 0.25}\n'
        '["Scattering Vector  q [$nm^{-1}$]", "Intensity (Count/Pixel)", "Error Margin"]\n'
        "   3\n" + EXPECTED_ROWS
    )
    assert path.read_bytes() == expected.encode("ascii")
    # nothing else (no temp file) is left behind
    assert os.listdir(tmp_path) == ["curve.chi"]


def test_write_phi_chi(tmp_path: Path) -> None:
    path = tmp_path / "phi.chi"
    write_chi(
        path,
        Q,
        INTENSITY,
        ERROR,
        config_json="{}",
        integparams={"I0": 0, "I1": 0, "I2": 0},
        labels=PHI_LABELS,
    )
    assert path.read_text().split("\n")[:4] == [
        "{}",
        '{"I0": 0, "I1": 0, "I2": 0}',
        '["Phi Angle [rad]", "Intensity (Count/Pixel)", "Error Margin"]',
        "   3",
    ]


def test_write_slice_chi_byte_exact(tmp_path: Path) -> None:
    path = tmp_path / "slice.chi"
    labels = ["q_y [$nm^{-1}$]", "Intensity (Count/Pixel)", "Error Margin"]
    write_slice_chi(path, Q, INTENSITY, ERROR, config_json=CONFIG_JSON, labels=labels)
    expected = (
        CONFIG_JSON + "\n"
        '["q_y [$nm^{-1}$]", "Intensity (Count/Pixel)", "Error Margin"]\n'
        "Intensity\n"
        "   3\n" + EXPECTED_ROWS
    )
    assert path.read_text() == expected
    data = read_chi(path)
    assert data.labels == labels
    assert data.integparams is None
    assert data.config == CONFIG


def test_numpy_scalars_in_integparams(tmp_path: Path) -> None:
    path = tmp_path / "c.chi"
    write_chi(
        path,
        Q,
        INTENSITY,
        ERROR,
        config_json="{}",
        integparams={"I0": np.float32(0.5), "I1": np.float64(2.0), "I2": np.int64(3)},
    )
    assert path.read_text().split("\n")[1] == '{"I0": 0.5, "I1": 2.0, "I2": 3}'


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    q = np.linspace(0.003, 6.7, 1003)
    intensity = rng.random(1003) * 1e4
    error = np.sqrt(intensity)
    intensity[:7] = error[:7] = np.nan
    path = tmp_path / "buf.chi"
    write_chi(
        path,
        q,
        intensity,
        error,
        config_json=CONFIG_JSON,
        integparams={"I0": 1.0, "I1": 2.0, "I2": 3.0},
    )
    data = read_chi(path)
    np.testing.assert_array_equal(data.radial, q)  # %.18e round-trips float64 exactly
    np.testing.assert_array_equal(data.intensity, intensity)
    np.testing.assert_array_equal(data.error, error)
    assert data.header[3] == "   1003"
    assert data.config == CONFIG
    assert data.integparams == {"I0": 1.0, "I1": 2.0, "I2": 3.0}
    assert data.labels == RADIAL_LABELS


def test_overwrite_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "c.chi"
    write_chi(
        path,
        np.arange(500.0),
        np.ones(500),
        np.ones(500),
        config_json="{}",
        integparams={"I0": 0, "I1": 0, "I2": 0},
    )
    write_chi(path, Q, INTENSITY, ERROR, config_json="{}", integparams={"I0": 0, "I1": 0, "I2": 0})
    assert len(read_chi(path).radial) == 3


def test_write_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ChiError, match="equal length"):
        write_chi(tmp_path / "a.chi", [1.0, 2.0], [1.0], [1.0], config_json="{}", integparams={})
    with pytest.raises(ChiError, match="single line"):
        write_chi(tmp_path / "a.chi", Q, INTENSITY, ERROR, config_json="{\n}", integparams={})
    assert not list(tmp_path.iterdir())


def test_read_2015_header_order(tmp_path: Path) -> None:
    # April-December 2015: config / labels / integparams, rows already with nan
    path = tmp_path / "old.chi"
    path.write_text(
        CONFIG_JSON + "\n"
        '["q [nm^-1]", "Intensity", "Error"]\n'
        '{"I0": 4.0, "I1": 5.0, "I2": 6.0}\n'
        "   2\n"
        " 1.0e-01 nan nan\n"
        " 2.0e-01 3.0e+00 1.5e+00\n"
        " "
    )
    data = read_chi(path)
    assert data.config == CONFIG
    assert data.labels == ["q [nm^-1]", "Intensity", "Error"]
    assert data.integparams == {"I0": 4.0, "I1": 5.0, "I2": 6.0}
    np.testing.assert_array_equal(data.radial, [0.1, 0.2])
    assert math.isnan(data.intensity[0]) and data.intensity[1] == 3.0
    assert data.error is not None and data.error[1] == 1.5


def test_read_2014_plain_header(tmp_path: Path) -> None:
    path = tmp_path / "2014.chi"
    path.write_text("/data/out/x.chi\nq [nm^-1]\nIntensity\n   2\n 1.0 0.0 0.0\n 2.0 5.0 1.0\n ")
    data = read_chi(path)
    assert data.config is None and data.labels is None and data.integparams is None
    assert data.header == ("/data/out/x.chi", "q [nm^-1]", "Intensity", "   2")
    np.testing.assert_array_equal(data.intensity, [0.0, 5.0])


def test_read_crlf_two_columns(tmp_path: Path) -> None:
    path = tmp_path / "fit2d.chi"
    path.write_bytes(
        b"x.tif: Q-Space Scan\r\nQ (Inverse Nanometres)\r\n\r\n          2\r\n"
        b" 3.3657656E-03  0.0000000E+00\r\n 1.0097297E-02  2.5000000E+00\r\n"
    )
    data = read_chi(path)
    assert data.error is None
    np.testing.assert_array_equal(data.intensity, [0.0, 2.5])


def test_read_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.chi"
    path.write_text("a\nb\n")
    with pytest.raises(ChiError, match=r"bad\.chi.*fewer than the 4 header lines"):
        read_chi(path)
    path.write_text("a\nb\nc\n   3\n 1 2 3\n 4 5 6\n ")
    with pytest.raises(ChiError, match=r"bad\.chi.*declares 3 rows but the file has 2"):
        read_chi(path)
    path.write_text("a\nb\nc\n   2\n 1 2 3\n 4 5\n ")
    with pytest.raises(ChiError, match=r"row 2 has 2 columns"):
        read_chi(path)
    with pytest.raises(ChiError, match=r"absent\.chi"):
        read_chi(tmp_path / "absent.chi")


def test_read_real_fit2d_chi() -> None:
    path = DATA / "buf1_00000.chi"
    if not path.is_file():
        pytest.skip(f"real FIT2D reference curve not found in {DATA}")
    data = read_chi(path)
    assert data.radial.shape == (1002,)
    assert data.error is None
    assert data.radial[0] == pytest.approx(3.3657656e-3, rel=1e-7)
    assert data.header[0] == "buf1_00000.tif: Q-Space Scan"
    assert data.header[3].strip() == "1002"
    assert data.config is None and data.integparams is None and data.labels is None
    assert np.all(np.diff(data.radial) > 0)
