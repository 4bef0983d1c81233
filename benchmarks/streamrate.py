"""Does ``saxsdog --stream`` keep up with a detector at 50 frames/s?
``python -m benchmarks.streamrate`` (also a row of ``python -m benchmarks.pipeline``).

The README's stream example, measured: ``saxs-stream-sim --demo N --rate 50`` (EIGER2 X
4M-like demo frames, bitshuffle-LZ4, about 2.1 MB each, every message prepared before its
clock starts) as a process of its own, into a queue receiving the stream as ``saxsdog
--stream ... --no-chi streamed/`` does (the embedded cluster of 2 worker processes, the
demo's calibration, the curve stack written). Three rates, each over its own busy time:

* **sent**: what the simulator reports (first to last image sent);
* **received**: images the queue took, first to last (polled every 10 ms);
* **reduced**: frames integrated and committed, first frame taken to last done
  (:class:`saxs_pipeline.pipeline.busyclock.BusyClock`, as ``saxsdog`` prints it).

It **kept up** when every frame was reduced and the reduced rate is at least 90 % of the
rate asked: a backlog still draining after the last image lowers the reduced rate.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEEP_UP = 0.9  # of the rate asked


def bench_stream_rate(client, root: Path, n: int, rate: float, pids, quiet: float):
    """The row of ``n`` demo 4 Mpx frames streamed at ``rate`` frames/s (module doc)."""
    from benchmarks.machine import Background, wait_quiet
    from benchmarks.pipeline import Row, free_port
    from saxs_pipeline.demo.eiger import generate_eiger_demo
    from saxs_pipeline.pipeline.queue import ImageQueue

    demo = generate_eiger_demo(root, n_frames_per_file=1, n_files=1)  # its calibration, mask
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    (root / "streamed").mkdir()
    q = ImageQueue(client, demo.calibration, root / "streamed", relpath=".", stream=endpoint,
                   stream_series=1, stream_idle=30.0, write_chi=False)
    wait_quiet(pids, quiet)
    q.start()
    # the simulator prepares its messages first (0.3 s a frame): the workers build the
    # queue's operators meanwhile, as they do when the README's example is run
    sim = subprocess.Popen([str(Path(sys.executable).parent / "saxs-stream-sim"), "--bind",
                            endpoint, "--demo", str(n), "--rate", f"{rate:g}",
                            "--send-timeout", "300"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_rx = last_rx = None
    bg = Background(pids)
    deadline = time.monotonic() + 120 + n
    try:
        while q.progress()["done"] < n and time.monotonic() < deadline:
            received = q.status.stream().images if q.status.stream else 0
            now = time.monotonic()
            if received and first_rx is None:
                first_rx = now
                bg.__enter__()  # the other processes' CPU while the frames come
            if received >= n and last_rx is None:
                last_rx = now
            if sim.poll() not in (None, 0):
                break
            time.sleep(0.01)
        done_at = time.monotonic()
        if first_rx is not None:
            bg.__exit__(None, None, None)
        _, err = sim.communicate(timeout=300)
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait(10)
    stats = q.close()
    clock = q.status.clock
    sent = re.search(r"images sent at ([\d.]+) images/s", err)
    if sim.returncode != 0 or sent is None:
        raise RuntimeError(f"saxs-stream-sim failed ({sim.returncode}): {err}")
    received_rate = ((n - 1) / (last_rx - first_rx)
                     if first_rx is not None and last_rx is not None and last_rx > first_rx
                     else None)
    reduced = clock.rate()
    kept = stats["images processed"] == n and reduced is not None and reduced >= KEEP_UP * rate
    lag = done_at - last_rx if last_rx is not None else None
    note = (f"sent {float(sent[1]):.1f}, received "
            + ("-" if received_rate is None else f"{received_rate:.1f}")
            + f" f/s; reduced {stats['images processed']}/{n} over {clock.busy:.1f} s busy"
            + ("" if lag is None else f", last done {lag:.2f} s after the last received")
            + f"; kept up: {'yes' if kept else 'NO'}")
    return Row(f"stream at {rate:g} f/s (sim), EIGER2 X 4M", n, reduced,
               background=bg.cores if first_rx is not None else None, note=note,
               compare=False), kept


def main(argv: list[str] | None = None) -> int:

    from benchmarks.cluster import embedded, pids_of, quiet_dask_logs
    from benchmarks.pipeline import table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.streamrate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="frames streamed (200)")
    parser.add_argument("--rate", type=float, default=50.0, help="frames/s asked (50)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--quiet-wait", type=float, default=25.0,
                        help="max seconds to wait for other processes to go quiet (25)")
    args = parser.parse_args(argv)
    quiet_dask_logs()
    with tempfile.TemporaryDirectory(prefix="saxs-streamrate-") as tmp, \
            embedded(args.workers) as client:
        row, kept = bench_stream_rate(client, Path(tmp), args.frames, args.rate,
                                      pids_of(client), args.quiet_wait)
    print(table([row], None))
    print(f"target: saxsdog --stream keeps up with {args.rate:g} frames/s of EIGER2 X 4M "
          f"demo frames: {'PASS' if kept else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
