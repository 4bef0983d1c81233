"""A small real zarr curve stack with known curves, shared by the export/averaging tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saxs_pipeline.integrator import Curve
from saxs_pipeline.stack.writer import CurveSpec, CurveStackWriter

Q = np.linspace(0.05, 3.0, 120)
CALIBRATION = {
    "Title": "test beamline",
    "Geometry": {"Tilt": {"TiltRotDeg": 30.0, "TiltAngleDeg": 2.0}, "BeamCenter": [40.3, 20.7],
                 "DedectorDistanceMM": 1000.0, "PixelSizeMicroM": [172.0], "Imagesize": [64, 48]},
    "Wavelength": 1.54,
    "Masks": [{"MaskFile": "mask.npy", "qStart": 0.1, "qStop": 3.0}],
    "Normalisation": {"Thickness": 0.15},
}
T0 = 1.7e9


@dataclass
class Stack:
    path: Path
    intensity: np.ndarray  # float32 values as stored
    error: np.ndarray
    names: list[str]
    times: np.ndarray


def make_stack(path: Path, n: int = 6, seed: int = 0, drop: int | None = None,
               empty_bins: int = 3, q: np.ndarray = Q, completion: list[int] | None = None,
               prefix: str = "sample") -> Stack:
    """``n`` Poisson frames (~1 % noise) of one model on ``q``, the last ``empty_bins`` bins
    NaN (empty), frame ``drop`` scaled by 0.95; written through the real stack writer in
    the order ``completion`` (default: acquisition order). ``intensity`` etc. are in
    acquisition order."""
    rng = np.random.default_rng(seed)
    model = 2e4 * np.exp(-(q**2) / 2) + 2e3
    counts = rng.poisson(model, (n, q.size)).astype(np.float32)
    if drop is not None:
        counts[drop] *= np.float32(0.95)
    err = np.sqrt(counts).astype(np.float32)
    if empty_bins:
        counts[:, -empty_bins:] = np.nan
        err[:, -empty_bins:] = np.nan
    names = [f"{prefix}_{i:05d}.tif" for i in range(n)]
    times = T0 + 2.0 * np.arange(n)
    spec = CurveSpec("R0", "Radial", q, labels=("q", "I", "err"))
    with CurveStackWriter(path, CALIBRATION, [spec], block_rows=4) as w:
        for i in completion if completion is not None else range(n):
            params = {"I0": float(i), "I1": 2.0 * i, "I2": 3.0 * i}
            w.add(names[i], [Curve("Radial", 0, q, counts[i], err[i], None, params,
                                   ["q", "I", "err"])], times[i], times[i] + 1)
    return Stack(path, counts, err, names, times)
