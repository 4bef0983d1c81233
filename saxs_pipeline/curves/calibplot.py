"""Pictures of a calibration check and of a data mask (matplotlib; drawing only).

The numbers come from :mod:`saxs_pipeline.ops.calibcheck` and
:mod:`saxs_pipeline.ops.datamask`; this module turns them into what a person judges at a
glance: the frame on a log scale with the mask, the beam centre and this geometry's
calibrant rings drawn over it; the azimuthal average with the
calibrant's positions marked; the curves of 8 sectors overlaid (a wrong centre or tilt
shows as peaks that move with azimuth) with the offsets' spread as one figure; and the
offsets per ring and sector.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from saxs_pipeline.ops import geometry as geo
from saxs_pipeline.ops.calibcheck import CalibrationCheck
from saxs_pipeline.ops.calibrants import Calibrant
from saxs_pipeline.ops.datamask import CAUSES
from saxs_pipeline.ops.ringmodel import Frame, Params, azimuth, ray_points, two_theta_at

__all__ = ["plot_check", "plot_mask"]

_CAUSE_COLOURS = {1: "#7f7f7f", 2: "#000000", 3: "#8c564b", 4: "#1f77b4", 5: "#9467bd", 6: "#d62728", 7: "#2ca02c"}


def _figure(size):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=size, layout="constrained")


def _log_image(ax, image, valid, title):
    shown = np.where(valid, np.maximum(image, 0) + 1.0, np.nan)
    lo, hi = np.nanpercentile(shown, [1, 99.8]) if np.isfinite(shown).any() else (1, 10)
    im = ax.imshow(np.log10(shown), cmap="magma", vmin=math.log10(lo), vmax=math.log10(hi), interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row from top (px)")
    return im


def _curves(image, valid, geometry, sectors):
    """Mean intensity vs q (nm^-1) over all azimuths and per sector, 1-px radial bins."""
    frame = Frame(tuple(image.shape), tuple(geometry.pixel_size_um))
    p = Params.from_geometry(geometry)
    vv, uu = np.nonzero(valid)
    tth = two_theta_at(uu + 0.5, vv + 0.5, p, frame)
    phi = azimuth(uu + 0.5, vv + 0.5, p, frame)
    q = geo.q_scale(geometry.wavelength_a) * np.sin(tth / 2)
    rad = geometry.distance_mm * np.tan(tth) / frame.mean_pixel_mm
    nb = int(rad.max()) + 1
    b = rad.astype(int)
    s = ((phi + math.pi) * sectors / (2 * math.pi)).astype(int).clip(0, sectors - 1)
    val = image[vv, uu].astype(float)
    qs = np.bincount(b, weights=q, minlength=nb) / np.maximum(np.bincount(b, minlength=nb), 1)
    whole = np.bincount(b, weights=val, minlength=nb) / np.maximum(np.bincount(b, minlength=nb), 1)
    flat = s * nb + b
    n = np.bincount(flat, minlength=sectors * nb).reshape(sectors, nb)
    per = np.bincount(flat, weights=val, minlength=sectors * nb).reshape(sectors, nb) / np.maximum(n, 1)
    per[n < 5] = np.nan
    return qs, whole, per


def plot_check(path: str | Path, image: np.ndarray, valid: np.ndarray, geometry: geo.Geometry,
               calibrant: Calibrant, check: CalibrationCheck, title: str = "") -> None:
    """Write the check picture of ``geometry`` on ``image`` to ``path`` (PNG/PDF/SVG)."""
    plt, fig = _figure((15, 10))
    axes = fig.subplot_mosaic([["frame", "curve"], ["frame", "sectors"], ["offsets", "offsets"]],
                              height_ratios=[1, 1, 0.9])
    ax = axes["frame"]
    _log_image(ax, image, valid, title or f"{calibrant.name}: {check.message.split(':')[0]}")
    frame = Frame(tuple(image.shape), tuple(geometry.pixel_size_um))
    p = Params.from_geometry(geometry)
    phi = np.linspace(-math.pi, math.pi, 720)
    for _, t in calibrant.visible(geometry.wavelength_a):
        u, v = ray_points(np.full(phi.size, t), phi, p, frame)
        inside = (u > 0) & (u < image.shape[1]) & (v > 0) & (v < image.shape[0])
        if inside.any():
            ax.plot(np.where(inside, u - 0.5, np.nan), np.where(inside, v - 0.5, np.nan), lw=0.7, color="cyan")
    cu, cv = p.centre_uv(frame)
    ax.plot([cu - 0.5], [cv - 0.5], "+", color="lime", ms=14, mew=2)
    qs, whole, per = _curves(image, valid, geometry, 8)
    qmarks = [geo.q_scale(geometry.wavelength_a) * math.sin(t / 2) for _, t in calibrant.visible(geometry.wavelength_a)]
    for name, data in (("curve", [whole]), ("sectors", per)):
        a = axes[name]
        for k, y in enumerate(data):
            a.plot(qs, y, lw=0.8, label=None if name == "curve" else f"{k * 45 - 180}..{k * 45 - 135} deg")
        for qm in qmarks:
            if qs[0] < qm < qs[-1]:
                a.axvline(qm, color="grey", lw=0.5, ls=":")
        a.set_yscale("log")
        a.set_xlabel("q (nm$^{-1}$)")
        a.set_ylabel("mean counts per pixel")
    axes["curve"].set_title("azimuthal average, calibrant positions dotted")
    axes["sectors"].set_title(f"8 sectors; ring offsets' spread over {check.sectors} sectors: "
                              f"{check.spread_px:.2f} px")
    axes["sectors"].legend(fontsize=6, ncol=2)
    a = axes["offsets"]
    centres = np.arange(check.sectors) * 360 / check.sectors - 180 + 180 / check.sectors
    for ring in check.rings:
        a.errorbar(centres, ring.offsets_px, yerr=ring.sigmas_px, marker="o", ms=3, lw=0.8, label=ring.label)
    a.axhline(check.tolerance_px, color="red", lw=0.6, ls="--")
    a.axhline(-check.tolerance_px, color="red", lw=0.6, ls="--")
    a.set_xlabel("azimuth (deg)")
    a.set_ylabel("measured - predicted (px)")
    a.set_title(check.message, fontsize=9)
    a.legend(fontsize=7, ncol=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mask(path: str | Path, image: np.ndarray, cause: np.ndarray, title: str = "") -> None:
    """Write the picture of a data mask: the frame and, beside it, a colour per cause."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt, fig = _figure((14, 7))
    left, right = fig.subplots(1, 2)
    _log_image(left, image, cause == 0, title or "frame (masked pixels blank)")
    colours = ["#ffffff"] + [_CAUSE_COLOURS[k] for k in sorted(CAUSES)]
    right.imshow(cause, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest")
    right.set_title("masked, by cause")
    right.set_xlabel("column (px)")
    counts = {k: int((cause == k).sum()) for k in CAUSES}
    right.legend(handles=[Patch(color=_CAUSE_COLOURS[k], label=f"{CAUSES[k]} ({counts[k]})") for k in sorted(CAUSES)
                          if counts[k]], fontsize=8, loc="lower right")
    fig.savefig(path, dpi=100)
    plt.close(fig)
