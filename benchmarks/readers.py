"""Frame reader benchmark: EIGER2 X 4M-sized bitshuffle-LZ4 frames (the EIGER demo's
content), per-frame read time of h5py's high-level read (hdf5plugin filter) against direct
chunk read + decompression, and fabio's read of the same file.

``python -m benchmarks.readers [-n FRAMES] [--rounds R]``; files go to a temporary
directory under the current one and are removed afterwards. Times are per frame, the best
and the median over rounds (each round reads every frame once; the OS page cache is warm
after the first round, as it is for frames a detector has just written).

``--layouts`` measures instead the cost of a chunk layout to the worker task: the same frames
(``--layout-frames`` of ``--layout-shape``, bitshuffle-LZ4) as one chunk for all of them
and as one chunk per frame, each integrated by ``process_frames`` in tasks of
``--task-frames`` (as the dispatcher sends them), in a child process per layout: time per
frame (decode, integrate; no .chi) and the child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bitshuffle
import fabio
import h5py
import numpy as np
from dectris.compression import decompress as dectris_decompress

from saxs_pipeline.demo.eiger import EIGER2_X_4M_SHAPE, demo_frames, write_eiger_series
from saxs_pipeline.frames.compression import HEADER
from saxs_pipeline.frames.registry import open_frames


def _time(fn: Callable[[int], object], n: int, rounds: int) -> tuple[float, float]:
    per_round = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        per_round.append((time.perf_counter() - t0) / n)
    return min(per_round), statistics.median(per_round)


def _task_case(path: str, calibration: str, n: int, task_frames: int) -> None:
    """One layout, in this (child) process: every frame through ``process_frames`` in
    tasks of ``task_frames``; prints ms per frame and the peak RSS as JSON."""
    from saxs_pipeline.integrator import Integrator
    from saxs_pipeline.pipeline.task import process_frames
    from saxs_pipeline.pipeline.tasktypes import FrameTask, TaskOptions

    integ = Integrator(calibration, with_std=False, cache_dir=False)
    options = TaskOptions(write_chi=False)
    process_frames("b", [FrameTask(path, "x", 0)], options, integrator=integ)  # compile
    t0 = time.perf_counter()
    for first in range(0, n, task_frames):
        tasks = [FrameTask(path, "x", i) for i in range(first, min(n, first + task_frames))]
        assert all(r.status == "ok" for r in process_frames("b", tasks, options, integrator=integ))
    ms = (time.perf_counter() - t0) / n * 1e3
    peak = int(re.search(r"VmHWM:\s*(\d+) kB", open("/proc/self/status").read())[1]) / 1024
    print(json.dumps({"ms_per_frame": ms, "peak_mb": peak}))


def layouts(n: int, shape: tuple[int, int], task_frames: int) -> None:
    """The ``--layouts`` table (module doc)."""
    import h5py
    import hdf5plugin

    from saxs_pipeline.demo.eiger import eiger_calibration_dict
    from saxs_pipeline.frames.compression import compress_bslz4

    distinct = list(demo_frames(8, shape=shape))
    stack = np.stack([distinct[i % 8] for i in range(n)])
    with tempfile.TemporaryDirectory(prefix=".layouts-bench-", dir=os.getcwd()) as tmp:
        np.save(os.path.join(tmp, "mask.npy"), distinct[0] == np.iinfo(np.uint32).max)
        cal = os.path.join(tmp, "cal.json")
        with open(cal, "w") as fh:
            json.dump(eiger_calibration_dict(shape), fh)
        rows = []
        for name, k in ((f"one chunk of {n} frames", n), ("one chunk per frame", 1)):
            path = os.path.join(tmp, f"k{k}.h5")
            with h5py.File(path, "w") as fh:
                d = fh.create_dataset("/entry/data/data", shape=stack.shape, dtype=np.uint32,
                                      chunks=(k, *shape), **hdf5plugin.Bitshuffle(cname="lz4"))
                for first in range(0, n, k):
                    d.id.write_direct_chunk((first, 0, 0), compress_bslz4(stack[first : first + k]))
            child = subprocess.run([sys.executable, "-m", "benchmarks.readers", "--task-case", path,
                                    cal, str(n), str(task_frames)], capture_output=True, text=True,
                                   check=True)
            rows.append((name, json.loads(child.stdout.strip().splitlines()[-1])))
    print(f"\nchunk layouts through the worker task: {n} frames {shape[0]}x{shape[1]} uint32, "
          f"bitshuffle-LZ4, tasks of {task_frames} frames, one process per layout")
    print(f"{'layout':32s} {'ms/frame':>9s} {'peak RSS MB':>12s} {'vs per frame':>13s}")
    print("-" * 70)
    base = rows[-1][1]["ms_per_frame"]
    for name, r in rows:
        print(f"{name:32s} {r['ms_per_frame']:9.2f} {r['peak_mb']:12.0f} "
              f"{r['ms_per_frame'] / base:12.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readers")
    parser.add_argument("-n", "--frames", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layouts", action="store_true", help="the chunk layout table instead")
    parser.add_argument("--layout-frames", type=int, default=1000)
    parser.add_argument("--layout-shape", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--task-frames", type=int, default=32)
    parser.add_argument("--task-case", nargs=4, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args(argv)
    if args.task_case:
        path, cal, n, task_frames = args.task_case
        _task_case(path, cal, int(n), int(task_frames))
        return 0
    if args.layouts:
        layouts(args.layout_frames, tuple(args.layout_shape), args.task_frames)
        return 0
    n, shape = args.frames, EIGER2_X_4M_SHAPE
    with tempfile.TemporaryDirectory(prefix=".readers-bench-", dir=os.getcwd()) as tmp:
        series = write_eiger_series(Path(tmp), demo_frames(n, shape=shape), n_frames=n, frames_per_file=n,
                                    shape=shape, frame_time=0.01)
        data_file = series.data_files[0]
        size = data_file.stat().st_size
        raw_mb = n * shape[0] * shape[1] * 4 / 1e6
        with h5py.File(data_file, "r") as fh, open_frames(series.master) as src:
            dset = fh["/entry/data/data"]
            out = np.empty(shape, np.uint32)
            reference = dset[0]

            def bitshuffle_direct(i: int) -> np.ndarray:
                _, chunk = dset.id.read_direct_chunk((i, 0, 0))
                block = HEADER.unpack_from(chunk)[1] // 4
                return bitshuffle.decompress_lz4(np.frombuffer(chunk, np.uint8, offset=12), shape, np.dtype(np.uint32), block)

            def dectris_direct(i: int) -> np.ndarray:
                _, chunk = dset.id.read_direct_chunk((i, 0, 0))
                return np.frombuffer(dectris_decompress(chunk, "bslz4", elem_size=4), np.uint32).reshape(shape)

            fabio_image = fabio.open(str(data_file))

            def fabio_frame(i: int) -> np.ndarray:
                return fabio_image.getframe(i).data

            cases: list[tuple[str, Callable[[int], object]]] = [
                ("h5py dset[i] (hdf5plugin filter)", lambda i: dset[i]),
                ("h5py read_direct into a buffer", lambda i: dset.read_direct(out, np.s_[i])),
                ("direct chunk + dectris-compression", dectris_direct),
                ("direct chunk + bitshuffle (unsafe)", bitshuffle_direct),
                ("Hdf5Frames.read(i, i+1) (ours)", lambda i: src.read(i, i + 1)),
                (f"Hdf5Frames.read(0, {n}) per frame", lambda i: src.read(0, n) if i == 0 else None),
                ("fabio getframe(i).data", fabio_frame),
            ]
            for name, fn in cases:  # every path must give the same pixels
                got = fn(0)
                got = out if got is None else got
                if name.startswith("Hdf5Frames"):
                    got = got[0]
                assert np.array_equal(np.asarray(got), reference), name
            results = [(name, *_time(fn, n, args.rounds)) for name, fn in cases]
    base = results[0][1]
    print(f"saxs_pipeline reader benchmark: {n} frames {shape[0]}x{shape[1]} uint32 (EIGER2 X 4M), "
          f"bitshuffle-LZ4 one chunk per frame, {size / 1e6:.1f} MB on disk for {raw_mb:.0f} MB "
          f"(ratio {raw_mb * 1e6 / size:.1f}); {args.rounds} rounds, {os.cpu_count()} CPUs")
    print(f"{'case':42s} {'best ms':>8s} {'median ms':>10s} {'MB/s':>7s} {'vs h5py':>8s}")
    print("-" * 79)
    for name, best, median in results:
        mbs = shape[0] * shape[1] * 4 / 1e6 / best
        print(f"{name:42s} {best * 1e3:8.2f} {median * 1e3:10.2f} {mbs:7.0f} {base / best:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
