"""EIGER2 X 4M frames from bitshuffle-LZ4 HDF5: read + integrate per frame on one core,
and frames per second through the pipeline, each beside pyFAI in the same run.

    python -m benchmarks.eiger [--frames 400] [--ov 2]

The data: a DECTRIS-layout master file with two data files (2162 x 2068 uint32 frames,
one chunk per frame, bitshuffle-LZ4; module gaps at 2**32 - 1), written from 8 distinct
demo frames (the demo's growing spheres with Poisson noise) compressed once and repeated,
so the files are realistic and quick to make. Ours: ``open_frames`` (direct chunk read +
decompression) and the engine (mean + Poisson error, invalid pixels excluded). pyFAI:
h5py read (hdf5plugin's filter) + ``integrate1d`` full/csr/cython with the same mask,
bins and q range. The pipeline: ``ImageQueue`` readdir of the master on an embedded
LocalCluster of 2 worker processes x 1 thread, curve stack only (``--no-chi``), beside
the pyFAI loop's frames per second.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the bitshuffle filter for pyFAI's h5py reads)
import numpy as np

SHAPE = (2162, 2068)
INVALID = 2**32 - 1
DISTINCT = 8


def write_data(root: Path, n_frames: int, ov: int) -> tuple[Path, Path]:
    """Master + two data files of ``n_frames`` frames, calibration and mask."""
    from saxs_pipeline.demo.eiger import demo_frames, eiger_calibration_dict
    from saxs_pipeline.frames.compression import compress_bslz4

    data = root / "data"
    data.mkdir(parents=True)
    frames = list(demo_frames(DISTINCT, shape=SHAPE))
    invalid = frames[0] == INVALID
    per_file = -(-n_frames // 2)
    chunks = [compress_bslz4(f) for f in frames]
    names = []
    for k in range(2):
        path = data / f"run_data_{k + 1:06d}.h5"
        n = min(per_file, n_frames - k * per_file)
        with h5py.File(path, "w") as fh:
            d = fh.create_dataset("/entry/data/data", shape=(n, *SHAPE), dtype=np.uint32,
                                  chunks=(1, *SHAPE), **hdf5plugin.Bitshuffle(cname="lz4"))
            d.attrs["image_nr_low"] = np.int32(k * per_file + 1)
            d.attrs["image_nr_high"] = np.int32(k * per_file + n)
            for i in range(n):
                d.id.write_direct_chunk((i, 0, 0), chunks[(k * per_file + i) % DISTINCT])
        names.append(path.name)
    with h5py.File(data / "run_master.h5", "w") as fh:
        g = fh.create_group("entry/data")
        for k, name in enumerate(names):
            g[f"data_{k + 1:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    cal = eiger_calibration_dict(SHAPE)
    cal["Masks"][0]["Oversampling"] = ov
    np.save(root / "mask.npy", invalid)
    (root / "cal.json").write_text(json.dumps(cal))
    return data / "run_master.h5", root / "cal.json"


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def per_frame(master: Path, calibration: Path, repeat: int) -> dict[str, float]:
    from saxs_pipeline.frames.registry import open_frames
    from saxs_pipeline.integrator import Integrator

    integ = Integrator(calibration, with_std=False, cache_dir=False)
    op = integ.operators[0]
    src = open_frames(master, shape=SHAPE)
    k = [0]

    def ours() -> None:
        i = k[0] = (k[0] + 1) % DISTINCT
        integ.integrate(src.read(i, i + 1)[0], invalid=src.invalid_value)

    ours()  # compile the kernels
    out = {"ours": median_ms(ours, repeat), "read": median_ms(lambda: src.read(3, 4), repeat)}
    src.close()
    try:
        from pyFAI.detectors import Detector
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator
    except ImportError:
        return out
    g = integ.calibration.geometry
    ai = AzimuthalIntegrator(detector=Detector(g.pixel_size_um[0] * 1e-6, g.pixel_size_um[1] * 1e-6,
                                               max_shape=SHAPE))
    ai.setFit2D(directDist=g.distance_mm, centerX=g.beam_center_x, centerY=g.beam_center_y,
                tilt=g.tilt_angle_deg, tiltPlanRotation=g.tilt_rot_deg,
                pixelX=g.pixel_size_um[1], pixelY=g.pixel_size_um[0], wavelength=g.wavelength_a)
    mask = np.flipud(~op.valid.reshape(SHAPE)).astype(np.int8)
    kw = dict(unit="q_nm^-1", radial_range=(float(op.edges[0]), float(op.edges[-1])),
              method=("full", "csr", "cython"), correctSolidAngle=False, error_model="poisson",
              mask=mask)
    fh = h5py.File(master)
    dset = fh["entry/data/data_000001"]
    j = [0]

    def fai() -> None:
        i = j[0] = (j[0] + 1) % DISTINCT
        ai.integrate1d(np.flipud(dset[i]), op.nbins, **kw)

    fai()  # its CSR set-up
    out["pyfai"] = median_ms(fai, max(5, repeat // 3))
    fh.close()
    return out


def pipeline(master: Path, calibration: Path, workers: int) -> tuple[float, float, int]:
    from benchmarks.cluster import embedded
    from saxs_pipeline.pipeline.queue import ImageQueue

    with embedded(workers) as client:
        q = ImageQueue(client, calibration, master.parent, pattern="*_master.h5",
                       write_chi=False)
        q.start()
        t = time.time()
        q.readdir()
        q.join(1800)
        end = time.time()
        first = q.status.first_result or t
        stats = q.close()
    n = stats["images processed"]
    # steady: from the first result on (the workers' operator set-up is behind it; a
    # batch's frames arrive together, so the first batch is not counted)
    return n / (end - t), (n - q.dispatcher.batch_size) / max(end - first, 1e-9), n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=400, help="frames in the series (400)")
    parser.add_argument("--ov", type=int, default=2, help="oversampling (2)")
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per case (30)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("distributed", "tornado", "pyFAI", "silx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="saxs-eiger-"))
    os.environ.setdefault("SAXS_PIPELINE_CACHE", str(root / "cache"))
    try:
        t0 = time.perf_counter()
        master, cal = write_data(root, args.frames, args.ov)
        size = sum(p.stat().st_size for p in master.parent.iterdir()) / args.frames
        pf = per_frame(master, cal, args.repeat)
        fps, steady, n = pipeline(master, cal, args.workers)
        fai_fps = 1e3 / pf["pyfai"] if "pyfai" in pf else float("nan")
        print(f"EIGER2 X 4M benchmark: {SHAPE[0]}x{SHAPE[1]} uint32, bitshuffle-LZ4 "
              f"({size / 1e6:.1f} MB per frame on disk, {4 * SHAPE[0] * SHAPE[1] / size:.1f}x), "
              f"oversampling {args.ov}, mean + Poisson, {os.cpu_count()} CPUs")
        print(f"{'case':52s} {'ours':>9s} {'pyFAI':>9s} {'ratio':>7s}")
        print("-" * 80)
        print(f"{'read + integrate, one frame, one core (ms)':52s} {pf['ours']:9.2f} "
              f"{pf.get('pyfai', float('nan')):9.2f} {pf.get('pyfai', float('nan')) / pf['ours']:6.1f}x")
        print(f"{'  of which read (direct chunk + decompress, ms)':52s} {pf['read']:9.2f}")
        print(f"{f'pipeline readdir, {n} frames, {args.workers} workers (frames/s)':52s} "
              f"{fps:9.1f} {fai_fps:9.1f} {fps / fai_fps:6.1f}x")
        print(f"{'  steady (first result to last, frames/s)':52s} {steady:9.1f} {fai_fps:9.1f} "
              f"{steady / fai_fps:6.1f}x")
        print("targets: per frame >= 5x pyFAI: "
              f"{'PASS' if pf.get('pyfai', 0) / pf['ours'] >= 5 else 'FAIL'}; "
              f"pipeline >= 100 frames/s: {'PASS' if fps >= 100 else 'FAIL'} (steady: "
              f"{'PASS' if steady >= 100 else 'FAIL'})")
        print(f"(total run time {time.perf_counter() - t0:.0f} s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
