"""``saxsdog``: integrate every frame of a directory (and, with ``-w``, every new one).

    saxsdog [options] DIRECTORY | FILE...
    saxsdog demo [DIR] [-n N] [options]     generate the demo beamtime in DIR and reduce it
    saxsdog cache list|clear                the operator cache
    saxsdog average | calibrate-absolute | export ...
                                            saxs-average, saxs-absolute, saxs-export

The manual's options (``-c -t -m -w -r -o -R -i -s -p -P -S -n -D``) plus ``--scheduler``
(default: an embedded local cluster of ``-t`` worker processes), ``--zarr``, ``--pattern``,
``--poll`` and ``--no-chi``. Exit status: 0 done, 1 some frames failed (see ``failures``
in the ledger and ``failures.log``), 2 bad start-up input (calibration, directory,
options, a curve stack another run writes), 3 scheduler unreachable, 4 the cluster was
lost and did not come back (rerun with ``--resume``), 5 the output disk is full (free
space, then rerun with ``--resume``), 6 the stream receiver stopped by itself
(``--stream``; the log says why), 130 interrupted (``--resume`` completes the run).
"""

from __future__ import annotations

import contextlib
import cProfile
import logging
import pstats
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from saxs_pipeline.cli.saxsdog_options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_NO_SPACE,
    EXIT_OK,
    EXIT_SCHEDULER,
    EXIT_STREAM,
    Options,
    StartupError,
    build_parser,
    demo_parser,
    options_from,
    parse_args,
    startup_calibration,
)

__all__ = ["Options", "build_parser", "main", "parse_args", "run"]

log = logging.getLogger("saxsdog")


