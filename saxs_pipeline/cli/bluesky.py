"""``saxsdog --bluesky tcp://HOST:PORT [--bluesky-field NAME] [--tiled URL] WORK``: reduce
the runs of a Bluesky RunEngine as its documents arrive, until Ctrl-C or SIGTERM (runs in
progress are taken up by the next start). Exit status 0, or 2 for bad start-up input."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from saxs_pipeline.cli.saxsdog_options import (
    EXIT_OK,
    Options,
    StartupError,
    startup_calibration,
)

__all__ = ["run_bluesky"]

log = logging.getLogger("saxsdog")

DEFAULT_CALIBRATION = Path("cal.json")


def _default_calibration(opts: Options) -> tuple[Path | None, int]:
    """The calibration for runs whose start names none, and its Threads."""
    if not opts.calibration.exists():
        if opts.calibration == DEFAULT_CALIBRATION:
            log.info("no %s: every run must name its calibration (saxs_calibration in its "
                     "start document)", DEFAULT_CALIBRATION)
            return None, 1
        raise StartupError(f"calibration {opts.calibration} does not exist")
    return opts.calibration, max(1, startup_calibration(opts.calibration).threads)


def _check(opts: Options) -> tuple[tuple[str, str], ...]:
    """The start-up input checked; returns the geometry overrides."""
    from saxs_pipeline.bluesky.geometry import parse_overrides

    url = urlparse(opts.bluesky or "")
    if url.scheme != "tcp" or not url.hostname or not url.port:
        raise StartupError(f"--bluesky {opts.bluesky!r}: give the proxy's out address as "
                           "tcp://HOST:PORT")
    if opts.tiled:
        try:
            import tiled.client  # noqa: F401
        except ImportError:
            raise StartupError("--tiled needs Tiled's client: pip install "
                               "'saxs-pipeline[bluesky]'") from None
    if opts.directory.exists() and not opts.directory.is_dir():
        raise StartupError(f"{opts.directory} is not a directory")
    if opts.calibrations is not None and not opts.calibrations.is_dir():
        raise StartupError(f"--calibrations {opts.calibrations}: not a directory")
    try:
        return parse_overrides(opts.bluesky_override)
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def run_bluesky(opts: Options, make_link: Callable[[Options, int], Any]) -> int:
    from saxs_pipeline.bluesky.consumer import BlueskyConsumer, ConsumerOptions
    from saxs_pipeline.tiled.publisher import TiledPublisher

    overrides = _check(opts)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request to Tiled
    calibration, threads = _default_calibration(opts)
    opts.directory.mkdir(parents=True, exist_ok=True)
    link = make_link(opts, opts.threads or threads)
    publisher = TiledPublisher(opts.tiled).start() if opts.tiled else None
    consumer = None
    try:
        consumer = BlueskyConsumer(link, ConsumerOptions(
            opts.bluesky, opts.directory.absolute(), calibration, opts.bluesky_field,
            opts.bluesky_idle, write_chi=not opts.no_chi, batch_size=opts.batch_size,
            data_roots=opts.allow_data_root,
            calibrations=opts.calibrations.absolute() if opts.calibrations else None,
            overrides=overrides),
            publisher).start()
        while consumer.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        log.info("stopping: runs in progress are taken up by the next start")
    finally:
        if consumer is not None:
            consumer.stop()
        if publisher is not None:
            publisher.stop()
        link.close()
    if consumer is not None:
        for report in consumer.finished:
            log.info("%s: %d frame(s), %d failed (%s)", report["name"], report["frames"],
                     report["failed"], report["how"])
    return EXIT_OK
