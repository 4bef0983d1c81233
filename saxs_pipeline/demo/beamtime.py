"""A generated demo beamtime, so the whole pipeline can be tried without real detector data.

:func:`generate_demo` writes, under ``<root>/demo/``::

    calibration.json     nested calibration (Pilatus 1M-like geometry, one radial mask,
                         polarization correction, Directory ["data"])
    mask.msk             FIT2D mask: module gaps, a beam stop with its arm, bad pixels
    agbeh.tif            silver behenate calibrant (rings at q = n 2 pi / 5.838 nm^-1)
    data/sample_00000.tif ...
                         a time series of growing polydisperse spheres

Frames are int32 Pilatus-style TIFFs: module gaps are -1 and bad pixels -2, as a real
Pilatus writes them, and the header carries the exposure time and a date that advances by
the exposure period. Every frame is a deterministic function of the seed and its index,
so :func:`write_frame` can write frame ``i`` again later, for example into a watched
directory at a detector-like rate (atomically, or in several partial writes with
:func:`iter_frame_parts` to exercise half-written files).

``python -m saxs_pipeline.demo.beamtime ROOT [-n N]`` generates a set from the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.masks import write_fit2d_msk
from saxs_pipeline.demo.detector import N_BAD_PIXELS, ScatteringModel, detector_layout
from saxs_pipeline.frames.tiff import write_pilatus_tiff

__all__ = [
    "AGBEH_D_NM",
    "N_BAD_PIXELS",
    "PILATUS_1M_SHAPE",
    "DemoSet",
    "agbeh_q",
    "calibrant_image",
    "calibration_dict",
    "detector_layout",
    "frame_date",
    "frame_header",
    "frame_image",
    "generate_demo",
    "iter_frame_parts",
    "iter_frames",
    "main",
    "sphere_radius",
    "write_frame",
    "write_frame_in_parts",
]

log = logging.getLogger(__name__)

PILATUS_1M_SHAPE = (1043, 981)
AGBEH_D_NM = 5.838  # silver behenate long period
AGBEH_ORDERS = 6
START_DATE = datetime(2024, 3, 14, 9, 0, 0, tzinfo=UTC)
EXPOSURE_S = 1.0
CALIBRANT_EXPOSURE_S = 10.0
RADIUS_NM = (3.0, 8.0)  # mean sphere radius at the first and last frame
CONCENTRATION = (0.4, 1.0)  # relative concentration at the first and last frame
POLYDISPERSITY = 0.15  # sigma(R) / R
SAMPLE_COUNTS = 4000.0  # counts per pixel at q -> 0 in the last frame
BACKGROUND = 3.0  # flat background, counts per pixel


def agbeh_q(orders: int = AGBEH_ORDERS) -> np.ndarray:
    """q (nm^-1) of the silver behenate rings n = 1..orders."""
    return 2.0 * np.pi * np.arange(1, orders + 1) / AGBEH_D_NM


def _progress(i: int, n_frames: int) -> float:
    # Frames past the generated series repeat the final state rather than extrapolating.
    return min(i / (n_frames - 1), 1.0) if n_frames > 1 else 0.0


def sphere_radius(i: int, n_frames: int) -> float:
    """Mean sphere radius (nm) of frame ``i`` of a series of ``n_frames``."""
    return RADIUS_NM[0] + (RADIUS_NM[1] - RADIUS_NM[0]) * _progress(i, n_frames)


def calibration_dict(shape: tuple[int, int] = PILATUS_1M_SHAPE) -> dict[str, Any]:
    """The demo calibration (nested form). The beam centre sits in the upper middle,
    scaled with the image size."""
    rows, cols = shape
    return {
        "Title": "saxs_pipeline demo: growing spheres on a Pilatus 1M",
        "Geometry": {
            "Tilt": {"TiltRotDeg": 30.0, "TiltAngleDeg": 0.5},
            # [Y from the bottom, X from the left]: about 1/4 down from the top edge and
            # just left of the vertical module gap, so the beam-stop arm stays visible
            "BeamCenter": [round(800.0 * rows / PILATUS_1M_SHAPE[0], 2),
                           round(470.0 * cols / PILATUS_1M_SHAPE[1], 2)],
            "DedectorDistanceMM": 1000.0,
            "PixelSizeMicroM": [172.0],
            "Imagesize": [rows, cols],
        },
        "Wavelength": 1.54,
        "Masks": [{
            "Name": "full detector",
            "MaskFile": "mask.msk",
            "Oversampling": 2,
            "PixelPerRadialElement": 1,
            "qStart": 0.1,
            "qStop": 3.0,
        }],
        "PolarizationCorrection": {"Fraction": 0.99, "Angle": 0},
        "Directory": ["data"],
        "Live-Filelisting": True,
        "OverwriteFiles": True,
    }


@lru_cache(maxsize=4)
def _model(calibration: str, mtime_ns: int, seed: int) -> ScatteringModel:
    # Keyed on the file's mtime so that an edited calibration builds a new model.
    del mtime_ns
    return ScatteringModel(load_calibration(calibration), seed)


def _frame_name(i: int) -> str:
    return f"sample_{i:05d}.tif"


@dataclass(frozen=True)
class DemoSet:
    """Paths and parameters of a generated demo beamtime."""

    root: Path  # the demo directory, <root>/demo
    calibration: Path
    mask: Path
    calibrant: Path
    data_dir: Path
    frames: list[Path] = field(default_factory=list)
    n_frames: int = 0
    seed: int = 0
    shape: tuple[int, int] = PILATUS_1M_SHAPE
    exposure_time: float = EXPOSURE_S
    start: datetime = START_DATE

    def frame_name(self, i: int) -> str:
        return _frame_name(i)

    def model(self) -> ScatteringModel:
        return _model(str(self.calibration), self.calibration.stat().st_mtime_ns, self.seed)


def _sphere_profile(q: np.ndarray, radius: float) -> np.ndarray:
    """Polydisperse sphere scattering <V^2 P(q, R)> / <V> over a Gaussian size
    distribution, in units of the volume of a sphere of the largest mean radius."""
    sigma = POLYDISPERSITY * radius
    radii = np.linspace(max(radius - 3 * sigma, 0.1), radius + 3 * sigma, 31)
    weights = np.exp(-0.5 * ((radii - radius) / sigma) ** 2)
    volume = radii**3 / RADIUS_NM[1] ** 3
    x = q[:, None] * radii[None, :]
    small = x < 1e-3
    xs = np.where(small, 1.0, x)
    amp = np.where(small, 1.0 - x * x / 10.0, 3.0 * (np.sin(xs) - xs * np.cos(xs)) / xs**3)
    intensity = (amp * amp * volume**2) @ weights
    return intensity / float(volume @ weights)


def sample_profile(model: ScatteringModel, i: int, n_frames: int) -> np.ndarray:
    t = _progress(i, n_frames)
    conc = CONCENTRATION[0] + (CONCENTRATION[1] - CONCENTRATION[0]) * t
    spheres = _sphere_profile(model.q_grid, sphere_radius(i, n_frames))
    return SAMPLE_COUNTS * conc * spheres + BACKGROUND


def _agbeh_profile(model: ScatteringModel) -> np.ndarray:
    q = model.q_grid
    # a few pixels wide: about 1.7 px at the first ring on this geometry
    sigma = 0.012
    profile = 20.0 * np.exp(-q / 0.8) + 4.0
    for n, qn in enumerate(agbeh_q(), start=1):
        profile += (6000.0 / n) * np.exp(-0.5 * ((q - qn) / sigma) ** 2)
    return profile


def frame_date(demo: DemoSet, i: int) -> datetime:
    """Detector date of frame ``i``: the start plus ``i`` exposure periods."""
    return demo.start + timedelta(seconds=i * demo.exposure_time)


def frame_header(demo: DemoSet, i: int | None = None) -> dict[str, Any]:
    """Pilatus header fields of sample frame ``i`` (the calibrant with ``i=None``)."""
    exposure = CALIBRANT_EXPOSURE_S if i is None else demo.exposure_time
    return {
        "Pixel_size": (172e-6, 172e-6), "Pixel_size_unit": "m",
        "Silicon sensor, thickness": 0.00045, "Silicon sensor, thickness_unit": "m",
        "Exposure_time": exposure, "Exposure_time_unit": "s",
        "Exposure_period": exposure, "Exposure_period_unit": "s",
        "Tau": 0, "Tau_unit": "s",
        "Threshold_setting": 4000, "Threshold_setting_unit": "eV",
        "N_excluded_pixels": int(N_BAD_PIXELS),
        "Image_path": f"{demo.data_dir}/",
        "Wavelength": 1.54, "Wavelength_unit": "A",
    }


def frame_image(demo: DemoSet, i: int) -> np.ndarray:
    """Sample frame ``i`` (int32), the same every time for the same seed."""
    model = demo.model()
    rng = np.random.default_rng([demo.seed, 1, i])
    return model.counts(sample_profile(model, i, demo.n_frames), rng)


def calibrant_image(demo: DemoSet) -> np.ndarray:
    """The silver behenate frame (int32)."""
    model = demo.model()
    return model.counts(_agbeh_profile(model), np.random.default_rng([demo.seed, 0]))


def iter_frames(demo: DemoSet, start: int = 0, stop: int | None = None,
                ) -> Iterator[tuple[int, np.ndarray, dict[str, Any], datetime]]:
    """``(i, image, header, date)`` of frames ``start`` to ``stop`` (default: the series)."""
    for i in range(start, demo.n_frames if stop is None else stop):
        yield i, frame_image(demo, i), frame_header(demo, i), frame_date(demo, i)


def _write(demo: DemoSet, i: int, path: Path) -> None:
    write_pilatus_tiff(path, frame_image(demo, i), frame_header(demo, i), frame_date(demo, i))


def write_frame(demo: DemoSet, i: int, directory: str | os.PathLike[str]) -> Path:
    """Write sample frame ``i`` into ``directory`` atomically (a hidden temporary name in
    the same directory, then a rename), as a well-behaved detector would."""
    directory = Path(directory)
    final = directory / demo.frame_name(i)
    tmp = directory / f".{final.name}.part"
    _write(demo, i, tmp)
    os.replace(tmp, final)
    return final


def iter_frame_parts(
    demo: DemoSet, i: int, directory: str | os.PathLike[str], parts: int = 4
) -> Iterator[tuple[Path, int]]:
    """Write sample frame ``i`` under its final name in ``parts`` appends, yielding
    ``(path, bytes written so far)`` after each; the file is complete after the last.

    This is how a detector writing straight into the watched directory looks to a
    reader: between the steps the file is a truncated TIFF.
    """
    directory = Path(directory)
    final = directory / demo.frame_name(i)
    tmp = directory / f".{final.name}.whole"
    _write(demo, i, tmp)
    data = tmp.read_bytes()
    tmp.unlink()
    bounds = np.linspace(0, len(data), max(int(parts), 1) + 1).astype(int)
    with open(final, "wb") as fh:
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            fh.write(data[lo:hi])
            fh.flush()  # make the partial file visible to other processes now
            yield final, int(hi)


def write_frame_in_parts(
    demo: DemoSet, i: int, directory: str | os.PathLike[str], *, parts: int = 4,
    delay: float = 0.05,
) -> Path:
    """Write sample frame ``i`` in ``parts`` appends with ``delay`` seconds between them."""
    path = Path(directory) / demo.frame_name(i)
    for n, _step in enumerate(iter_frame_parts(demo, i, directory, parts)):
        if n < parts - 1:
            time.sleep(delay)
    return path


def generate_demo(
    root: str | os.PathLike[str],
    *,
    n_frames: int = 200,
    seed: int = 0,
    shape: tuple[int, int] = PILATUS_1M_SHAPE,
    workers: int | None = None,
) -> DemoSet:
    """Write a demo beamtime under ``<root>/demo`` (see the module doc) and return it.

    Existing demo files are overwritten. ``workers`` threads write the sample frames
    (default: the CPU count); the result does not depend on it.
    """
    if n_frames < 0:
        raise ValueError("n_frames must not be negative")
    t0 = time.perf_counter()
    base = Path(root) / "demo"
    data_dir = base / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    cal_path = base / "calibration.json"
    cal = calibration_dict((int(shape[0]), int(shape[1])))
    cal_path.write_text(json.dumps(cal, indent=2) + "\n")
    demo = DemoSet(
        root=base, calibration=cal_path, mask=base / "mask.msk", calibrant=base / "agbeh.tif",
        data_dir=data_dir, frames=[data_dir / _frame_name(i) for i in range(n_frames)],
        n_frames=n_frames, seed=seed, shape=(int(shape[0]), int(shape[1])),
    )
    model = demo.model()
    write_fit2d_msk(demo.mask, model.layout.valid)
    write_pilatus_tiff(demo.calibrant, calibrant_image(demo), frame_header(demo, None),
                       demo.start - timedelta(minutes=10))
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    # numpy's Poisson sampler and the TIFF write release the GIL, so threads overlap them.
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        list(pool.map(lambda i: _write(demo, i, demo.frames[i]), range(n_frames)))
    log.info("demo beamtime with %d frames in %s (%.1f s)", n_frames, base,
             time.perf_counter() - t0)
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m saxs_pipeline.demo.beamtime ROOT [-n N] [--seed S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m saxs_pipeline.demo.beamtime",
        description="Generate a demo beamtime (calibration, mask, AgBh calibrant, frames).",
    )
    parser.add_argument("root", type=Path, help="directory to create demo/ in")
    parser.add_argument("-n", "--frames", type=int, default=200, help="sample frames (200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    args = parser.parse_args(argv)
    # stdout, not stderr: where the set went is this command's output
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    demo = generate_demo(args.root, n_frames=args.frames, seed=args.seed)
    log.info("calibration: %s", demo.calibration)
    log.info("mask:        %s", demo.mask)
    log.info("calibrant:   %s", demo.calibrant)
    log.info("frames:      %s (%d files)", demo.data_dir, len(demo.frames))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