def _setup_logging(opts: Options) -> None:
    from saxs_pipeline.logutil import install_rate_limit

    level = logging.WARNING if opts.silent else (logging.DEBUG if opts.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    install_rate_limit()
    # Dask's own INFO lines (worker start/stop, ...) drown ours unless asked for. Imported
    # first: distributed sets its logger levels when it is imported.
    import distributed  # noqa: F401

    quiet = logging.INFO if opts.verbose else logging.ERROR
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(quiet)


def _new_link(opts: Options, threads: int) -> Any:
    """The cluster link, not started yet: ``--scheduler``/``--scheduler-file`` or an
    embedded local cluster of ``threads`` worker processes."""
    from saxs_pipeline.pipeline.cluster import ClusterLink
    from saxs_pipeline.pipeline.pathmap import PathMap, PathMapError

    try:
        path_map = PathMap.parse(opts.path_map)
    except PathMapError as exc:
        raise StartupError(str(exc)) from None
    return ClusterLink(opts.scheduler, scheduler_file=str(opts.scheduler_file) if
                       opts.scheduler_file else None, threads=threads,
                       connect_timeout=opts.connect_timeout,
                       reconnect_timeout=opts.reconnect_timeout, path_map=path_map)


def _start_link(opts: Options, link: Any) -> None:
    """Connect, or start the embedded cluster, whose worker processes ignore Ctrl-C (the
    terminal signals the whole process group; the driver alone stops them, in order,
    without tracebacks)."""
    from saxs_pipeline.pipeline.cluster import ClusterGoneError

    external = bool(opts.scheduler or opts.scheduler_file)
    previous = signal.getsignal(signal.SIGINT)
    if not external:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the spawned workers
    try:
        link.start(wait=True)  # an embedded cluster gets our worker settings there
    except ClusterGoneError as exc:
        where = opts.scheduler or f"the scheduler of {opts.scheduler_file}"
        if external:
            raise StartupError(f"cannot reach {where} within {opts.connect_timeout:g} s: "
                               f"{exc.__cause__ or exc}", EXIT_SCHEDULER) from None
        raise StartupError(f"the local cluster did not start: {exc}", EXIT_SCHEDULER) from None
    finally:
        if not external:
            signal.signal(signal.SIGINT, previous)


def _linked(opts: Options, threads: int) -> Any:
    """A started cluster link (``--bluesky``: no queue to prepare before it)."""
    link = _new_link(opts, threads)
    try:
        _start_link(opts, link)
    except BaseException:
        link.close()
        raise
    return link


def _report(queue: Any, stats: dict[str, Any], elapsed: float, startup: float) -> None:
    n, failed = stats["images processed"], stats["failed"]
    tail = f"; {failed} failed" if failed else ""
    if stats.get("skipped"):
        tail += f"; {stats['skipped']} already done"
    if n:
        # the rate over busy time (first frame taken to last done), not over the run's
        # waits: pipeline/busyclock.py
        log.info("%d frames in %.1f s: %s (start-up %.1f s not included)%s", n, elapsed,
                 queue.status.clock.describe(), startup, tail)
    else:
        log.info("no frames processed%s", tail)
    from saxs_pipeline.pipeline.workers import workers_summary
    if (line := workers_summary(stats)) is not None:
        log.info("%s", line)


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:
        pass  # not the main thread (e.g. called from a test runner thread)


@contextlib.contextmanager
def _starting() -> Iterator[None]:
    """Start-up failures as StartupError: the reason on the console, exit status 2."""
    from saxs_pipeline.config.calibschema import CalibrationError
    from saxs_pipeline.config.masks import MaskError
    from saxs_pipeline.frames.source import ImageError
    from saxs_pipeline.pipeline.lock import StackLockedError

    try:
        yield
    except (CalibrationError, MaskError, StackLockedError, ImageError) as exc:
        raise StartupError(f"cannot start: {exc}") from None
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise StartupError(f"cannot start: {exc.strerror or exc}{where}") from None


def _make_queue(opts: Options, link: Any) -> Any:
    """The run's queue, prepared (calibration, masks, outputs folder, the dataset of
    plain HDF5 files, the stack's lock: :meth:`ImageQueue.prepare`) before any cluster
    starts, so these mistakes are told at once."""
    from saxs_pipeline.pipeline.queue import ImageQueue

    with _starting():
        queue = ImageQueue(
            link, opts.calibration, opts.directory, out_dir=opts.out_dir,
            relpath=opts.relpath, pattern=opts.pattern, watch=opts.watch, poll=opts.poll,
            resume=opts.resume, zarr_path=opts.zarr, batch_size=opts.batch_size,
            retries=opts.retries, write_svg=opts.svg, write_png=opts.png,
            write_chi=not opts.no_chi, with_std=opts.std or opts.svg, dataset=opts.h5_path,
            stream=opts.stream, stream_series=None if opts.watch else 1,
            stream_idle=opts.stream_idle, stream_max_images=opts.stream_max_images,
            nxcansas=opts.nxcansas, data_roots=opts.allow_data_root,
            # a stream's live file list stays in its outputs folder too (not ../results)
            filelist_base=opts.directory if opts.stream else None,
        )
        queue.prepare()
    return queue


def _wait(opts: Options, queue: Any, link: Any) -> bool:
    """Feed the queue and wait for it; False when interrupted (batch mode)."""
    from saxs_pipeline.cli.progress import LivePlot, WatchStatus, show_progress

    # the cluster gone for good, or the run stopped by itself (a full disk, a dead stream)
    ended = lambda: (link.status.state == "gone" or queue.stopped is not None  # noqa: E731
                     or queue.stream_failure is not None)
    live = LivePlot(queue.layout.run_file("live.png")) if opts.plot else None
    try:
        walk = not (opts.no_walk or opts.stream or opts.files)
        if opts.files:
            queue.submit_paths(opts.files)
        elif walk:
            queue.readdir(wait=False)
        if not opts.watch or not opts.walk_thread:
            if opts.files or walk or (opts.stream and not opts.watch):
                show_progress(queue, silent=opts.silent, stop=ended)
        if opts.watch:
            log.info("watching %s (Ctrl-C to stop)", opts.directory)
            status = None if opts.silent else WatchStatus(queue)
            try:
                while not ended():
                    if live is not None:
                        live.update(queue.latest())
                    if status is not None:
                        status.update()
                    time.sleep(0.5)
            finally:
                if status is not None:
                    status.end()
        if live is not None:
            live.update(queue.latest())
    except KeyboardInterrupt:
        if not opts.watch:
            log.warning("interrupted: stopping (frames not integrated stay pending in the "
                        "ledger; --resume completes the run)")
            return False
    return True


def run(opts: Options) -> int:
    """Run saxsdog with parsed options; returns the exit status."""
    if opts.bluesky:
        from saxs_pipeline.cli.bluesky import run_bluesky

        return run_bluesky(opts, _linked)
    if opts.tiled:
        raise StartupError("--tiled publishes the runs of --bluesky")
    if opts.stream and not opts.directory.exists():
        # a stream's DIRECTORY is only its outputs folder (saxsdog_options._relpath)
        try:
            opts.directory.mkdir(parents=True)
        except OSError as exc:
            raise StartupError(f"cannot create the outputs folder {opts.directory}: "
                               f"{exc.strerror or exc}") from None
    if not opts.directory.is_dir():
        what = "does not exist" if not opts.directory.exists() else "is not a directory"
        raise StartupError(f"image directory {opts.directory} {what}")
    threads = opts.threads or max(1, startup_calibration(opts.calibration).threads)
    if opts.batch_size < 1 or threads < 1:
        raise StartupError("--batch-size and --threads must be at least 1")
    t0 = time.perf_counter()
    link = _new_link(opts, threads)
    try:
        queue = _make_queue(opts, link)
        try:
            _start_link(opts, link)
        except BaseException:
            queue.close()  # prepared, never started: releases the stack's lock
            raise
        with _starting():
            queue.start()
        url = queue.live.url() if queue.live is not None else None
        if url:
            log.info("live SAXS page: %s", url)
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        finished = _wait(opts, queue, link)
        lost = link.status.state == "gone"
        ended = lost or queue.stopped is not None
        stats = queue.close(timeout=None if finished and not ended else 5.0)
        elapsed = time.perf_counter() - t1
        if opts.linger > 0 and finished and not ended:
            _linger(queue, opts.linger)
        lost = lost or link.status.state == "gone"
        cluster = link.status.describe()
    finally:
        link.close()
    _report(queue, stats, elapsed, startup)
    if lost:
        print(f"saxsdog: the Dask cluster was lost ({cluster}); the run is incomplete (what "
              f"was done is committed in {queue.zarr_path}): rerun with --resume",
              file=sys.stderr)
        return EXIT_LOST
    if queue.stopped is not None:
        print(f"saxsdog: {queue.stopped}: the run stopped (what was done is committed in "
              f"{queue.zarr_path}) — free space, then run `{_resume_command(opts)}`",
              file=sys.stderr)
        return EXIT_NO_SPACE
    if queue.stream_failure is not None:
        print(f"saxsdog: {queue.stream_failure}; no more frames were received from "
              f"{opts.stream} (what came is committed in {queue.zarr_path})", file=sys.stderr)
        return EXIT_STREAM
    if not finished:
        return EXIT_INTERRUPTED
    if stats["failed"]:
        first = (queue.failures() or [{}])[0]
        reason = f" (first: {first['file']}: {first['error']})" if first else ""
        log.warning("%d frame(s) failed%s; see %s", stats["failed"], reason, queue.failures_log)
        return EXIT_FAILED
    return EXIT_OK


def _resume_command(opts: Options) -> str:
    """The command line that completes this run."""
    if not opts.argv:  # saxsdog demo
        return "saxsdog --resume ..."
    resume = [] if {"-r", "--resume"} & set(opts.argv) else ["--resume"]
    return shlex.join(["saxsdog", *resume, *opts.argv])


def _linger(queue: Any, seconds: float) -> None:
    url = queue.live.url() if queue.live is not None else None
    log.info("keeping the cluster up for %g s (Ctrl-C ends it)%s", seconds,
             f": live page {url}" if url else "")
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass


def _run_profiled(opts: Options) -> int:
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(run, opts)
    finally:
        profiler.dump_stats("prof")
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)


