"""The end-to-end demo (``./run demo``): the whole system on a generated beamtime.

1. generate a demo beamtime (Pilatus-1M-like frames of growing spheres, a FIT2D mask,
   a calibration) with :mod:`saxs_pipeline.demo.beamtime`;
2. start ``saxsfeeder`` and ``saxsdogserver`` (with its embedded Dask cluster) as real
   processes on 127.0.0.1, with a private network config and secret;
3. drive a ``saxsleash`` session: ``new`` -> frames arrive in the watched directory at a
   detector-like rate -> ``stat`` -> ``plot --out`` -> ``close``;
4. print a summary (frames, frames/s, failures, where the outputs are) and write a PNG of
   the curves (I(q) of a few frames, I0 over time) from the zarr stack.

Every process it starts is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("saxs_pipeline.demo.run")


class DemoError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise DemoError(f"{what} exited with code {proc.returncode} (see {path.parent}/*.log)")
        time.sleep(0.1)
    raise DemoError(f"{what} did not start within {timeout:.0f} s")


@contextlib.contextmanager
def process(args: list[str], log_path: Path, what: str) -> Iterator[subprocess.Popen]:
    """A child process that is always stopped: SIGTERM, then SIGKILL after a grace."""
    with open(log_path, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop on SIGTERM; killing it", what)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


class Leash:
    """Runs ``saxsleash`` as a user would and parses its JSON answer."""

    def __init__(self, server: str, config: Path) -> None:
        self.base = [sys.executable, "-m", "saxs_pipeline.cli.leash"]
        self.common = ["-S", server, "--config", str(config)]

    def __call__(self, command: str, *args: str, timeout: float = 120) -> dict[str, Any]:
        argv = [*self.base, command, *args, *self.common]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise DemoError(f"saxsleash {command} failed ({done.returncode}): {done.stderr.strip()}")
        text = done.stdout.strip()
        try:
            return json.loads(text) if text else {}
        except json.JSONDecodeError:
            return {"output": text}


def replay_frames(frames: Sequence[Path], live: Path, rate: float, leash: Leash) -> float:
    """Copy frames into the watched directory as a detector would (write under a hidden
    name, then rename), ``rate`` frames per second; returns the seconds it took."""
    t0 = time.monotonic()
    for i, frame in enumerate(frames):
        due = t0 + i / rate
        time.sleep(max(0.0, due - time.monotonic()))
        tmp = live / f".{frame.name}.part"
        shutil.copyfile(frame, tmp)
        os.replace(tmp, live / frame.name)
        if i and i % max(1, int(rate * 3)) == 0:
            st = leash("stat").get("data", {}).get("stat", {})
            print(f"  {i + 1:4d} frames written, {st.get('images processed', '?')} integrated")
    return time.monotonic() - t0


def wait_processed(leash: Leash, n: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stat: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stat = leash("stat").get("data", {}).get("stat", {})
        if stat.get("images processed", 0) + stat.get("failed", 0) >= n:
            return stat
        time.sleep(0.5)
    raise DemoError(f"only {stat.get('images processed', 0)} of {n} frames were integrated in {timeout:.0f} s")


def plot_stack(zarr_path: Path, out: Path) -> None:
    """I(q) of a few frames and I0 over time, from the zarr curve stack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from saxs_pipeline.stack.read import read_stack

    stack = read_stack(zarr_path)
    curve = stack["curves"]["R0"]
    n = stack["n_valid"]
    order = np.argsort(stack["image_time"]) if n else []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for idx in np.linspace(0, n - 1, min(n, 6)).astype(int) if n else []:
        row = order[idx]
        ax1.loglog(curve["axis"], curve["I"][row], label=Path(str(stack["filename"][row])).name)
    ax1.set_xlabel("q [1/nm]")
    ax1.set_ylabel("Intensity [counts/pixel]")
    ax1.legend(fontsize=7)
    ax1.set_title("I(q) over the run")
    times = stack["image_time"][order] - stack["image_time"][order][0] if n else []
    ax2.plot(times, curve["I0"][order], ".-")
    ax2.set_xlabel("image time [s since first frame]")
    ax2.set_ylabel("I0 = integral of I dq")
    ax2.set_title("I0 over time")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def linger(seconds: float, url: str | None) -> None:
    """Keep the server (and its cluster and live page) up for a person to look."""
    if seconds <= 0:
        return
    print(f"keeping the cluster up for {seconds:g} s (Ctrl-C ends it)"
          + (f": open {url}" if url else ""), flush=True)
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass


