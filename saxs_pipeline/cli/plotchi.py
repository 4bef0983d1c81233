"""``plotchi``: plot ``.chi`` curve files (saxs_pipeline/Saxsdog and FIT2D alike)."""

from __future__ import annotations

import argparse
import builtins
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.curves.chi import ChiData, ChiError, read_chi

__all__ = ["build_parser", "load_curves", "main", "make_plot", "row_range"]

log = logging.getLogger(__name__)

SCALES = ("linear", "log", "symlog")

DESCRIPTION = """\
Plot one or more .chi files: intensity against q, one line per file. Every .chi variant
is read: files written by saxs_pipeline or the original Saxsdog (4 header lines, q,
intensity and error columns; empty bins are nan) and FIT2D's 2-column files. Where a file
has an error column, a shaded band of +- error is drawn around its curve.

With -c (compare mode) the first file is the reference: every other file is interpolated
onto the reference's q values and drawn as the difference (other - reference); a second
y axis on the right shows the relative difference in percent (dashed lines), with zero
aligned on both axes.

Without -o the plot is shown in a window; where there is no display, use -o.
"""

EPILOG = """\
examples:
  plotchi -l sample_00001.chi sample_00002.chi
  plotchi -o curves.svg -t "buffer" buf1_00000.chi buf1_00001.chi
  plotchi -c -o diff.png reference.chi other.chi

exit status: 0 on success, 1 if a file cannot be read or the plot cannot be shown or
saved, 2 on usage errors.
"""


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plotchi",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", metavar="CHIFILE", nargs="+", help=".chi file(s) to plot")
    parser.add_argument(
        "-o", "--out", metavar="FILE", dest="out",
        help="save the plot to FILE instead of showing it; the format follows the suffix "
        "(.png, .svg, .pdf, .eps, ...)",
    )
    parser.add_argument(
        "-c", "--compare", action="store_true",
        help="compare mode: plot every other file's difference to the first file, with the "
        "relative difference in %% on a second y axis",
    )
    parser.add_argument(
        "-l", "--log", action="store_true",
        help="logarithmic intensity axis (same as -y log; -y wins if both are given)",
    )
    parser.add_argument("-n", "--no-legend", dest="legend", action="store_false", help="hide the legend")
    parser.add_argument(
        "-t", "--title", metavar="TITLE",
        help="plot title (default: the name of the last file)",
    )
    parser.add_argument(
        "-s", "--skip", metavar="N", type=_count, default=0,
        help="leave out the first N points of every file (default: 0)",
    )
    parser.add_argument(
        "-k", "--clip", metavar="N", type=_count, default=1,
        help="leave out the last N points of every file (default: 1, as the original "
        "plotchi; 0 plots every point)",
    )
    parser.add_argument(
        "-x", "--xscale", choices=SCALES, default="linear", metavar="SCALE",
        help="scale of the q axis: linear, log or symlog (default: linear)",
    )
    parser.add_argument(
        "-y", "--yscale", choices=SCALES, default=None, metavar="SCALE",
        help="scale of the intensity axis: linear, log or symlog (default: linear, or log with -l)",
    )
    return parser


def row_range(n: int, skip: int, clip: int) -> builtins.slice:
    """Rows ``skip .. n - clip``. ``clip = 0`` keeps the tail: the original's
    ``data[skip:-clip]`` turned ``-k 0`` into an empty selection."""
    return builtins.slice(skip, n - clip)


