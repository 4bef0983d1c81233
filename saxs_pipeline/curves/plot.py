"""Shared matplotlib drawing of integrated curves with error bands.

Used by the seed API's ``calibration.plot``, by ``plotchi`` and by other command-line
tools. Figures that are only saved are plain :class:`matplotlib.figure.Figure` objects,
never registered with pyplot: a frame loop that writes one plot per image does not leak
figures, and no GUI backend is needed. Only figures meant to be shown go through pyplot,
and without a display the non-interactive Agg backend is selected first so nothing tries
to open a window.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

if TYPE_CHECKING:
    from saxs_pipeline.integrator import Curve

__all__ = [
    "INTENSITY_LABEL",
    "Q_LABEL",
    "Band",
    "NoDisplayError",
    "align_zero",
    "draw_cake",
    "draw_curve",
    "ensure_backend",
    "has_display",
    "new_figure",
    "save_figure",
    "write_frame_png",
    "write_frame_svg",
]

log = logging.getLogger(__name__)

Q_LABEL = "q [1/nm]"
INTENSITY_LABEL = "Intensity [counts/pixel]"


class NoDisplayError(RuntimeError):
    """A plot was to be shown but there is no display (or only a file backend)."""


@dataclass(frozen=True)
class Band:
    """A symmetric error band ``y +- error`` drawn behind a curve; ``color=None`` takes the
    curve's colour."""

    error: Any
    color: str | None = None
    alpha: float = 0.2
    label: str | None = None


def has_display() -> bool:
    """Whether a window can be opened: on X11/Wayland systems this needs ``DISPLAY`` or
    ``WAYLAND_DISPLAY``; macOS and Windows always have one."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _interactive_backend(name: str) -> bool:
    from matplotlib.backends import BackendFilter, backend_registry

    return name.lower() in backend_registry.list_builtin(BackendFilter.INTERACTIVE)


def ensure_backend() -> None:
    """Select Agg when there is no display, unless pyplot is already running or the user
    chose a backend through ``MPLBACKEND``."""
    if has_display() or "matplotlib.pyplot" in sys.modules or os.environ.get("MPLBACKEND"):
        return
    import matplotlib

    matplotlib.use("Agg")


def new_figure(*, pyplot: bool = False, interactive: bool = False, **kwargs: Any) -> Figure:
    """A new figure.

    ``pyplot=False`` (default): a standalone figure for saving only. ``pyplot=True``: a
    pyplot-managed figure (what ``plt.show()`` displays), with Agg selected when there is
    no display. ``interactive=True`` additionally requires a usable GUI backend and raises
    :class:`NoDisplayError` otherwise.
    """
    if not (pyplot or interactive):
        return Figure(**kwargs)
    if interactive and not has_display():
        raise NoDisplayError("no display to show the plot on")
    ensure_backend()
    import matplotlib.pyplot as plt

    if interactive and not _interactive_backend(plt.get_backend()):
        raise NoDisplayError(f"matplotlib backend {plt.get_backend()!r} cannot show windows")
    return plt.figure(**kwargs)


def draw_curve(
    ax: Axes,
    x: Any,
    y: Any,
    bands: Sequence[Band] = (),
    *,
    floor: float | None = None,
    positive_only: bool = False,
    label: str | None = None,
    **line_kwargs: Any,
) -> Line2D:
    """Draw ``y(x)`` with error bands ``y +- band.error`` behind it; returns the line.

    The line keeps non-finite points as gaps (NaN marks empty bins in ``.chi`` files);
    bands leave them out. ``floor`` clips the lower edge of every band, which keeps bands
    visible on log axes where ``y - error`` reaches zero or below. ``positive_only`` drops
    the points with ``y <= 0`` or NaN altogether.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in shape: {x.shape} and {y.shape}")
    keep = (y > 0) if positive_only else np.ones(y.shape, dtype=bool)
    x, y = x[keep], y[keep]
    (line,) = ax.plot(x, y, label=label, **line_kwargs)
    for band in bands:
        err = np.asarray(band.error, dtype=np.float64)
        if err.shape != keep.shape:
            raise ValueError(f"error band has shape {err.shape}, the curve {keep.shape}")
        err = err[keep]
        lower, upper = y - err, y + err
        if floor is not None:
            lower = np.maximum(lower, floor)
        ok = np.isfinite(lower) & np.isfinite(upper) & np.isfinite(x)
        # Bands go below the line (fill zorder 1 < line zorder 2) whatever the order drawn.
        ax.fill_between(
            x, lower, upper, where=ok, facecolor=band.color or line.get_color(),
            alpha=band.alpha, linewidth=0, label=band.label,
        )
    return line


