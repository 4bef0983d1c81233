"""Bluesky benchmark: ``python -m benchmarks.bluesky [-n 200] [--rounds 2]``.

Frames per second through the Bluesky path beside the same frames by readdir, in one run,
on Pilatus 1M-sized frames (1043 x 981 int32) that a RunEngine's ophyd-async detector
(the tests' ``SaxsSimDetector``) wrote into one HDF5 file, one frame per chunk, with the
real ``cal_flat.json`` geometry when ../shared/data/pilatus1m is there:

* **readdir**: an ``ImageQueue`` walking the folder (``--pattern '*.h5'``): set-up, the
  walk, every frame integrated by the embedded cluster (2 worker processes x 1 thread, as
  ``saxsdog`` starts it), the stack committed, the queue closed;
* **Bluesky**: the run's recorded documents (start, descriptor, stream_resource, then
  stream_datum + event per frame, stop) sent as fast as they go through bluesky's 0MQ proxy
  (a subprocess) with ``Publisher(serializer=pack)`` to a :class:`BlueskyConsumer` on the
  same cluster: from the first document to the run's queue closed, its set-up included
  (as readdir's is). The target is at least 80 % of readdir's rate.

The cases take turns for ``--rounds`` rounds (each sees the machine of the same minutes);
the table reports each one's fastest run and the CPU other processes used meanwhile ("bg
CPU", cores): on a shared 2-core machine that is the main source of noise.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cluster import embedded, pids_of, quiet_dask_logs, warm_workers
from benchmarks.files import find_source
from benchmarks.machine import Background, wait_quiet

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # the simulated detector and the proxy live with the tests

PILATUS_1M = (1043, 981)
TARGET = 0.8


def record_run(raw: Path, n: int) -> tuple[list[tuple[str, dict[str, Any]]], Path]:
    """A ``count`` plan of ``n`` frames: its documents and the HDF5 file it wrote."""
    from bluesky import RunEngine
    from bluesky.plans import count
    from blueskydet import make_detector

    engine = RunEngine({})
    det = make_detector(raw, PILATUS_1M)
    docs: list[tuple[str, dict[str, Any]]] = []
    engine(count([det], num=n), lambda name, doc: docs.append((name, copy.deepcopy(doc))))
    return docs, det.writer.path


def bench_readdir(client: Any, calibration: Path, raw: Path, work: Path, n: int) -> float:
    from saxs_pipeline.pipeline.queue import ImageQueue

    t0 = time.perf_counter()
    q = ImageQueue(client, calibration, raw, out_dir=work, pattern="*.h5",
                   dataset="/entry/data/data", write_chi=True)
    q.start()
    q.readdir()
    assert q.join(1200)
    stats = q.close()
    wall = time.perf_counter() - t0
    assert stats["images processed"] == n and stats["failed"] == 0, stats
    return n / wall


def bench_bluesky(client: Any, calibration: Path, docs: list[tuple[str, dict[str, Any]]],
                  proxy_in: str, proxy_out: str, work: Path, n: int) -> float:
    from bluesky.callbacks.zmq import Publisher

    from saxs_pipeline.bluesky.consumer import BlueskyConsumer, ConsumerOptions
    from saxs_pipeline.bluesky.wire import pack

    consumer = BlueskyConsumer(client, ConsumerOptions(proxy_out, work, calibration)).start()
    publisher = Publisher(proxy_in.removeprefix("tcp://"), serializer=pack)
    try:
        k = 0
        while consumer.receiver.received == 0:  # 0MQ's late joiner: probe until it hears
            publisher("stop", {"uid": f"probe-{k}", "time": time.time(),
                               "run_start": f"probe-{k}", "exit_status": "success"})
            k += 1
            time.sleep(0.05)
        t0 = time.perf_counter()
        for name, doc in docs:
            publisher(name, doc)
        deadline = time.monotonic() + 1200
        while not consumer.finished:
            assert time.monotonic() < deadline, "the Bluesky run did not finish"
            time.sleep(0.01)
        wall = time.perf_counter() - t0
    finally:
        consumer.stop()
        publisher.close()
    report = consumer.finished[0]
    assert report["frames"] == n and report["failed"] == 0, report
    return n / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bluesky", description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--frames", type=int, default=200, help="frames per run (200)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each case (2)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="seconds to wait for other processes to go quiet before a case")
    args = parser.parse_args(argv)
    quiet_dask_logs()
    from bsprocs import proxy

    with tempfile.TemporaryDirectory(prefix="bench-bluesky-") as tmp:
        root = Path(tmp)
        source = find_source(root)
        raw = root / "raw"
        raw.mkdir()
        docs, h5 = record_run(raw, args.frames)
        proxy_proc, proxy_in, proxy_out = proxy(root / "proxy.log")
        results: dict[str, list[tuple[float, float]]] = {"readdir": [], "bluesky": []}
        try:
            with embedded(args.workers) as client:
                warm_workers(client, source, root)
                pids = pids_of(client)
                for r in range(args.rounds):
                    for case in ("readdir", "bluesky"):
                        wait_quiet(pids, args.quiet_wait)
                        work = root / f"{case}-{r}"
                        with Background(pids) as bg:
                            if case == "readdir":
                                fps = bench_readdir(client, source.calibration, raw, work,
                                                    args.frames)
                            else:
                                fps = bench_bluesky(client, source.calibration, docs, proxy_in,
                                                    proxy_out, work, args.frames)
                        results[case].append((fps, bg.cores))
        finally:
            proxy_proc.stop()
    best = {case: max(runs) for case, runs in results.items()}
    print(f"Bluesky path vs readdir: {args.frames} Pilatus 1M frames (1043 x 981 int32, one "
          f"HDF5 file, one frame per chunk), {args.workers} worker processes; {source.description}")
    print(f"{'case':58s} {'frames':>6s} {'frames/s':>9s} {'bg CPU':>7s}")
    names = {"readdir": "readdir (ImageQueue walk, --pattern '*.h5')",
             "bluesky": "Bluesky (0MQ proxy, StreamResource/StreamDatum documents)"}
    for case, (fps, bg) in best.items():
        print(f"{names[case]:58s} {args.frames:6d} {fps:9.1f} {bg:7.2f}")
    ratio = best["bluesky"][0] / best["readdir"][0]
    rounds = ", ".join(f"{b[0] / a[0]:.2f}" for a, b in zip(results["readdir"], results["bluesky"],
                                                          strict=True))
    print(f"Bluesky / readdir: {ratio:.2f} (target >= {TARGET:.2f}: "
          f"{'met' if ratio >= TARGET else 'NOT met'}); round by round: {rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