def _select(path: str, data: ChiData, skip: int, clip: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    n = data.radial.size
    rows = row_range(n, skip, clip)
    x = data.radial[rows]
    if x.size == 0:
        raise ChiError(
            f"chi {path}: nothing left to plot after skipping {skip} and clipping {clip} of its {n} rows"
        )
    err = data.error[rows] if data.error is not None else None
    return x, data.intensity[rows], err


def _x_label(curves: Sequence[ChiData]) -> str:
    from saxs_pipeline.curves.plot import Q_LABEL

    labels = curves[0].labels
    if labels and str(labels[0]).lower().startswith("phi"):
        return "phi [rad]"
    return Q_LABEL


def _plot_curves(ax: Any, paths: Sequence[str], curves: Sequence[ChiData], args: argparse.Namespace, yscale: str) -> None:
    from saxs_pipeline.curves.plot import Band, draw_curve

    single = len(curves) == 1
    for path, data in zip(paths, curves, strict=True):
        x, y, err = _select(path, data, args.skip, args.clip)
        bands = []
        if err is not None:
            label = "Count Error" if single else f"{path} (count error)"
            bands.append(Band(err, alpha=0.2, label=label))
        # The band's lower edge is clipped (as the original, at 0.01) only where a log
        # axis would lose it; on linear axes it is drawn as is.
        draw_curve(ax, x, y, bands, floor=0.01 if yscale == "log" else None, label=path)


def _plot_differences(ax: Any, paths: Sequence[str], curves: Sequence[ChiData], args: argparse.Namespace) -> Any:
    ref_x, ref_y, _ = _select(paths[0], curves[0], args.skip, args.clip)
    ax2 = ax.twinx()
    for path, data in zip(paths[1:], curves[1:], strict=True):
        ok = np.isfinite(data.radial) & np.isfinite(data.intensity)
        order = np.argsort(data.radial[ok], kind="stable")
        ox, oy = data.radial[ok][order], data.intensity[ok][order]
        if ox.size == 0:
            raise ChiError(f"chi {path}: no finite data points to compare")
        # Outside the other curve's q range there is nothing to compare: NaN, not a
        # constant extrapolation.
        other = np.interp(ref_x, ox, oy, left=np.nan, right=np.nan)
        diff = other - ref_y
        (line,) = ax.plot(ref_x, diff, label=f"{path} - {paths[0]}")
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(ref_y != 0, diff / ref_y * 100.0, np.nan)
        ax2.plot(ref_x, rel, linestyle="--", color=line.get_color(), label=f"{path} (%)")
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_ylabel("Intensity difference [counts/pixel]")
    ax2.set_ylabel("relative difference [%] (dashed)")
    return ax2


def load_curves(args: argparse.Namespace) -> list[ChiData]:
    """Read the files of the parsed ``args``; :class:`~saxs_pipeline.curves.chi.ChiError` for
    a file that cannot be read or a compare mode without a second file."""
    if args.compare and len(args.files) < 2:
        raise ChiError("compare mode (-c) needs a reference file and at least one more file")
    return [read_chi(p) for p in args.files]


def make_plot(args: argparse.Namespace, fig: Any, curves: Sequence[ChiData] | None = None) -> Any:
    """Draw the plot the parsed ``args`` describe into ``fig`` (reading the files unless
    ``curves`` are given); returns the main axes. Raises
    :class:`~saxs_pipeline.curves.chi.ChiError` for unreadable or unusable files."""
    from saxs_pipeline.curves.plot import INTENSITY_LABEL, align_zero

    paths = [os.fspath(p) for p in args.files]
    if curves is None:
        curves = load_curves(args)
    yscale = args.yscale or ("log" if args.log else "linear")
    ax = fig.add_subplot(111)
    ax2 = None
    if args.compare:
        ax2 = _plot_differences(ax, paths, curves, args)
    else:
        _plot_curves(ax, paths, curves, args, yscale)
        ax.set_ylabel(INTENSITY_LABEL)
    ax.set_xlabel(_x_label(curves))
    # Masked, not clipped: FIT2D writes 0 for empty bins, which a log axis would draw as
    # drops to the bottom edge.
    ax.set_xscale(args.xscale, **({"nonpositive": "mask"} if args.xscale == "log" else {}))
    ax.set_yscale(yscale, **({"nonpositive": "mask"} if yscale == "log" else {}))
    if ax2 is not None and yscale != "log":
        align_zero(ax, ax2)
    ax.set_title(args.title if args.title is not None else Path(paths[-1]).name)
    if args.legend:
        handles, labels = ax.get_legend_handles_labels()
        if ax2 is not None:
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, fontsize="small")
    return ax


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``plotchi``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="plotchi: %(message)s")
    from saxs_pipeline.curves.plot import NoDisplayError, new_figure, save_figure

    try:
        curves = load_curves(args)
    except ChiError as exc:
        print(f"plotchi: error: {exc}", file=sys.stderr)
        return 1
    try:
        fig = new_figure() if args.out else new_figure(interactive=True)
    except NoDisplayError as exc:
        print(f"plotchi: error: {exc}; use -o FILE to save the plot to a file", file=sys.stderr)
        return 1
    try:
        make_plot(args, fig, curves)
    except ChiError as exc:
        print(f"plotchi: error: {exc}", file=sys.stderr)
        return 1
    if args.out:
        try:
            save_figure(fig, args.out)
        except (ValueError, OSError) as exc:
            print(f"plotchi: error: cannot save the plot: {exc}", file=sys.stderr)
            return 1
        return 0
    import matplotlib.pyplot as plt

    plt.show()
    return 0


if __name__ == "__main__":
    sys.exit(main())