def draw_cake(ax: Axes, q: Any, chi: Any, intensity: Any, *, log_scale: bool = True,
              colorbar: bool = True) -> Any:
    """Draw a cake I(q, chi) (``intensity`` of shape ``(chi, q)``, bin centres ``q`` and
    ``chi`` in degrees, uniform) as an image, q along x; empty cells (NaN) stay blank, as
    do cells <= 0 on the log scale. Returns the image."""
    from matplotlib.colors import LogNorm

    q, chi = np.asarray(q, np.float64), np.asarray(chi, np.float64)
    z = np.asarray(intensity, dtype=np.float64)
    if z.shape != (chi.size, q.size):
        raise ValueError(f"a cake of shape {z.shape} needs (chi, q) = {(chi.size, q.size)}")
    half_q = 0.5 * (q[1] - q[0]) if q.size > 1 else 0.5
    half_chi = 0.5 * (chi[1] - chi[0]) if chi.size > 1 else 180.0
    norm = None
    if log_scale:
        z = np.where(z > 0, z, np.nan)
        finite = z[np.isfinite(z)]
        if finite.size:
            norm = LogNorm(vmin=float(finite.min()), vmax=float(finite.max()))
    image = ax.imshow(z, origin="lower", aspect="auto", interpolation="nearest", norm=norm,
                      extent=(q[0] - half_q, q[-1] + half_q, chi[0] - half_chi, chi[-1] + half_chi))
    ax.set_xlabel(Q_LABEL)
    ax.set_ylabel("chi [deg]")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=INTENSITY_LABEL)
    return image


def align_zero(ax1: Axes, ax2: Axes) -> None:
    """Set the y limits of two axes sharing x (``twinx``) so that y = 0 is at the same
    height in both, keeping all data in view. ``ax1``'s zero position is kept when
    ``ax2``'s data allow it."""
    (lo1, hi1), (lo2, hi2) = ax1.get_ylim(), ax2.get_ylim()
    lo1, hi1, lo2, hi2 = min(lo1, 0.0), max(hi1, 0.0), min(lo2, 0.0), max(hi2, 0.0)
    if hi1 == lo1 or hi2 == lo2:
        return

    def fits(f: float, lo: float, hi: float) -> bool:
        # zero at the bottom edge needs no negative data, at the top edge no positive
        return (f > 0 or lo >= 0) and (f < 1 or hi <= 0)

    def limits(f: float, lo: float, hi: float) -> tuple[float, float]:
        if f <= 0:
            return 0.0, hi
        if f >= 1:
            return lo, 0.0
        height = max(-lo / f, hi / (1.0 - f))
        return -f * height, (1.0 - f) * height

    frac1, frac2 = -lo1 / (hi1 - lo1), -lo2 / (hi2 - lo2)
    f = frac1
    if not fits(f, lo2, hi2):
        f = frac2 if fits(frac2, lo1, hi1) else 0.5
    ax1.set_ylim(*limits(f, lo1, hi1))
    ax2.set_ylim(*limits(f, lo2, hi2))


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``fig``; the format follows the file suffix (png, svg, pdf, ...). An unknown
    suffix is a ValueError naming the supported ones."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or None
    supported = fig.canvas.get_supported_filetypes()
    if fmt is not None and fmt not in supported:
        raise ValueError(
            f"{path}: unknown plot format {fmt!r}; use one of {', '.join(sorted(supported))}"
        )
    fig.savefig(path, format=fmt)
    log.debug("plot written to %s", path)
    return path


# Per-frame pictures (saxsdog -s, -p): standalone figures, no pyplot state, safe in
# worker threads.


def write_frame_svg(curves: Sequence[Curve], path: Path, title: str = "") -> None:
    """The original's per-frame plot: mean on a log axis with std and Poisson bands."""
    fig = new_figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for c in curves:
        if c.kind != "Radial" or c.phi or c.chi is not None:
            continue
        bands = [Band(c.poisson, "tab:blue", 0.4)]
        if c.std is not None:
            bands.insert(0, Band(c.std, "yellow", 0.6))
        draw_curve(ax, c.radial, c.mean, bands, floor=1.0, positive_only=True, label=c.key, lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel(Q_LABEL)
    ax.set_ylabel(INTENSITY_LABEL)
    ax.set_title(title)
    _atomic_savefig(fig, path, "svg")


def write_frame_png(image: np.ndarray, path: Path) -> None:
    """The raw frame as a PNG (log scale; negative gap pixels shown as 0)."""
    h, w = image.shape
    fig = new_figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(np.log1p(np.clip(image, 0, None).astype(np.float32)), cmap="viridis",
              interpolation="nearest")
    _atomic_savefig(fig, path, "png")


def _atomic_savefig(fig: Any, path: Path, fmt: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format=fmt)
    os.replace(tmp, path)
