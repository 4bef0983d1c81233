"""plotchi: every .chi variant to PNG/SVG, compare mode, the options, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from saxs_pipeline.cli.plotchi import build_parser, main, make_plot, row_range
from saxs_pipeline.curves.chi import write_chi

from realdata import require

PNG = b"\x89PNG\r\n\x1a\n"
N = 50


def curve(tmp_path: Path, name: str, offset: float = 0.0) -> Path:
    q = np.linspace(0.05, 5.0, N)
    intensity = 1000.0 * np.exp(-q) + 10.0 + offset
    intensity[:3] = np.nan  # empty bins behind the beam stop
    path = tmp_path / name
    write_chi(path, q, intensity, np.sqrt(intensity) / 3, config_json=json.dumps({"Title": name}),
              integparams={"I0": 0.0, "I1": 0.0, "I2": 0.0})
    return path


def run(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def plot(*args) -> tuple[Figure, object]:
    fig = Figure()
    ax = make_plot(build_parser().parse_args([str(a) for a in args]), fig)
    return fig, ax


def test_png_and_svg_of_saxs_pipeline_files(tmp_path, capsys) -> None:
    a, b = curve(tmp_path, "a.chi"), curve(tmp_path, "b.chi", 50.0)
    png, svg = tmp_path / "plot.png", tmp_path / "plot.svg"
    assert run(capsys, "-o", png, "-l", a, b) == (0, "")
    assert png.read_bytes()[:8] == PNG
    assert run(capsys, "-o", svg, "-t", "two curves", "-n", "-x", "log", a, b) == (0, "")
    assert "<svg" in svg.read_text()


def test_fit2d_file(tmp_path, capsys) -> None:
    fit2d = require("buf1_00000.chi")  # 2 columns, CRLF, zeros for empty bins
    out = tmp_path / "fit2d.png"
    assert run(capsys, "-o", out, "-l", fit2d) == (0, "")
    assert out.read_bytes()[:8] == PNG
    _, ax = plot("-l", fit2d)
    assert len(ax.collections) == 0  # no error column, no band
    assert ax.lines[0].get_xdata().size == 1002 - 1  # default -k 1


def test_layout_labels_band_and_title(tmp_path) -> None:
    a = curve(tmp_path, "a.chi")
    _, ax = plot("-y", "symlog", a)
    assert ax.get_xlabel() == "q [1/nm]" and ax.get_ylabel() == "Intensity [counts/pixel]"
    assert ax.get_yscale() == "symlog" and ax.get_title() == "a.chi"
    assert len(ax.collections) == 1  # the error band
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(a), "Count Error"]
    _, ax = plot("-n", "-t", "mine", a)
    assert ax.get_legend() is None and ax.get_title() == "mine"


def test_skip_and_clip_and_clip_zero(tmp_path) -> None:
    a = curve(tmp_path, "a.chi")
    assert plot(a)[1].lines[0].get_xdata().size == N - 1
    assert plot("-k", "0", a)[1].lines[0].get_xdata().size == N  # 0 = no clipping
    x = plot("-s", "5", "-k", "3", a)[1].lines[0].get_xdata()
    assert x.size == N - 8 and x[0] == pytest.approx(np.linspace(0.05, 5.0, N)[5])
    assert row_range(10, 0, 0) == slice(0, 10)


def test_compare_mode(tmp_path, capsys) -> None:
    ref, other = curve(tmp_path, "ref.chi"), curve(tmp_path, "other.chi", 5.0)
    out = tmp_path / "diff.png"
    assert run(capsys, "-c", "-o", out, ref, other) == (0, "")
    assert out.read_bytes()[:8] == PNG

    fig, ax = plot("-c", "-k", "0", ref, other)
    ax2 = [a for a in fig.axes if a is not ax][0]
    diff = ax.lines[0].get_ydata()
    finite = np.isfinite(diff)
    assert finite.sum() == N - 3
    np.testing.assert_allclose(diff[finite], 5.0)
    q = np.linspace(0.05, 5.0, N)
    ref_i = 1000.0 * np.exp(-q) + 10.0
    np.testing.assert_allclose(ax2.lines[0].get_ydata()[finite], (5.0 / ref_i * 100)[finite])
    assert ax2.get_ylabel().startswith("relative difference [%]")
    # zero sits at the same height on both y axes
    (lo1, hi1), (lo2, hi2) = ax.get_ylim(), ax2.get_ylim()
    assert -lo1 / (hi1 - lo1) == pytest.approx(-lo2 / (hi2 - lo2), abs=1e-9)


def test_compare_needs_two_files(tmp_path, capsys) -> None:
    code, err = run(capsys, "-c", "-o", tmp_path / "x.png", curve(tmp_path, "a.chi"))
    assert code == 1 and "needs a reference file and at least one more" in err


def test_bad_files_give_a_clear_error(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.chi"
    bad.write_text("a\nb\nc\n   2\n 1.0 2.0\n 1.0 oops\n")
    out = tmp_path / "x.png"
    code, err = run(capsys, "-o", out, bad)
    assert code == 1 and str(bad) in err and "non-numeric" in err and not out.exists()
    code, err = run(capsys, "-o", out, tmp_path / "missing.chi")
    assert code == 1 and "missing.chi" in err and "cannot be read" in err
    code, err = run(capsys, "-o", out, "-s", "60", curve(tmp_path, "a.chi"))
    assert code == 1 and "nothing left to plot" in err
    code, err = run(capsys, "-o", tmp_path / "x.nosuchformat", curve(tmp_path, "a.chi"))
    assert code == 1 and "unknown plot format" in err


def test_usage_errors_exit_2(tmp_path, capsys) -> None:
    for args in (["-k", "-1", "a.chi"], ["-y", "cubic", "a.chi"], []):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
    capsys.readouterr()


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="these always have a display")
def test_without_display_asks_for_o(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, err = run(capsys, curve(tmp_path, "a.chi"))
    assert code == 1 and "use -o FILE" in err


def test_help_documents_every_option(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--compare", "--log", "--no-legend", "--title", "--skip", "--clip",
                   "--xscale", "--yscale", "0 plots every point", "symlog"):
        assert option in text
