"""``saxs-absolute`` with real .chi files and a real reference text file: the factor of
synthetic noise-free curves is recovered to 1e-9 and written into a copy of the
calibration with every other key kept in order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from saxs_pipeline.cli.absolute import main, read_curve
from saxs_pipeline.curves.chi import write_chi
from saxs_pipeline.ops.absolute import water_cross_section

Q = np.linspace(0.1, 3.0, 100)
CAL = {"Title": "x", "Geometry": {"BeamCenter": [1, 2]}, "Masks": [{"MaskFile": "m.msk"}],
       "Normalisation": {"Thickness": 0.1}}


def chi(path: Path, intensity: np.ndarray) -> str:
    write_chi(path, Q, intensity, np.sqrt(intensity), config_json="{}", integparams={})
    return str(path)


def test_water(tmp_path: Path, capsys) -> None:
    (tmp_path / "cal.json").write_text(json.dumps(CAL))
    factor, d = 2e-6, 0.1
    empty = np.full(Q.size, 300.0)
    water = 0.4 * (water_cross_section(25.0) * d / factor + empty / 0.9)
    out = tmp_path / "abs.json"
    assert main(["water", str(tmp_path / "cal.json"), "-o", str(out), "--thickness", "0.1",
                 "--water", chi(tmp_path / "w.chi", water), "--empty",
                 chi(tmp_path / "e.chi", empty), "--water-transmission", "0.4",
                 "--empty-transmission", "0.9", "--temperature", "25"]) == 0
    assert "AbsoluteScale 2e-06" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert list(written) == list(CAL)
    assert list(written["Normalisation"]) == ["Thickness", "AbsoluteScale"]
    assert written["Normalisation"]["AbsoluteScale"]["Factor"] == pytest.approx(factor, rel=1e-9)


def test_glassy_carbon_with_a_reference_in_per_angstrom(tmp_path: Path) -> None:
    (tmp_path / "cal.json").write_text(json.dumps(CAL))
    ref_q_a = np.linspace(0.005, 0.35, 60)  # 1/angstrom
    ref = 20.0 / (1 + (ref_q_a / 0.03) ** 2) + 0.3
    (tmp_path / "ref.dat").write_text("# q(1/A), I(1/cm), err\n" + "".join(
        f"{a:.17g}, {b:.17g}, {0.01 * b:.17g}\n" for a, b in zip(ref_q_a, ref, strict=True)))
    rq, ri, re = read_curve(str(tmp_path / "ref.dat"), "1/angstrom")
    np.testing.assert_allclose(rq, ref_q_a * 10)
    measured = np.interp(Q, rq, ri) * 0.5 * 0.1 / 4e-4
    out = tmp_path / "abs.json"
    assert main(["glassy-carbon", str(tmp_path / "cal.json"), "-o", str(out), "--sample",
                 chi(tmp_path / "gc.chi", measured), "--reference", str(tmp_path / "ref.dat"),
                 "--reference-q-units", "1/angstrom", "--thickness", "0.1",
                 "--transmission", "0.5", "--q-range", "0.2", "2.5"]) == 0
    scale = json.loads(out.read_text())["Normalisation"]["AbsoluteScale"]
    assert scale["Factor"] == pytest.approx(4e-4, rel=1e-9)


def test_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "cal.json").write_text(json.dumps(CAL))
    w = chi(tmp_path / "w.chi", np.full(Q.size, 100.0))
    out = str(tmp_path / "abs.json")
    assert main(["water", str(tmp_path / "cal.json"), "-o", out, "--thickness", "-1",
                 "--water", w]) == 1
    assert "thickness must be a positive number" in capsys.readouterr().err
    assert main(["water", str(tmp_path / "cal.json"), "-o", out, "--thickness", "0.1",
                 "--water", w, "--q-range", "10", "20"]) == 1
    assert "does not overlap" in capsys.readouterr().err
    (tmp_path / "bad.dat").write_text("1 2 3 4\n")
    assert main(["glassy-carbon", str(tmp_path / "cal.json"), "-o", out, "--thickness", "0.1",
                 "--sample", w, "--reference", str(tmp_path / "bad.dat")]) == 1
    assert "rows of 2 or 3 numbers" in capsys.readouterr().err
    assert main(["water", str(tmp_path / "missing.json"), "-o", out, "--thickness", "0.1",
                 "--water", w]) == 1
    assert not Path(out).exists()
