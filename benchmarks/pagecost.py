"""What the SAXS page costs a browser, without the pipeline: ``python -m benchmarks.pagecost``.

An in-process scheduler with the ``SaxsLive`` plugin is fed by a real
:class:`~saxs_pipeline.live.feed.LiveFeed` with synthetic frames (Pilatus 1M-like curves of
``--bins`` q points at ``--rate`` frames/s, and Pilatus 1M-sized frame pictures as often as
the feed asks for them), while headless Chromium shows ``/saxs``. No
integration runs, so the browser's CPU (per process kind, from psutil) and where its
renderer spends it (Chrome DevTools ``Performance.getMetrics``: script, layout, style, paint
tasks) are measured without the workers' noise. Then, the feed stopped, ``--lone`` frames
one at a time after a pause: the seconds from each one's result reaching the feed to the
page showing its name (the page's part of "a new frame shows within 2 s": a push interval,
the next tick, drawing; the frame's integration comes on top). ``--profile FILE`` also records a JS CPU
profile (DevTools ``Profiler``) and prints the functions with the most self time.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import logging
import statistics
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.dashboard import browser, browser_pids

METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration",
           "LayoutCount", "RecalcStyleCount")


def synthetic_pairs(n: int, start: int, q: np.ndarray, key: str) -> list[tuple[Any, Any]]:
    """``(job, result)`` pairs as the queue hands them to its sinks: a power-law curve
    with a Guinier knee, scaled and noisy per frame."""
    rng = np.random.default_rng(start)
    now = time.time()
    out = []
    for i in range(start, start + n):
        scale = 1.0 + 0.3 * np.sin(i / 50.0)
        mean = scale * 1e3 * np.exp(-(q * 30) ** 2 / 3) + 0.5 * q ** -2.5 * 1e-3
        mean = mean * (1 + 0.02 * rng.standard_normal(len(q)))
        curve = SimpleNamespace(key=key, mean=mean, poisson=np.sqrt(np.abs(mean)) * 0.1,
                                integparams={"I0": scale, "I1": 2 * scale, "I2": 0.5})
        result = SimpleNamespace(status="ok", curves=[curve], fingerprint=None,
                                 image_time=now - 0.05, processed_time=now,
                                 integration_time=0.004, picture=None)
        out.append((SimpleNamespace(output=f"/data/results/frame_{i:06d}.chi"), result))
    return out


def synthetic_pictures(n: int = 4) -> list[Any]:
    """Pictures of Pilatus 1M-sized frames (a ring pattern around a beam stop, Poisson
    counts, module gaps), each frame another."""
    from saxs_pipeline.ops.picture import frame_picture

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:1043, :981]
    r = np.hypot(rows - 235.0, cols - 388.0)
    out = []
    for i in range(n):
        frame = rng.poisson(50 + 2e4 / (1 + (r / (30 + 5 * i)) ** 2)).astype(np.int32)
        frame[195::212] = -1  # module gaps
        out.append(frame_picture(frame, mask=r < 20))
    return out


class Feeder(threading.Thread):
    """Frames at ``rate`` per second into the feed, in 50 ms batches (as results come);
    a batch's last frame brings a picture when the feed asks (as a task's does)."""

    def __init__(self, feed: Any, q: np.ndarray, key: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.feed, self.q, self.key, self.rate = feed, q, key, rate
        self.pictures = itertools.cycle(synthetic_pictures())
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.wait(0.05):
            due = int((time.monotonic() - t0) * self.rate)
            if due > self.sent:
                pairs = synthetic_pairs(due - self.sent, self.sent, self.q, self.key)
                if self.feed.picture_due():
                    pairs[-1][1].picture = next(self.pictures)
                self.feed.add(pairs)
                self.sent = due


def renderer_kind(cmdline: list[str]) -> str:
    kind = next((a.split("=", 1)[1] for a in cmdline if a.startswith("--type=")), "browser")
    return "chromedriver" if cmdline and cmdline[0].endswith("chromedriver") else kind


def cpu_by_kind(pids: set[int]) -> dict[str, float]:
    import psutil

    out: dict[str, float] = collections.defaultdict(float)
    for pid in pids:
        try:
            p = psutil.Process(pid)
            c = p.cpu_times()
            out[renderer_kind(p.cmdline())] += c.user + c.system
        except psutil.Error:
            pass
    return out


def cpu_by_thread(pids: set[int]) -> dict[str, float]:
    """CPU seconds per thread name (``/proc/PID/task``): the renderer's main thread runs
    the page's JS, layout and paint; its compositor and raster threads draw the tiles."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = collections.defaultdict(float)
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
                comm = stat[stat.index("(") + 1:stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2:].split()
                out[comm.rstrip("0123456789")] += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return out


def perf_metrics(driver) -> dict[str, float]:
    got = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    return {m["name"]: m["value"] for m in got if m["name"] in METRICS}


def top_functions(profile: dict[str, Any], n: int = 15) -> list[tuple[float, str]]:
    """Self time (ms) per function of a DevTools CPU profile."""
    nodes = {node["id"]: node for node in profile["nodes"]}
    dt = collections.Counter()
    deltas = profile.get("timeDeltas", [])
    for sample, delta in zip(profile.get("samples", []), deltas, strict=False):
        frame = nodes[sample]["callFrame"]
        url = frame.get("url", "").rsplit("/", 1)[-1]
        dt[f"{frame.get('functionName') or '(anon)'} {url}:{frame.get('lineNumber')}"] += delta
    return [(us / 1e3, name) for name, us in dt.most_common(n)]


