"""Soak: many small frames through ``saxsdog`` readdir on the multi-host harness, the
memory of every process and the throughput sampled while it runs.

    sudo python -m benchmarks.soak [--frames 100000] [--hosts 2] [--every 5] [--out soak]
                                   [--watch [--rate 500]]

The frames are ``--distinct`` generated 64 x 48 TIFFs hard-linked to ``--frames`` names:
the point is the bookkeeping (finder, ledger, dispatcher, stack), not the integration.
Readdir (default): every name is there before ``saxsdog`` starts. ``--watch``: ``saxsdog
-w`` on an empty directory and a feeder adding ``--rate`` frames/s as a detector that
writes ``.part`` files and renames them would; ``saxsdog`` is stopped (SIGTERM) once its
stack has every frame committed.
Every ``--every`` s: RSS of the driver, the scheduler and each worker (``/proc``), and
the ``.chi`` files written (frames/s over the interval). At the end: stack rows =
frames, no name twice, ledger all done, ``failures.log`` empty; a summary table (RSS at
start / middle / end, growth over the second half, frames/s in the middle and the last
10 %) and ``<out>.png`` (RSS and frames/s over time) and ``<out>.json`` (the samples).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.multihost import frames_linked

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from hostcluster import Cluster  # noqa: E402
from netns import Net, unavailable  # noqa: E402

__all__ = ["Soak", "main", "soak"]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_chi(work: Path) -> int:
    try:
        with os.scandir(work) as it:
            return sum(1 for e in it if e.name.endswith(".chi"))
    except FileNotFoundError:
        return 0


def stack_rows(path: Path) -> int:
    """Rows committed in a run's curve stack (its ``n_valid``: raised only after the
    ledger has them done; the ledger itself is locked by its writer)."""
    import zarr

    try:
        return int(zarr.open_group(path, mode="r", use_consolidated=False).attrs["n_valid"])
    except Exception:  # not created yet, or caught mid-write: ask again later
        return 0


def feed(src: list[Path], data: Path, n: int, rate: float, stop: threading.Event) -> None:
    """``n`` frames ``f<i>.tif`` into ``data`` at ``rate`` per second: each a hard link to
    one of ``src`` made as ``.part`` and renamed (the watcher takes a rename at once)."""
    t0 = time.monotonic()
    for i in range(n):
        if i % 50 == 0:  # paced in steps of 50: no sleep per frame
            if stop.wait(max(0.0, t0 + i / rate - time.monotonic())):
                return
        part = data / f"f{i:06d}.part"
        os.link(src[i % len(src)], part)
        os.replace(part, data / f"f{i:06d}.tif")


@dataclass
class Soak:
    """The samples of one soak run and its checks."""

    frames: int
    hosts: int
    t: list[float] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    rss: dict[str, list[float | None]] = field(default_factory=dict)
    cpu: dict[str, list[float | None]] = field(default_factory=dict)  # CPU s used so far
    seconds: float = 0.0
    checks: dict[str, object] = field(default_factory=dict)
    mode: str = "readdir"  # or "watch"

    def fps(self) -> list[float]:
        """Frames per second over each interval (the first sample: since the start)."""
        out, last_t, last_n = [], 0.0, 0
        for t, n in zip(self.t, self.done, strict=True):
            out.append((n - last_n) / max(t - last_t, 1e-9))
            last_t, last_n = t, n
        return out

    def _running(self) -> list[int]:
        """Samples taken while frames were still coming (not start-up, not the tail)."""
        return [i for i, n in enumerate(self.done) if 0 < n < self.frames]

    def summary(self) -> dict[str, object]:
        run = self._running()
        fps = self.fps()
        out: dict[str, object] = {"frames": self.frames, "mode": self.mode, "hosts": self.hosts,
                                  "seconds": round(self.seconds, 1),
                                  "mean fps (start-up included)": round(self.frames / max(self.seconds, 1e-9), 1)}
        if len(run) >= 4:
            mid = run[len(run) // 4: 3 * len(run) // 4] or run
            tail = run[-max(1, len(run) // 10):]
            out["fps middle"] = round(statistics.mean(fps[i] for i in mid), 1)
            out["fps last 10 %"] = round(statistics.mean(fps[i] for i in tail), 1)
        for name, values in self.rss.items():
            # from the first frame on: start-up (imports, the operator) is not growth
            vals = [v for i, v in enumerate(values) if v is not None and self.done[i] > 0]
            if len(vals) < 2:
                continue
            half = vals[len(vals) // 2:]
            start, middle, end = vals[0], vals[len(vals) // 2], vals[-1]
            out[f"rss {name} MB"] = (round(start), round(middle), round(end))
            out[f"rss {name} growth 2nd half %"] = round(100 * (half[-1] - half[0]) / half[0], 1)
        for name, values in self.cpu.items():
            used = [v for v in values if v is not None]
            if used:  # the whole run, start-up included
                out[f"cpu {name} ms per frame"] = round(1e3 * used[-1] / self.frames, 3)
        return out | self.checks

    def plot(self, png: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        for name, values in self.rss.items():
            a.plot(self.t, [v if v is not None else float("nan") for v in values], label=name)
        a.set_ylabel("RSS (MB)")
        a.legend(fontsize="small")
        b.plot(self.t, self.fps())
        b.set_ylabel("frames/s")
        b.set_xlabel("s since saxsdog started")
        a.set_title(f"soak: {self.frames} frames ({self.mode}), {self.hosts} worker host(s)")
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)


def soak(root: Path, frames: int, hosts: int = 2, every: float = 5.0, batch: int = 64,
         distinct: int = 8, timeout: float = 3600, watch: bool = False,
         rate: float = 500.0) -> Soak:
    """One soak run in ``root`` (see the module doc); raises when saxsdog fails."""
    from saxs_pipeline.pipeline.ledger import Ledger, read_manifest
    from saxs_pipeline.stack.read import read_stack

    setup = frames_linked(root, 0 if watch else frames, (64, 48), distinct)
    src = []
    if watch:  # the distinct frames outside the watched tree, the tree empty
        (root / "src").mkdir()
        src = [setup.write(i, root / "src") for i in range(distinct)]
    work = setup.root / "exp" / "work"
    workers = [f"w{i + 1}" for i in range(hosts)]
    net = Net(["s", *workers])
    result = Soak(frames, hosts, mode="watch" if watch else "readdir")
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(src, setup.data, frames, rate, stop),
                              name="soak-feeder", daemon=True)
    try:
        c = Cluster(net, root, ttl="30s")
        c.scheduler()
        for w in workers:
            c.worker(w)
        pids = {"scheduler": net["s"].procs[0].pid} | {w: net[w].procs[0].pid for w in workers}
        log = root / "dog.log"
        t0 = time.monotonic()
        dog = c.saxsdog(["-c", str(setup.calibration), "--batch-size", str(batch), "-S",
                         *(["-w"] if watch else []), str(setup.data)], log,
                        {"SAXS_PIPELINE_CACHE": str(root / "cache")})
        pids = {"driver": dog.pid} | pids
        result.rss = {name: [] for name in pids}
        result.cpu = {name: [] for name in pids}
        if watch:
            feeder.start()
        stopping = False
        while True:
            finished = dog.poll() is not None
            result.t.append(time.monotonic() - t0)
            result.done.append(count_chi(work / "data"))
            for name, pid in pids.items():
                alive = not finished or name != "driver"
                result.rss[name].append(rss_mb(pid) if alive else None)
                result.cpu[name].append(cpu_s(pid) if alive else None)
            if finished:
                break
            if (watch and not stopping and result.done[-1] >= frames
                    and stack_rows(work / "data.zarr") >= frames):
                dog.send_signal(signal.SIGTERM)  # a watch runs until stopped
                stopping = True
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"soak of {frames} frames not done in {timeout:g} s")
            time.sleep(every)
        result.seconds = time.monotonic() - t0
        if dog.returncode != 0:
            raise RuntimeError(f"saxsdog exited {dog.returncode}:\n{log.read_text()[-3000:]}")
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join(10)
        net.close()
    st = read_stack(work / "data.zarr")
    ledger = work / "data.ledger"
    led = Ledger(ledger, read_manifest(ledger)[0])
    try:
        counts = led.counts()
    finally:
        led.close()
    failures = work / "failures.log"
    result.checks = {
        "stack rows": int(st["n_valid"]), "distinct names": len(set(st["filename"])),
        ".chi files": count_chi(work / "data"), "ledger done": counts.get("done", 0),
        "ledger pending": counts.get("pending", 0), "ledger failed": counts.get("failed", 0),
        "failures.log lines": len(failures.read_text().splitlines()) if failures.exists() else 0,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("soak"), help="<out>.png, <out>.json")
    ap.add_argument("--watch", action="store_true",
                    help="saxsdog -w, the frames added while it runs (default: readdir)")
    ap.add_argument("--rate", type=float, default=500.0, help="--watch: frames/s added (500)")
    args = ap.parse_args(argv)
    why = unavailable()
    if why:
        print(f"soak skipped: {why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="saxs-soak-") as tmp:
        result = soak(Path(tmp), args.frames, args.hosts, args.every, args.batch,
                      watch=args.watch, rate=args.rate)
    result.plot(args.out.with_suffix(".png"))
    summary = result.summary()
    args.out.with_suffix(".json").write_text(json.dumps(
        {"summary": summary, "t": result.t, "done": result.done, "rss": result.rss,
         "cpu": result.cpu}, indent=1))
    print("| | |\n|---|---|")
    for k, v in summary.items():
        print(f"| {k} | {v} |")
    print(f"plot: {args.out.with_suffix('.png')}")
    ok = (summary["stack rows"] == summary["distinct names"] == summary[".chi files"]
          == summary["ledger done"] == args.frames and not summary["failures.log lines"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
