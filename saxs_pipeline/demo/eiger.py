"""An EIGER-like demo set: a DECTRIS-layout master file, bitshuffle-LZ4 data files, and a
matching calibration and mask, with the physics of :mod:`saxs_pipeline.demo.beamtime` (growing
polydisperse spheres with Poisson noise, polarization, beam stop).

:func:`generate_eiger_demo` writes, under ``<root>/eiger/``::

    calibration.json            nested calibration (75 um pixels, no tilt; MaskFile mask.npy)
    mask.npy                    nonzero = masked: module gaps, bad pixels, beam stop
    series_master.h5            DECTRIS master: geometry in NXdetector/NXbeam fields,
                                detectorSpecific/pixel_mask (1 = gap, 2 = dead pixel),
                                /entry/data/data_000001 ... external links
    series_data_000001.h5 ...   /entry/data/data, (n, rows, cols) uint32, one chunk per
                                frame, bitshuffle-LZ4 (h5py + hdf5plugin)

The detector is an EIGER2 X 4M by default: 2162 x 2068 pixels (rows x cols), 2 x 4 modules
of 512 x 1028 pixels with 38-row and 12-column gaps (chip borders are not modelled). Gap
and bad pixels hold the EIGER "no data" value 2**32 - 1. The master's beam centre is in the
DECTRIS convention (pixels from the left and from the *top* edge); the calibration holds
the same centre in ours (``BeamCenter = [rows - beam_center_y, beam_center_x]``), so
``saxsconverter`` on the master file gives back the calibration's geometry.

:func:`write_eiger_series` writes any stack of frames in this layout (tests use it with
small frames). ``python -m saxs_pipeline.demo.eiger ROOT`` generates a set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.demo.beamtime import (
    START_DATE,
    ScatteringModel,
    calibration_dict,
    sample_profile,
)

__all__ = [
    "EIGER2_X_4M_SHAPE",
    "EigerDemoSet",
    "EigerSeries",
    "demo_frames",
    "eiger_calibration_dict",
    "eiger_frame",
    "eiger_module_gaps",
    "generate_eiger_demo",
    "main",
    "write_eiger_series",
]

log = logging.getLogger(__name__)

EIGER2_X_4M_SHAPE = (2162, 2068)
EIGER_PIXEL_UM = 75.0
MODULE_SHAPE = (512, 1028)
MODULE_PITCH = (550, 1040)  # module plus the 38-row and 12-column gaps
MASK_GAP, MASK_DEAD = 1, 2  # DECTRIS pixel_mask bits
WAVELENGTH_A = 1.54
FRAME_TIME_S = 0.01
HC_EV_A = 12398.419843320026  # h c in eV * Angstrom


@dataclass(frozen=True)
class EigerSeries:
    """Files of one written series."""

    master: Path
    data_files: list[Path]


def eiger_module_gaps(shape: tuple[int, int]) -> np.ndarray:
    """True on the gaps between EIGER2 modules for a detector of ``shape``."""
    rows, cols = shape
    in_row = (np.arange(rows) % MODULE_PITCH[0]) < MODULE_SHAPE[0]
    in_col = (np.arange(cols) % MODULE_PITCH[1]) < MODULE_SHAPE[1]
    return ~(in_row[:, None] & in_col[None, :])


def _scalar(group: h5py.Group, name: str, value: Any, units: str | None = None) -> None:
    dset = group.create_dataset(name, data=value)
    if units:
        dset.attrs["units"] = units


def write_eiger_series(
    directory: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    *,
    n_frames: int,
    frames_per_file: int,
    shape: tuple[int, int],
    name: str = "series",
    dtype: np.dtype | str = np.uint32,
    beam_center: tuple[float, float] = (0.0, 0.0),
    distance_m: float = 1.0,
    pixel_size_m: float = EIGER_PIXEL_UM * 1e-6,
    wavelength_a: float = WAVELENGTH_A,
    pixel_mask: np.ndarray | None = None,
    start: datetime = START_DATE,
    frame_time: float = FRAME_TIME_S,
) -> EigerSeries:
    """Write ``n_frames`` frames (an iterable of 2-D arrays) as a DECTRIS master file plus
    data files of ``frames_per_file`` frames each (module doc). ``beam_center`` is
    ``(beam_center_x, beam_center_y)`` in the DECTRIS convention (pixels, y from the top)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows, cols = shape
    master = directory / f"{name}_master.h5"
    n_files = max(1, -(-n_frames // frames_per_file))
    data_files = [directory / f"{name}_data_{k + 1:06d}.h5" for k in range(n_files)]
    it = iter(frames)
    for k, path in enumerate(data_files):
        low = k * frames_per_file
        n = min(frames_per_file, n_frames - low)
        with h5py.File(path, "w") as fh:
            dset = fh.create_dataset(
                "/entry/data/data", shape=(n, rows, cols), dtype=dtype, chunks=(1, rows, cols),
                **hdf5plugin.Bitshuffle(cname="lz4"),
            )
            dset.attrs["image_nr_low"] = np.int32(low + 1)
            dset.attrs["image_nr_high"] = np.int32(low + n)
            for i in range(n):
                dset[i] = next(it)
    with h5py.File(master, "w") as fh:
        entry = fh.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        for k, path in enumerate(data_files):
            data[f"data_{k + 1:06d}"] = h5py.ExternalLink(path.name, "/entry/data/data")
        inst = entry.create_group("instrument")
        beam = inst.create_group("beam")
        beam.attrs["NX_class"] = "NXbeam"
        _scalar(beam, "incident_wavelength", wavelength_a, "angstrom")
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        _scalar(det, "beam_center_x", float(beam_center[0]), "pixel")
        _scalar(det, "beam_center_y", float(beam_center[1]), "pixel")
        _scalar(det, "detector_distance", float(distance_m), "m")
        _scalar(det, "x_pixel_size", float(pixel_size_m), "m")
        _scalar(det, "y_pixel_size", float(pixel_size_m), "m")
        _scalar(det, "count_time", float(frame_time), "s")
        _scalar(det, "frame_time", float(frame_time), "s")
        _scalar(det, "description", "saxs_pipeline demo EIGER2 X 4M-like")
        _scalar(det, "bit_depth_image", np.dtype(dtype).itemsize * 8)
        spec = det.create_group("detectorSpecific")
        _scalar(spec, "nimages", n_frames)
        _scalar(spec, "ntrigger", 1)
        _scalar(spec, "x_pixels_in_detector", cols)
        _scalar(spec, "y_pixels_in_detector", rows)
        _scalar(spec, "photon_energy", HC_EV_A / wavelength_a, "eV")
        _scalar(spec, "data_collection_date", start.replace(tzinfo=None).isoformat(timespec="milliseconds"))
        _scalar(spec, "compression", "bslz4")
        if pixel_mask is not None:
            spec.create_dataset("pixel_mask", data=np.asarray(pixel_mask, dtype=np.uint32), compression="gzip")
    return EigerSeries(master, data_files)


def eiger_calibration_dict(shape: tuple[int, int] = EIGER2_X_4M_SHAPE) -> dict[str, Any]:
    """The EIGER demo calibration: the demo's, with 75 um pixels, no tilt and mask.npy."""
    cal = calibration_dict(shape)
    cal["Title"] = "saxs_pipeline demo: growing spheres on an EIGER2 X 4M"
    cal["Geometry"]["PixelSizeMicroM"] = [EIGER_PIXEL_UM]
    cal["Geometry"]["Tilt"] = {"TiltRotDeg": 0.0, "TiltAngleDeg": 0.0}  # NXdetector fields carry none
    cal["Masks"][0]["MaskFile"] = "mask.npy"
    cal["Directory"] = ["."]
    return cal


@dataclass(frozen=True)
class EigerDemoSet:
    """Paths and parameters of a generated EIGER demo set."""

    root: Path
    calibration: Path
    mask: Path
    series: EigerSeries
    n_frames: int
    seed: int = 0
    shape: tuple[int, int] = EIGER2_X_4M_SHAPE
    model: Any = field(default=None, compare=False, repr=False)  # the demo's physics
    invalid: np.ndarray | None = field(default=None, compare=False, repr=False)


def _frame(model: Any, invalid: np.ndarray, i: int, n_frames: int, seed: int) -> np.ndarray:
    lam = sample_profile(model, i, n_frames)[model.index]
    lam *= model.weight
    image = np.random.default_rng([seed, 2, i]).poisson(lam).astype(np.uint32)
    image[invalid] = np.iinfo(np.uint32).max
    return image


def eiger_frame(demo: EigerDemoSet, i: int) -> np.ndarray:
    """Frame ``i`` (uint32, gaps and bad pixels at 2**32 - 1); the same for the same seed."""
    return _frame(demo.model, demo.invalid, i, demo.n_frames, demo.seed)


def _physics(shape: tuple[int, int], seed: int) -> tuple[dict[str, Any], Any, np.ndarray, np.ndarray]:
    """Calibration, the demo's model on it, EIGER module gaps and bad pixels."""
    cal = eiger_calibration_dict(shape)
    model = ScatteringModel(load_calibration(cal), seed)
    gaps = eiger_module_gaps(shape)
    return cal, model, gaps, model.layout.bad & ~gaps


def demo_frames(n_frames: int, *, shape: tuple[int, int] = EIGER2_X_4M_SHAPE, seed: int = 0) -> Iterator[np.ndarray]:
    """The frames :func:`generate_eiger_demo` writes, generated in memory one by one."""
    _cal, model, gaps, bad = _physics((int(shape[0]), int(shape[1])), seed)
    for i in range(n_frames):
        yield _frame(model, gaps | bad, i, n_frames, seed)


def generate_eiger_demo(
    root: str | os.PathLike[str],
    *,
    n_frames_per_file: int = 5,
    n_files: int = 2,
    seed: int = 0,
    shape: tuple[int, int] = EIGER2_X_4M_SHAPE,
) -> EigerDemoSet:
    """Write an EIGER demo set under ``<root>/eiger`` (module doc) and return it."""
    if n_frames_per_file < 1 or n_files < 1:
        raise ValueError("n_frames_per_file and n_files must be at least 1")
    t0 = time.perf_counter()
    base = Path(root) / "eiger"
    base.mkdir(parents=True, exist_ok=True)
    shape = (int(shape[0]), int(shape[1]))
    cal, model, gaps, bad = _physics(shape, seed)
    cal_path = base / "calibration.json"
    cal_path.write_text(json.dumps(cal, indent=2) + "\n")
    invalid = gaps | bad
    np.save(base / "mask.npy", (invalid | model.layout.beamstop).astype(np.uint8))
    n_frames = n_frames_per_file * n_files
    rows = shape[0]
    by, bx = cal["Geometry"]["BeamCenter"]
    pixel_mask = np.where(gaps, MASK_GAP, 0) | np.where(bad, MASK_DEAD, 0)
    series = write_eiger_series(
        base, (_frame(model, invalid, i, n_frames, seed) for i in range(n_frames)), n_frames=n_frames,
        frames_per_file=n_frames_per_file, shape=shape, beam_center=(bx, rows - by),
        distance_m=cal["Geometry"]["DedectorDistanceMM"] * 1e-3, wavelength_a=cal["Wavelength"],
        pixel_mask=pixel_mask, start=START_DATE,
    )
    log.info("EIGER demo with %d frames in %s (%.1f s)", n_frames, base, time.perf_counter() - t0)
    return EigerDemoSet(base, cal_path, base / "mask.npy", series, n_frames, seed, shape, model, invalid)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m saxs_pipeline.demo.eiger ROOT [--per-file N] [--files K] [--seed S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m saxs_pipeline.demo.eiger",
        description="Generate an EIGER-like demo set (master + bitshuffle-LZ4 data files).",
    )
    parser.add_argument("root", type=Path, help="directory to create eiger/ in")
    parser.add_argument("--per-file", type=int, default=5, help="frames per data file (5)")
    parser.add_argument("--files", type=int, default=2, help="data files (2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--shape", type=int, nargs=2, default=EIGER2_X_4M_SHAPE,
                        metavar=("ROWS", "COLS"), help="detector size (2162 2068)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    demo = generate_eiger_demo(args.root, n_frames_per_file=args.per_file, n_files=args.files,
                               seed=args.seed, shape=tuple(args.shape))
    log.info("calibration: %s", demo.calibration)
    log.info("mask:        %s", demo.mask)
    log.info("master:      %s (%d data files)", demo.series.master, len(demo.series.data_files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