def _demo(argv: Sequence[str]) -> int:
    from saxs_pipeline.demo.beamtime import generate_demo

    ns = demo_parser().parse_args(argv)
    opts = options_from(ns, Path(), Path())
    _setup_logging(opts)
    if ns.eiger:
        from saxs_pipeline.demo.eiger import generate_eiger_demo

        log.info("generating %d EIGER demo frames in %s", ns.frames, ns.root / "eiger")
        eiger = generate_eiger_demo(ns.root, n_frames_per_file=max(1, ns.frames // 2))
        ns.pattern = "*_master.h5"
        return _execute(options_from(ns, eiger.root, eiger.calibration))
    log.info("generating %d demo frames in %s", ns.frames, ns.root / "demo")
    demo = generate_demo(ns.root, n_frames=ns.frames)
    opts = options_from(ns, demo.data_dir, demo.calibration)
    return _execute(opts)


def _cache(argv: Sequence[str]) -> int:
    from saxs_pipeline.ops.cache import cache_main

    return cache_main(argv)


# Subcommands that are tools of their own (also as saxs-average, saxs-absolute, saxs-export).
_TOOLS = {"average": "saxs_pipeline.cli.average", "calibrate-absolute": "saxs_pipeline.cli.absolute",
          "export": "saxs_pipeline.cli.export", "calibrate": "saxs_pipeline.cli.calibrate",
          "mask": "saxs_pipeline.cli.mask", "check": "saxs_pipeline.cli.check"}


def _execute(opts: Options) -> int:
    from saxs_pipeline.logutil import flush_repeats

    _sigterm_as_interrupt()
    try:
        return _run_profiled(opts) if opts.profile else run(opts)
    except StartupError as exc:
        print(f"saxsdog: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("saxsdog: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        flush_repeats()


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``saxsdog``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        return _demo(argv[1:])
    if argv[:1] == ["cache"]:
        return _cache(argv[1:])
    if argv[:1] and argv[0] in _TOOLS:
        module = __import__(_TOOLS[argv[0]], fromlist=["main"])
        return int(module.main(argv[1:]) or 0)
    try:
        opts = parse_args(argv)
    except StartupError as exc:
        print(f"saxsdog: error: {exc}", file=sys.stderr)
        return exc.code
    _setup_logging(opts)
    return _execute(opts)


if __name__ == "__main__":
    sys.exit(main())
