"""``saxsdog``: integrate every frame of a directory (and, with ``-w``, every new one).

    saxsdog [options] DIRECTORY
    saxsdog demo [DIR] [-n N] [options]     generate the demo beamtime in DIR and reduce it

The manual's options (``-c -t -m -w -r -o -R -i -s -p -P -S -n -D``) plus ``--scheduler``
(default: an embedded local cluster of ``-t`` worker processes), ``--zarr``, ``--pattern``
and ``--poll``. Exit status: 0 done, 1 some frames failed (see ``failures.log``), 2 bad
start-up input (calibration, directory, options), 3 scheduler unreachable, 130 interrupted
before the queue started.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saxs_pipeline.naming import DEFAULT_RELPATH

__all__ = [
    "Options", "build_parser", "embedded_cluster_kwargs", "main", "parse_args", "run",
    "show_progress",
]

log = logging.getLogger("saxsdog")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SCHEDULER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass(frozen=True)
class Options:
    directory: Path
    calibration: Path
    threads: int | None = None
    plot: bool = False
    watch: bool = False
    resume: bool = False
    out_dir: Path | None = None
    relpath: str = DEFAULT_RELPATH
    svg: bool = False
    png: bool = False
    profile: bool = False
    silent: bool = False
    no_walk: bool = False
    walk_thread: bool = False
    scheduler: str | None = None
    scheduler_file: Path | None = None
    connect_timeout: float = 10.0
    zarr: Path | None = None
    pattern: str = "*.tif"
    poll: bool = False
    batch_size: int = 16
    retries: int = 5
    std: bool = False
    verbose: int = 0


def _common(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("-c", "--calibration", type=Path, default=Path("cal.json"),
      help="calibration JSON (default: cal.json)")
    a("-t", "--threads", type=int, default=None,
      help="worker processes of the embedded cluster (default: the calibration's Threads)")
    a("-m", "--plot", action="store_true",
      help="live plot of the latest frame (a window, or live.png beside the outputs without a display)")
    a("-w", "--watch", action="store_true", help="keep watching the directory for new frames")
    a("-r", "--resume", action="store_true", help="skip frames whose .chi files exist")
    a("-o", "--outdir", dest="out_dir", type=Path, default=None,
      help="write all outputs into OUTDIR, frame paths flattened into the file names")
    a("-R", "--relpath", default=DEFAULT_RELPATH,
      help=f"output folder relative to each image folder (default: {DEFAULT_RELPATH})")
    a("-i", "--inplace", action="store_true", help="write the outputs next to the images")
    a("-s", "--svg", action="store_true", help="also write an SVG plot per frame")
    a("-p", "--png", action="store_true", help="also write a PNG of every frame")
    a("-P", "--profile", action="store_true", help="profile the driver into the file 'prof'")
    a("-S", "--silent", action="store_true", help="no progress bar, warnings only")
    a("-n", "--no-walk", action="store_true", help="do not process the frames already there")
    a("-D", "--walk-thread", action="store_true",
      help="walk the directory in the background (with -w: watch at once)")
    a("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    a("--scheduler", default=None, metavar="ADDRESS",
      help="Dask scheduler to use, e.g. tcp://host:8786 (default: an embedded local cluster)")
    a("--scheduler-file", type=Path, default=None, help="Dask scheduler file to connect with")
    a("--connect-timeout", type=float, default=10.0, help="seconds to reach the scheduler (10)")
    a("--zarr", type=Path, default=None,
      help="curve stack path (default: <outputs>/<directory name>.zarr)")
    a("--pattern", default="*.tif", help="frame file name pattern (default: *.tif)")
    a("--poll", action="store_true",
      help="with -w: poll the directory (network file systems) instead of inotify")
    a("--batch-size", type=int, default=16, help="frames per task for the walk (16)")
    a("--retries", type=int, default=5, help="retries of a frame still being written (5)")
    a("--std", action="store_true",
      help="also compute the per-bin standard deviation for the curve stack (slower)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saxsdog",
        description="Integrate SAXS detector frames into .chi curves and a zarr curve stack. "
        "'saxsdog demo [DIR]' generates a demo beamtime and reduces it.",
    )
    parser.add_argument("directory", type=Path, help="directory of frames (searched recursively)")
    _common(parser)
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saxsdog demo", description="Generate the demo beamtime in DIR/demo and reduce it.")
    parser.add_argument("root", nargs="?", type=Path, default=Path("demo-output"),
                        help="where to create demo/ (default: demo-output)")
    parser.add_argument("--frames", "-N", type=int, default=50, help="sample frames (50)")
    _common(parser)
    return parser


def _options(ns: argparse.Namespace, directory: Path, calibration: Path) -> Options:
    return Options(
        directory=directory, calibration=calibration, threads=ns.threads, plot=ns.plot,
        watch=ns.watch, resume=ns.resume, out_dir=ns.out_dir,
        relpath=os.curdir if ns.inplace else ns.relpath, svg=ns.svg, png=ns.png,
        profile=ns.profile, silent=ns.silent, no_walk=ns.no_walk, walk_thread=ns.walk_thread,
        scheduler=ns.scheduler, scheduler_file=ns.scheduler_file,
        connect_timeout=ns.connect_timeout, zarr=ns.zarr, pattern=ns.pattern, poll=ns.poll,
        batch_size=ns.batch_size, retries=ns.retries, std=ns.std, verbose=ns.verbose,
    )


def parse_args(argv: Sequence[str]) -> Options:
    ns = build_parser().parse_args(argv)
    return _options(ns, ns.directory, ns.calibration)


# ---------------------------------------------------------------------------------------


def _setup_logging(opts: Options) -> None:
    level = logging.WARNING if opts.silent else (logging.DEBUG if opts.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # Dask's own INFO lines (worker start/stop, ...) drown ours unless asked for. Imported
    # first: distributed sets its logger levels when it is imported.
    import distributed  # noqa: F401

    quiet = logging.INFO if opts.verbose else logging.ERROR
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(quiet)


class StartupError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def _cluster(opts: Options, threads: int) -> Iterator[Any]:
    """A Client on ``--scheduler``/``--scheduler-file`` or on an embedded local cluster."""
    from distributed import Client, LocalCluster

    if opts.scheduler or opts.scheduler_file:
        where = opts.scheduler or f"the scheduler of {opts.scheduler_file}"
        try:
            if opts.scheduler:
                client = Client(opts.scheduler, timeout=opts.connect_timeout)
            else:
                client = Client(scheduler_file=str(opts.scheduler_file), timeout=opts.connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise StartupError(f"cannot reach {where} within {opts.connect_timeout:g} s: {exc}",
                               EXIT_SCHEDULER) from None
        with client:
            yield client
        return
    import dask

    from saxs_pipeline.worker import nanny_environ_config

    # The nannies read the worker environment when they are created (and reuse it when
    # they restart a worker), so the setting is needed only around the cluster's start.
    with dask.config.set(nanny_environ_config()):
        cluster = LocalCluster(**embedded_cluster_kwargs(threads))
    with cluster, Client(cluster) as client:
        yield client


def embedded_cluster_kwargs(n_workers: int) -> dict[str, Any]:
    """The embedded cluster: worker processes on loopback only, no dashboard, and its
    HTTP endpoints on a free loopback port (the default 8787 is often taken)."""
    return {
        "n_workers": n_workers, "threads_per_worker": 1, "processes": True,
        "host": "127.0.0.1", "dashboard_address": None,
        "scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"},
    }


def show_progress(queue: Any, *, file: Any = None, silent: bool = False,
                  interval: float = 0.2) -> None:
    """Show a progress bar (frames done of frames found) until the walk has ended and
    every frame found is finished."""
    from tqdm import tqdm

    bar = None if silent else tqdm(total=0, unit="frame", file=file or sys.stderr,
                                   dynamic_ncols=True, mininterval=0.5)
    try:
        while True:
            p = queue.progress()
            if bar is not None:
                if p["total"] != bar.total:
                    bar.total = p["total"]
                bar.update(p["done"] - bar.n)
                if p["failed"]:
                    bar.set_postfix(failed=p["failed"], refresh=False)
            if not p["walking"] and p["done"] >= p["total"]:
                break
            time.sleep(interval)
    finally:
        if bar is not None:
            bar.close()


class LivePlot:
    """The ``-m`` plot: a window when there is a display, else ``live.png`` kept updated."""

    def __init__(self, png: Path) -> None:
        from saxs_pipeline.plot import NoDisplayError, new_figure

        self.png = png
        self.last: str | None = None
        try:
            self.fig = new_figure(interactive=True, figsize=(7, 4.5))
            self.window = True
        except NoDisplayError:
            self.fig = new_figure(figsize=(7, 4.5))
            self.window = False
            log.info("no display: the live plot is kept in %s", png)
        self.ax = self.fig.add_subplot()

    def update(self, latest: dict[str, Any] | None) -> None:
        from saxs_pipeline.plot import INTENSITY_LABEL, Q_LABEL, Band, draw_curve

        if latest is None or latest["filename"] == self.last:
            if self.window:
                self._pause()
            return
        self.last = latest["filename"]
        ax = self.ax
        ax.clear()
        for g in latest["graphs"]:
            if g["kind"] != "Radial":
                continue
            q, mean, err = g["array"]
            draw_curve(ax, q, mean, [Band(err)], floor=1.0, positive_only=True, lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel(Q_LABEL)
        ax.set_ylabel(INTENSITY_LABEL)
        ax.set_title(os.path.basename(latest["filename"]))
        if self.window:
            self.fig.canvas.draw_idle()
            self._pause()
        else:
            self.png.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.png.with_name(f".{self.png.name}.tmp")
            self.fig.savefig(tmp, format="png")
            os.replace(tmp, self.png)

    def _pause(self) -> None:
        import matplotlib.pyplot as plt

        plt.pause(0.01)


def _report(stats: dict[str, Any], elapsed: float) -> None:
    n = stats["images processed"]
    if n:
        log.info("%d frames in %.1f s: %.2f ms per frame, %.1f frames/s%s", n, elapsed,
                 1e3 * elapsed / n, n / elapsed,
                 f"; {stats['failed']} failed" if stats["failed"] else "")
    else:
        log.info("no frames processed%s", f"; {stats['failed']} failed" if stats["failed"] else "")


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:
        pass  # not the main thread (e.g. called from a test runner thread)


def run(opts: Options) -> int:
    """Run saxsdog with parsed options; returns the exit status."""
    from saxs_pipeline.io.calibration import CalibrationError, load_calibration
    from saxs_pipeline.io.masks import MaskError
    from saxs_pipeline.queue import ImageQueue

    if not opts.directory.is_dir():
        what = "does not exist" if not opts.directory.exists() else "is not a directory"
        raise StartupError(f"image directory {opts.directory} {what}")
    try:
        cal = load_calibration(opts.calibration)
    except CalibrationError as exc:
        raise StartupError(f"bad calibration: {exc}") from None
    threads = opts.threads or max(1, cal.threads)
    if opts.batch_size < 1 or threads < 1:
        raise StartupError("--batch-size and --threads must be at least 1")
    t0 = time.perf_counter()
    with _cluster(opts, threads) as client:
        try:
            queue = ImageQueue(
                client, opts.calibration, opts.directory, out_dir=opts.out_dir,
                relpath=opts.relpath, pattern=opts.pattern, watch=opts.watch, poll=opts.poll,
                resume=opts.resume, zarr_path=opts.zarr, batch_size=opts.batch_size,
                retries=opts.retries, write_svg=opts.svg, write_png=opts.png,
                with_std=opts.std or opts.svg,
            )
        except (CalibrationError, MaskError, OSError) as exc:
            raise StartupError(f"cannot start: {exc}") from None
        queue.start()
        live = LivePlot(queue.outputs_dir / "live.png") if opts.plot else None
        try:
            if not opts.no_walk:
                queue.readdir(wait=False)
                if not (opts.watch and opts.walk_thread):
                    show_progress(queue, silent=opts.silent)
            if opts.watch:
                log.info("watching %s (Ctrl-C to stop)", opts.directory)
                while True:
                    if live is not None:
                        live.update(queue.latest())
                    time.sleep(0.5)
            elif live is not None:
                live.update(queue.latest())
        except KeyboardInterrupt:
            log.info("interrupted: finishing the frames already queued")
        stats = queue.close()
        if live is not None:
            live.update(queue.latest())
    _report(stats, time.perf_counter() - t0)
    if stats["failed"]:
        log.warning("%d frame(s) failed; see %s", stats["failed"], queue.failures_log)
        return EXIT_FAILED
    return EXIT_OK


def _run_profiled(opts: Options) -> int:
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(run, opts)
    finally:
        profiler.dump_stats("prof")
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)


def _demo(argv: Sequence[str]) -> int:
    from saxs_pipeline.demo import generate_demo

    ns = _demo_parser().parse_args(argv)
    opts = _options(ns, Path(), Path())
    _setup_logging(opts)
    log.info("generating %d demo frames in %s", ns.frames, ns.root / "demo")
    demo = generate_demo(ns.root, n_frames=ns.frames)
    opts = _options(ns, demo.data_dir, demo.calibration)
    return _execute(opts)


def _execute(opts: Options) -> int:
    _sigterm_as_interrupt()
    try:
        return _run_profiled(opts) if opts.profile else run(opts)
    except StartupError as exc:
        print(f"saxsdog: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("saxsdog: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``saxsdog``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        return _demo(argv[1:])
    opts = parse_args(argv)
    _setup_logging(opts)
    return _execute(opts)


if __name__ == "__main__":
    sys.exit(main())
