"""Live-page cost benchmark: ``python -m benchmarks.dashboard``.

The pipeline benchmark's readdir case (Pilatus 1M-sized frames, the embedded cluster of 2
worker processes x 1 thread, ``.chi`` and zarr written) run with no browser and with
headless Chromium showing the SAXS page (``/saxs``) at default priority, as a person's
browser on the beamline computer runs; ``--nice`` adds a case with that browser at nice
19 (standing in for a browser on another machine). The cases are interleaved, the order
reversed every other round (A B C C B A A B C ...), so that noise drifting over the
minutes hits every case alike; each case runs ``--runs`` times.

"Within noise" is decided from the runs: per case the mean and standard deviation of the
throughput, and for each browser case against no browser the difference of the means
with its 95 % confidence interval (Welch), the two-sample test's p value, and whether
the browser case's mean lies within one standard deviation of the no-browser runs. The
verdict is the test's (p >= 0.05: no difference found); the interval's lower end is the
largest slowdown the runs leave possible. The same comparison paired by round (each
browser run against the no-browser run next to it) takes out the machine's drift. Runs
during which other processes used more than ``--max-background`` cores are listed but
left out of the statistics. The browser's processes count as ours, not as background: on
a 2-core machine its CPU is part of the cost.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.cluster import embedded, pids_of, warm_workers
from benchmarks.files import copy_frames, find_source
from benchmarks.machine import Background, own_seconds, wait_quiet
from benchmarks.pipeline import Row

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HAS_JS = """const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
return Boolean(doc && doc.get_model_by_name(arguments[0]));"""
POINTS_JS = """const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
const s = doc && doc.get_model_by_name(arguments[0]);
return s ? s.data.t.length : -1;"""
CASES = {"none": "no browser", "page": "page open in Chromium",
         "nice": "page open, browser at nice 19", "blank": "Chromium on a blank page"}


@contextlib.contextmanager
def browser(url: str) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1000"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(url)
        yield driver
    finally:
        driver.quit()


def browser_pids(driver) -> set[int]:
    import psutil

    try:
        p = psutil.Process(driver.service.process.pid)
        return {p.pid, *(c.pid for c in p.children(recursive=True))}
    except psutil.Error:
        return set()


def renice(driver) -> None:
    """The browser below the pipeline in CPU priority: as a browser on the person's own
    machine, it then takes no core the workers want (page updates may lag instead)."""
    import psutil

    for pid in browser_pids(driver):
        try:
            psutil.Process(pid).nice(19)
        except psutil.Error:
            pass


def run_case(client, source, directory: Path, n: int, pids, quiet: float, driver,
             run: int) -> Row:
    import psutil

    from saxs_pipeline.pipeline.queue import ImageQueue

    # Each run writes its own outputs: replacing another run's .chi files would delete an
    # inode per frame, which this VM's file system makes every new file pay for afterwards
    # (benchmarks.files.settle_file_system).
    q = ImageQueue(client, source.calibration, directory, batch_size=16,
                   relpath=f"../dash-{run}", zarr_path=directory.parent / f"dash-{run}.zarr")
    q.start()
    page = driver is not None and driver.current_url.endswith("/saxs")
    if page:  # the page has drawn the new queue's section: the steady state
        deadline = time.monotonic() + 10
        while not driver.execute_script(HAS_JS, f"saxs-info-{q.queue_id}") \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    wait_quiet(pids, quiet)
    watched = browser_pids(driver) if driver is not None else set()
    me = psutil.Process()  # the in-process scheduler, its page server and the driver
    # (not its children's times: a browser reaped meanwhile would count as ours)
    cpu0 = own_seconds(watched), sum(me.cpu_times()[:2])
    with Background(pids) as bg:
        t0 = time.perf_counter()
        q.readdir()
        ok = q.join(600)
        wall = time.perf_counter() - t0
    browser_cores = (own_seconds(watched) - cpu0[0]) / wall
    driver_cores = (sum(me.cpu_times()[:2]) - cpu0[1]) / wall
    stats = q.close()
    assert ok and stats["failed"] == 0, stats
    note = f"driver+scheduler {driver_cores:.2f} cores"
    if driver is not None:
        note = f"browser {browser_cores:.2f} cores, {note}"
    if page:
        deadline = time.monotonic() + 10  # the page shows every frame of the run
        while (shown := driver.execute_script(POINTS_JS, f"saxs-series-{q.queue_id}")) < n \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        note = f"{note}; page showed {shown} points"
    return Row("", n, n / wall, background=bg.cores, note=note)


def compare(base: list[float], other: list[float]) -> dict[str, float | bool]:
    """``other`` against ``base``: difference of means (%), its 95 % CI (Welch), the
    two-sample test's p, and whether ``other``'s mean is within 1 sd of ``base``."""
    from scipy import stats

    mb, mo = statistics.fmean(base), statistics.fmean(other)
    sb, so = statistics.stdev(base), statistics.stdev(other)
    test = stats.ttest_ind(other, base, equal_var=False)
    ci = test.confidence_interval(0.95)
    return {"diff": 100 * (mo - mb) / mb, "lo": 100 * ci.low / mb, "hi": 100 * ci.high / mb,
            "p": float(test.pvalue), "within_sd": abs(mo - mb) <= sb,
            "sd_base": 100 * sb / mb, "sd_other": 100 * so / mb}


def paired(runs: dict[str, list[Row]], k: str, max_background: float) -> str:
    """``k`` against no browser within each round (neighbouring runs, so the drift of the
    machine's speed over the minutes cancels): mean ratio - 1, its 95 % CI, p."""
    from scipy import stats

    pairs = [(b.fps, o.fps) for b, o in zip(runs["none"], runs[k], strict=False)
             if max(b.background or 0.0, o.background or 0.0) <= max_background]
    if len(pairs) < 2:
        return ""
    ratios = [o / b - 1 for b, o in pairs]
    test = stats.ttest_1samp(ratios, 0.0)
    ci = test.confidence_interval(0.95)
    return (f"  paired by round ({len(pairs)} rounds): {100 * statistics.fmean(ratios):+.1f} % "
            f"(95 % CI {100 * ci.low:+.1f} .. {100 * ci.high:+.1f} %; p = {test.pvalue:.2f})")


def report(runs: dict[str, list[Row]], max_background: float) -> str:
    lines = [f"{'run':<4} {'case':<32} {'frames/s':>9} {'bg CPU':>6}  note"]
    order = sorted((int(r.case), i, k) for k, rows in runs.items() for i, r in enumerate(rows))
    for _, i, k in order:
        r = runs[k][i]
        mark = "" if (r.background or 0.0) <= max_background else "  (noisy: left out)"
        lines.append(f"{r.case:<4} {CASES[k]:<32} {r.fps:9.1f} {r.background or 0.0:6.2f}  "
                     f"{r.note}{mark}")
    quiet = {k: [r.fps for r in rows if (r.background or 0.0) <= max_background]
             for k, rows in runs.items()}
    lines += ["", f"{'case':<32} {'runs':>4} {'mean f/s':>9} {'sd':>6} {'min':>6} {'max':>6}"]
    for k, v in quiet.items():
        if v:
            sd = statistics.stdev(v) if len(v) > 1 else float("nan")
            lines.append(f"{CASES[k]:<32} {len(v):>4} {statistics.fmean(v):9.1f} {sd:6.1f} "
                         f"{min(v):6.1f} {max(v):6.1f}")
    base = quiet.get("none", [])
    for k in ("page", "nice", "blank"):
        other = quiet.get(k, [])
        if len(base) < 2 or len(other) < 2:
            continue
        c = compare(base, other)
        noise = c["p"] >= 0.05  # the two-sample test finds no difference
        lines.append(
            f"{CASES[k]} vs no browser: {c['diff']:+.1f} % (95 % CI {c['lo']:+.1f} .. "
            f"{c['hi']:+.1f} %; Welch p = {c['p']:.2f}; mean "
            f"{'within' if c['within_sd'] else 'outside'} 1 sd of the no-browser runs, "
            f"sd {c['sd_base']:.1f} %): {'WITHIN' if noise else 'NOT within'} noise")
        lines += [t for t in [paired(runs, k, max_background)] if t]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=800, help="frames per run (800)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each case (5)")
    parser.add_argument("--cases", default="none,page",
                        help="comma-separated, of none, page, nice, blank (none,page)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--quiet-wait", type=float, default=25.0,
                        help="max seconds to wait for other processes to go quiet (25)")
    parser.add_argument("--max-background", type=float, default=0.3,
                        help="runs with more CPU of other processes are left out (0.3 cores)")
    args = parser.parse_args(argv)
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        print("no Chromium: apt-get install chromium chromium-driver", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    import distributed  # noqa: F401  (sets up its loggers when imported: quieted after)

    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from saxs_pipeline.live.plugin import dashboard_url

    cases = [k for k in CASES if k in args.cases.split(",")]
    root = Path(tempfile.mkdtemp(prefix="saxs-dash-bench-"))
    os.environ.setdefault("SAXS_PIPELINE_CACHE", str(root / "operator-cache"))
    try:
        source = find_source(root)
        frames = copy_frames(source.frame, root / "readdir" / "data", args.frames)
        with embedded(args.workers) as client:
            warm_workers(client, source, root / "warm")
            url = dashboard_url(client)
            assert url, "no SAXS page: is bokeh installed?"
            own = pids_of(client)()  # this process (driver, scheduler, page) and the workers
            runs: dict[str, list[Row]] = {k: [] for k in cases}
            for i in range(args.runs):
                for k in cases if i % 2 == 0 else cases[::-1]:
                    number = sum(map(len, runs.values())) + 1
                    with contextlib.ExitStack() as stack:
                        where = "about:blank" if k == "blank" else url  # the browser alone
                        driver = None if k == "none" else stack.enter_context(browser(where))
                        if k == "nice":
                            renice(driver)

                        def pids(driver=driver) -> set[int]:
                            return own | (browser_pids(driver) if driver else set())

                        row = run_case(client, source, frames[0].parent, args.frames, pids,
                                       args.quiet_wait, driver, number)
                    row.case = str(number)
                    runs[k].append(row)
                    print(f"run {number}: {CASES[k]}: {row.fps:.1f} frames/s "
                          f"(bg {row.background:.2f}) {row.note}", file=sys.stderr)
        print(f"SAXS page cost: {source.description}, {args.frames} frames per run, "
              f"{args.workers} worker processes x 1 thread, {os.cpu_count()} CPUs, "
              f"cases interleaved, page at {url}")
        print(report(runs, args.max_background))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