def run(root: Path, n_frames: int, rate: float, threads: int,
        linger_s: float = 0.0) -> dict[str, Any]:
    from saxs_pipeline.control.netconf import NetEntry, new_secret, write_network
    from saxs_pipeline.demo.beamtime import generate_demo

    root = root.resolve()
    if root.exists():
        shutil.rmtree(root / "demo", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    print(f"generating a demo beamtime of {n_frames} Pilatus-1M-like frames in {root / 'demo'} ...")
    t = time.monotonic()
    demo = generate_demo(root, n_frames=n_frames)
    print(f"  done in {time.monotonic() - t:.1f} s")
    live = demo.root / "live"
    live.mkdir()
    logs = root / "logs"
    logs.mkdir(exist_ok=True)

    server_port, feeder_port = free_port(), free_port()
    server_url, feeder_url = f"tcp://127.0.0.1:{server_port}", f"tcp://127.0.0.1:{feeder_port}"
    config = root / "saxsdognetwork.json"
    write_network(config, [NetEntry(server=server_url, feeder=feeder_url, secret=new_secret(), name="demo")])

    py = sys.executable
    with contextlib.ExitStack() as stack:
        feeder = stack.enter_context(process(
            [py, "-m", "saxs_pipeline.cli.feeder", str(live), "-p", str(feeder_port), "--bind", "127.0.0.1",
             "--ready-file", str(logs / "feeder.ready")],
            logs / "feeder.log", "saxsfeeder"))
        wait_for_file(logs / "feeder.ready", feeder, 30, "saxsfeeder")
        server = stack.enter_context(process(
            [py, "-m", "saxs_pipeline.cli.server", str(demo.root), "--config", str(config),
             "-t", str(threads), "-f", feeder_url, "--ready-file", str(logs / "server.ready")],
            logs / "server.log", "saxsdogserver"))
        wait_for_file(logs / "server.ready", server, 120, "saxsdogserver")
        print(f"saxsdogserver on {server_url} (embedded Dask cluster, {threads} workers), "
              f"saxsfeeder on {feeder_url}")

        leash = Leash(server_url, config)
        reply = leash("new", str(demo.calibration), str(demo.mask), "live", timeout=300)
        print(f"saxsleash new -> {reply.get('result')}")
        dashboard = reply.get("data", {}).get("dashboard")
        print(f"live SAXS page: {dashboard or 'none (pip install bokeh)'}", flush=True)
        print(f"writing {n_frames} frames into {live} at {rate:g} frames/s ...")
        t_start = time.monotonic()
        replay_frames(demo.frames, live, rate, leash)
        stat = wait_processed(leash, n_frames, timeout=120 + n_frames)
        elapsed = time.monotonic() - t_start
        print(f"saxsleash stat -> {json.dumps(stat)}")
        curves_live = root / "curves_live.png"
        leash("plot", "--out", str(curves_live), "-y", "log", "-x", "log", timeout=60)
        print(f"saxsleash plot --out {curves_live}")
        linger(linger_s, dashboard)
        closed = leash("close", timeout=300)
        print(f"saxsleash close -> {closed.get('result')}")
        files = leash("fileslist").get("data", {}).get("fileslist", {})

    chi_dir = demo.root / "work" / live.name  # the queue's run is named after its folder
    chi_files = sorted(chi_dir.glob("*.chi"))
    zarrs = sorted(demo.root.rglob("*.zarr"))
    summary: dict[str, Any] = {
        "frames written": n_frames,
        "frames integrated": stat.get("images processed", 0),
        "failed": stat.get("failed", 0),
        "frames/s (arrival-limited)": round(stat.get("images processed", 0) / elapsed, 1),
        "chi files": f"{len(chi_files)} in {chi_dir}",
        "listed by fileslist": sum(len(v) for v in files.values()),
        "zarr stack": str(zarrs[0]) if zarrs else None,
        "live plot (saxsleash plot --out)": str(curves_live),
        "logs": str(logs),
        "live SAXS page (while the server ran)": dashboard,
    }
    if zarrs:
        summary["zarr opens with xarray"] = open_with_xarray(zarrs[0])
        png = root / "curves.png"
        plot_stack(zarrs[0], png)
        summary["curves and I0 over time (from zarr)"] = str(png)
    return summary


def open_with_xarray(path: Path) -> str:
    """What a notebook user does first; proves the stack is a tidy dataset."""
    try:
        import xarray as xr
    except ImportError:
        return "xarray not installed (pip install xarray)"
    ds = xr.open_zarr(path, group="R0", consolidated=False)
    return ", ".join(f"{k}={v}" for k, v in ds.sizes.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default="demo-output", type=Path,
                        help="where the demo writes everything (default: ./demo-output)")
    parser.add_argument("-n", "--frames", type=int, default=100, help="frames to write (default: 100)")
    parser.add_argument("--rate", type=float, default=10.0, help="detector frame rate in frames/s (default: 10)")
    parser.add_argument("-t", "--threads", type=int, default=2, help="Dask worker processes (default: 2)")
    parser.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                        help="keep the server's cluster and its live SAXS page up this long "
                        "after the frames are integrated, for a person to look (default: 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args.dir, args.frames, args.rate, args.threads, args.linger)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print("\nsummary")
    width = max(map(len, summary))
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}")
    ok = (summary["frames integrated"] == summary["frames written"] and not summary["failed"]
          and summary["zarr stack"] is not None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
