"""Throughput of the multi-host harness: 1 worker host against 2.

    sudo python -m benchmarks.multihost [--frames 300] [--shape 1043x981] [--batch 8]

Three "hosts" are network namespaces (tests/netns.py, tests/hostcluster.py): scheduler
and ``saxsdog`` on one, a ``saxs-worker`` (1 thread) on each of the others, the data
directory shared. The frames are ``--distinct`` generated Pilatus TIFFs hard-linked to
``--frames`` names (the bookkeeping is per file; the content repeats). Each run reports
saxsdog's own frames/s (its start-up excluded) after a short warm-up run on the same
workers (the first tasks of a fresh worker import and load its compiled kernels). On a 2-core machine the two worker hosts
share the cores with the driver and the scheduler: the ratio shows overhead, not scaling.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # the harness lives with the tests

from conftest import make_saxs_setup  # noqa: E402

from hostcluster import Cluster  # noqa: E402
from netns import Net, unavailable  # noqa: E402

__all__ = ["frames_linked", "main", "run_hosts"]

FPS = re.compile(r"(\d+) frames in ([\d.]+) s: [\d.]+ ms per frame, ([\d.]+) frames/s")


def frames_linked(root: Path, n: int, shape: tuple[int, int], distinct: int = 8):
    """A calibration and ``n`` frames ``f<i>.tif`` in ``<root>/exp/data``: hard links to
    ``distinct`` generated ones. Returns the :class:`SaxsSetup`."""
    setup = make_saxs_setup(root, n_frames=distinct, shape=shape)
    for i in range(n):
        os.link(setup.frames[i % distinct], setup.data / f"f{i:06d}.tif")
    for f in setup.frames:
        f.unlink()
    return setup


def run_hosts(root: Path, n_hosts: int, frames: int, shape: tuple[int, int], batch: int,
              distinct: int = 8) -> dict[str, float]:
    """One run with ``n_hosts`` worker hosts; saxsdog's frames/s and the wall time."""
    root.mkdir(parents=True, exist_ok=True)
    setup = frames_linked(root, frames, shape, distinct)
    workers = [f"w{i + 1}" for i in range(n_hosts)]
    net = Net(["s", *workers])
    try:
        c = Cluster(net, root)
        c.scheduler()
        for w in workers:
            c.worker(w)
        env = {"SAXS_PIPELINE_CACHE": str(root / "cache")}
        # A first short run warms the workers (imports, compiled kernels, the operator):
        # the measured run is the steady state of a cluster that is up.
        warm = root / "warm"
        warm.mkdir()
        for i in range(4 * batch * n_hosts):
            os.link(setup.data / f"f{i % frames:06d}.tif", warm / f"w{i:06d}.tif")
        dog = c.saxsdog(["-c", str(setup.calibration), "--batch-size", str(batch), "-o",
                         str(root / "warm-out"), str(warm)], root / "warm.log", env)
        if dog.wait(600) != 0:
            raise RuntimeError(f"warm-up run failed:\n{(root / 'warm.log').read_text()[-3000:]}")
        log = root / "dog.log"
        t0 = time.perf_counter()
        dog = c.saxsdog(["-c", str(setup.calibration), "--batch-size", str(batch),
                         str(setup.data)], log, env)
        code = dog.wait(3600)
        wall = time.perf_counter() - t0
        text = log.read_text()
        m = FPS.search(text)
        if code != 0 or m is None:
            raise RuntimeError(f"saxsdog exited {code}:\n{text[-3000:]}")
        return {"hosts": n_hosts, "frames": int(m.group(1)), "seconds": float(m.group(2)),
                "fps": float(m.group(3)), "wall": wall}
    finally:
        net.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--shape", default="1043x981", help="frame rows x columns (Pilatus 1M)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--distinct", type=int, default=8)
    args = ap.parse_args(argv)
    why = unavailable()
    if why:
        print(f"multihost benchmark skipped: {why}")
        return 0
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="saxs-multihost-") as tmp:
        for n in (1, 2):
            rows.append(run_hosts(Path(tmp) / f"h{n}", n, args.frames, shape, args.batch,
                                  args.distinct))
    print(f"\nmulti-host throughput, {args.frames} frames {shape[0]} x {shape[1]}, batch "
          f"{args.batch}, {os.cpu_count()} cores")
    print("| worker hosts | frames/s | s (saxsdog) | wall s |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['hosts']} | {r['fps']:.1f} | {r['seconds']:.1f} | {r['wall']:.1f} |")
    print(f"ratio 2 hosts / 1 host: {rows[1]['fps'] / rows[0]['fps']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