def measure(driver, pids: set[int], seconds: float, profile: str | None) -> dict[str, Any]:
    if profile:
        driver.execute_cdp_cmd("Profiler.enable", {})
        driver.execute_cdp_cmd("Profiler.setSamplingInterval", {"interval": 500})
        driver.execute_cdp_cmd("Profiler.start", {})
    cpu0, th0 = cpu_by_kind(pids), cpu_by_thread(pids)
    m0, t0, own0 = perf_metrics(driver), time.monotonic(), time.process_time()
    time.sleep(seconds)
    cpu1, th1 = cpu_by_kind(pids), cpu_by_thread(pids)
    m1, dt = perf_metrics(driver), time.monotonic() - t0
    own = (time.process_time() - own0) / dt
    threads = {k: (th1[k] - th0.get(k, 0.0)) / dt for k in th1}
    out: dict[str, Any] = {
        "cores": {k: (cpu1[k] - cpu0.get(k, 0.0)) / dt for k in cpu1},
        "server": own,
        "threads": dict(sorted(((k, v) for k, v in threads.items() if v >= 0.005),
                               key=lambda kv: -kv[1])),
        "renderer_ms_per_s": {k: 1e3 * (m1[k] - m0[k]) / dt for k in METRICS
                              if k.endswith("Duration")},
        "counts_per_s": {k: (m1[k] - m0[k]) / dt for k in METRICS if k.endswith("Count")},
    }
    if profile:
        prof = driver.execute_cdp_cmd("Profiler.stop", {})["profile"]
        with open(profile, "w") as f:
            json.dump(prof, f)
        out["top"] = top_functions(prof)
    return out


LATEST_TEXT = """
const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
const info = doc && doc.get_model_by_name(arguments[0]);
return info ? info.text : null;
"""


def lone_frame_latency(driver, feed: Any, q: np.ndarray, key: str, first: int, n: int,
                       pause: float = 3.0, timeout: float = 30.0) -> list[float]:
    """Seconds until the page shows each of ``n`` lone frames (``pause`` s apart: a page
    at rest sends its next update at the next tick)."""
    out = []
    for i in range(first, first + n):
        time.sleep(pause)
        name = f"frame_{i:06d}"
        t0 = time.monotonic()
        feed.add(synthetic_pairs(1, i, q, key))
        while name not in (driver.execute_script(LATEST_TEXT, f"saxs-info-{feed.queue_id}")
                           or ""):
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"the page did not show {name} within {timeout:g} s")
            time.sleep(0.01)
        out.append(time.monotonic() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pagecost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="frames/s fed (200)")
    parser.add_argument("--bins", type=int, default=1000, help="q points per curve (1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--lone", type=int, default=10,
                        help="lone frames timed to the page after the measurement (10)")
    parser.add_argument("--profile", help="write a DevTools CPU profile here")
    parser.add_argument("--hidden", action="store_true",
                        help="measure with the page's tab in the background")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from distributed import Client, LocalCluster

    from saxs_pipeline.integrator import Curve
    from saxs_pipeline.live.feed import LiveFeed
    from saxs_pipeline.live.plugin import SaxsLive, dashboard_url

    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.ERROR)
    q = np.geomspace(0.004, 0.6, args.bins)
    template = Curve("Radial", 0, q, q, q, None, {}, ["q", "I", "err"])
    key = template.key
    with (LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                       dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client):
        client.register_plugin(SaxsLive())
        feed = LiveFeed("pagecost", lambda: client, [template],
                        {"id": "synthetic", "distance_mm": 1031.7,
                         "beam_center": [808.0, 388.0]}, lambda: {"backlog": 3})
        feed.start()
        feeder = Feeder(feed, q, key, args.rate)
        feeder.start()
        try:
            time.sleep(1.0)
            url = dashboard_url(client)
            with browser(url) as driver:
                driver.execute_cdp_cmd("Performance.enable", {})
                if args.hidden:
                    driver.switch_to.new_window("tab")  # the page's tab goes to the back
                time.sleep(5.0)  # loaded and drawn once
                got = measure(driver, browser_pids(driver), args.seconds, args.profile)
                feeder.stop.set()
                feeder.join(5)
                lone = lone_frame_latency(driver, feed, q, key, feeder.sent + 1, args.lone)
        finally:
            feeder.stop.set()
            feeder.join(5)
            feed.stop(push=False)
    print(f"page cost: {args.rate:g} frames/s fed, {args.bins} q points, {args.seconds:g} s"
          f"{', tab hidden' if args.hidden else ''}")
    cores = got["cores"]
    print("browser cores: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(cores.items()))
          + f"; total {sum(cores.values()):.3f}")
    print(f"this process (scheduler, page server, feed, synthetic frames): "
          f"{got['server']:.3f} cores")
    print("threads (cores): " + ", ".join(f"{k} {v:.3f}" for k, v in got["threads"].items()))
    print("renderer ms/s: " + ", ".join(f"{k[:-8]} {v:.0f}"
                                        for k, v in got["renderer_ms_per_s"].items())
          + "; " + ", ".join(f"{k} {v:.1f}/s" for k, v in got["counts_per_s"].items()))
    if lone:
        print(f"lone frame to the page: median {statistics.median(lone):.2f} s, max "
              f"{max(lone):.2f} s over {len(lone)} (the page's part of the 2 s bound; the "
              "frame's integration comes on top)")
    for ms, name in got.get("top", []):
        print(f"  {ms:8.0f} ms  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
