"""Where a worker's time per frame goes: read, integrate (the kernel and the curves),
``.chi`` formatting, result serialisation and the driver's stack row, each timed on its
own in this process over the same frames (the task does the same steps in this order).

    python -m benchmarks.stages
"""

from __future__ import annotations

import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("read (TIFF + header)", "integrate: kernel", "integrate: curves, I0/I1/I2",
          ".chi formatting + write", "result serialisation", "stack row (driver)")


def worker_allocator() -> None:
    """This process's glibc allocator set as a worker's (``workerconfig.WORKER_ENVIRON``):
    frames come from the heap and stay there, rather than fresh pages per frame."""
    import ctypes
    import ctypes.util

    from saxs_pipeline.plugins.workerconfig import WORKER_ENVIRON

    name = ctypes.util.find_library("c")
    try:
        mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    except OSError:
        mallopt = None
    if mallopt is None:  # not glibc: the workers' environment means nothing there either
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
    for param, key in ((m_trim_threshold, "MALLOC_TRIM_THRESHOLD_"),
                       (m_mmap_threshold, "MALLOC_MMAP_THRESHOLD_")):
        mallopt(param, min(int(WORKER_ENVIRON[key]), 2**31 - 1))  # an int: 4 GiB -> 2 GiB


def breakdown(calibration: Path, frame: Path, n: int = 64) -> dict[str, float]:
    """Mean ms per frame of each stage over ``n`` frames (batches of 8, as in a task),
    with a worker's allocator settings."""
    from saxs_pipeline.frames.tiff import read_frame
    from saxs_pipeline.integrator import Integrator
    from saxs_pipeline.ops import integrate as ops
    from saxs_pipeline.pipeline.tasktypes import CurveData, FrameResult
    from saxs_pipeline.stack.layout import CurveSpec
    from saxs_pipeline.stack.writer import CurveStackWriter

    worker_allocator()
    integ = Integrator(calibration, with_std=False)
    op = integ.operators[0]
    t = dict.fromkeys(STAGES, 0.0)
    out = Path(tempfile.mkdtemp(prefix="saxs-stages-"))
    images = [read_frame(frame, integ.shape)[0] for _ in range(8)]
    integ.integrate_many(images)  # compiled kernels, warm buffers
    writer = CurveStackWriter(out / "s.zarr", {}, CurveSpec.from_curves(integ.integrate(images[0])),
                              block_rows=256)
    for k in range(0, n, 8):
        a = time.perf_counter()
        images = [read_frame(frame, integ.shape)[0] for _ in range(8)]
        b = time.perf_counter()
        ops.integrate_batch(op, images, error_model=integ.error_model)
        c = time.perf_counter()
        curves = integ.integrate_many(images)
        d = time.perf_counter()
        for i, cs in enumerate(curves):
            integ.write_chi(cs, out / f"f{k + i}")
        e = time.perf_counter()
        results = [FrameResult("ok", curves=[CurveData.from_curve(x) for x in cs]) for cs in curves]
        pickle.dumps(results, protocol=5)
        f = time.perf_counter()
        for i, cs in enumerate(curves):
            writer.add(f"f{k + i}", cs, None, 0.0)
        g = time.perf_counter()
        kernel = c - b
        for name, dt in zip(STAGES, (b - a, kernel, (d - c) - kernel, e - d, f - e, g - f),
                            strict=True):
            t[name] += dt
    writer.close()
    shutil.rmtree(out, ignore_errors=True)
    return {k: 1e3 * v / n for k, v in t.items()}


def table(ms: dict[str, float]) -> str:
    total = sum(max(v, 0.0) for v in ms.values())
    lines = [f"{'stage (worker, one core)':34s} {'ms/frame':>9s} {'share':>7s}", "-" * 52]
    lines += [f"{k:34s} {v:9.2f} {100 * max(v, 0) / total:6.0f}%" for k, v in ms.items()]
    lines.append(f"{'total':34s} {total:9.2f}")
    return "\n".join(lines)


def main() -> int:
    from benchmarks.files import find_source

    source = find_source(Path(tempfile.mkdtemp()))
    print(f"per-frame stages: {source.description}")
    print(table(breakdown(source.calibration, source.frame)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
