"""``saxsdogserver [options] basedir``: the leash command server.

Serves one entry of the network config (``-N``, default 0; the original started one
process per entry). Binds the host named in that entry's Server URL (``localhost`` means
loopback only) unless ``--bind`` says otherwise; ``--bind '*'`` listens on every interface
as the original did.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import zmq

from saxs_pipeline.bluesky.geometry import parse_overrides
from saxs_pipeline.control.netconf import (
    NetConfError,
    bind_address,
    load_network,
    select_entry,
    split_url,
)
from saxs_pipeline.control.protocol import Limits
from saxs_pipeline.control.server import SaxsdogServer, ServerConfig
from saxs_pipeline.control.signing import LEGACY_WINDOW, V2_WINDOW
from saxs_pipeline.logutil import flush_repeats, install_rate_limit
from saxs_pipeline.pipeline.cluster import ClusterLink
from saxs_pipeline.pipeline.pathmap import PathMap

log = logging.getLogger("saxsdogserver")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="saxsdogserver",
        description="Serve leash commands (new, stat, plot, close, abort, readdir, get, "
        "listdir, fileslist) for SAXS image queues under BASEDIR.",
    )
    p.add_argument("basedir", nargs="?", default=".",
                   help="directory that all queue and listdir directories must lie in (default: .)")
    p.add_argument("-p", "--port", type=int, default=None,
                   help="port to listen on (default: the port of the config's Server URL; 0 = any free port)")
    p.add_argument("--bind", default=None, metavar="HOST",
                   help="interface to listen on (default: the host of the config's Server URL; '*' = all)")
    p.add_argument("-t", "--threads", type=int, default=2,
                   help="worker processes of the embedded Dask cluster (default: 2)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="use the Dask scheduler at ADDRESS instead of an embedded local cluster")
    p.add_argument("--path-map", action="append", default=[],
                   metavar="DRIVER_PREFIX=WORKER_PREFIX",
                   help="the workers see files under DRIVER_PREFIX at WORKER_PREFIX; repeatable")
    p.add_argument("-f", "--feeder", nargs="?", const="", default=None, metavar="URL",
                   help="subscribe to new-file events of a saxsfeeder at URL (no URL: the config's Feeder)")
    p.add_argument("-w", "--watch", action="store_true",
                   help="watch the queue directory for new frames (inotify; the default "
                   "unless -f is given)")
    p.add_argument("--no-watch", action="store_true",
                   help="do not watch: frames come only from -f and readdir")
    p.add_argument("--poll", action="store_true",
                   help="watch by polling (network file systems); implies -w")
    p.add_argument("-R", "--relpath", default=os.path.join("..", "work"),
                   help="output directory relative to each image's folder (default: ../work)")
    p.add_argument("-o", "--outdir", default=None,
                   help="write all outputs into OUTDIR (flattened names) instead of RELPATH")
    p.add_argument("--pattern", default="*.tif", help="frame file pattern (default: *.tif)")
    p.add_argument("--allow-data-root", action="append", default=[], metavar="DIR",
                   help="HDF5 external links and virtual datasets may lead into DIR besides "
                   "the queue's directory (repeatable); links elsewhere fail their frames")
    p.add_argument("--calibrations", type=Path, default=None, metavar="DIR",
                   help="calibrations Bluesky runs may name by id: saxs_calibration 'ID' is "
                   "DIR/ID.json")
    p.add_argument("--bluesky-override", default=None,
                   metavar="energy[=KEY],distance[=KEY]",
                   help="take the beam energy (keV) and the distance (mm) of Bluesky runs "
                   "from these keys of their start metadata (default: never)")
    p.add_argument("--tiled", default=None, metavar="URL",
                   help="publish the reduced Bluesky runs to this Tiled server (API key from "
                   "TILED_API_KEY)")
    p.add_argument("--config", default=None,
                   help="network config (default: $SAXSDOG_NETWORK or ~/.saxsdognetwork)")
    p.add_argument("-N", "--index", type=int, default=0,
                   help="which server entry of the network config to serve (default: 0)")
    p.add_argument("--no-legacy", action="store_true",
                   help="refuse v1 (original, SHA-512) signatures; accept v2 only")
    p.add_argument("--legacy-window", type=float, default=LEGACY_WINDOW,
                   help=f"accepted clock difference for v1 requests in s (default: {LEGACY_WINDOW:g})")
    p.add_argument("--v2-window", type=float, default=V2_WINDOW,
                   help=f"accepted clock difference for v2 requests in s (default: {V2_WINDOW:g})")
    p.add_argument("--max-request-size", type=int, default=Limits.max_request_bytes,
                   metavar="BYTES", help="largest request frame (default: 4 MiB)")
    p.add_argument("--max-message-size", type=int, default=Limits.max_total_bytes,
                   metavar="BYTES", help="largest request with attachments (default: 64 MiB)")
    p.add_argument("--close-timeout", type=float, default=20.0,
                   help="close replies after this many s at most while queued frames finish (default: 20)")
    p.add_argument("--ready-file", default=None, metavar="PATH",
                   help="write the bound endpoint to PATH once listening (for scripts)")
    p.add_argument("--log-file", default=None, help="log to this file instead of stderr")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def _setup_logging(args: argparse.Namespace) -> None:
    if not args.verbose:
        # Dask reads this when it is first imported (here and in the worker processes,
        # which inherit it): its per-worker INFO lines would drown the server's own.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(
        level=level, filename=args.log_file,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    install_rate_limit()


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The server configuration of the command line (reads the network config)."""
    entry = select_entry(load_network(args.config), args.index)
    if not entry.secret:
        raise NetConfError("the network config entry has no Secret (run saxsnetconf)")
    host, port = split_url(entry.server)
    endpoint = bind_address(args.bind if args.bind is not None else host,
                            args.port if args.port is not None else port)
    feeder = None
    if args.feeder is not None:
        feeder = args.feeder or entry.feeder
        split_url(feeder)
    outdir = None
    if args.outdir:
        outdir = Path(args.outdir).resolve()
        outdir.mkdir(parents=True, exist_ok=True)  # the original exited here, always
    if args.calibrations is not None and not args.calibrations.is_dir():
        raise ValueError(f"--calibrations {args.calibrations}: not a directory")
    limits = Limits(max_request_bytes=args.max_request_size,
                    max_total_bytes=max(args.max_message_size, args.max_request_size))
    return ServerConfig(
        basedir=Path(args.basedir), secret=entry.secret, endpoint=endpoint,
        feeder_url=feeder, watch=(args.watch or args.poll or feeder is None) and not args.no_watch,
        poll=args.poll,
        relpath=args.relpath, outdir=outdir, pattern=args.pattern, limits=limits,
        legacy_window=args.legacy_window, v2_window=args.v2_window,
        allow_legacy=not args.no_legacy, close_reply_timeout=args.close_timeout,
        name=entry.name,
        queue_options={"data_roots": tuple(os.path.abspath(d) for d in args.allow_data_root)},
        calibrations=args.calibrations.absolute() if args.calibrations else None,
        bluesky_overrides=parse_overrides(args.bluesky_override), tiled=args.tiled,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    # A lost scheduler is waited for as long as the server runs (stat says so meanwhile).
    try:
        handle = ClusterLink(args.scheduler, threads=args.threads, connect_timeout=20.0,
                             reconnect_timeout=None, path_map=PathMap.parse(args.path_map))
    except ValueError as exc:
        print(f"saxsdogserver: {exc}", file=sys.stderr)
        flush_repeats()
        return 1
    try:
        config = config_from_args(args)
        server = SaxsdogServer(config, handle)
        endpoint = server.bind()
    except (NetConfError, OSError, ValueError, zmq.ZMQError) as exc:
        print(f"saxsdogserver: {exc}", file=sys.stderr)
        flush_repeats()  # also takes the rate limit off: callers in this process log as before
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C in a terminal signals the whole process group. The cluster's worker processes
    # inherit "ignore" while they are spawned, so only the server reacts and closes them in
    # order; the server's own handler is installed once they are up.
    sigint_wanted = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # e.g. nohup: keep it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Imported here, once, in this thread: the cluster thread and a first "new" would
    # otherwise import distributed at the same time (a circular-import error).
    import saxs_pipeline.pipeline.queue  # noqa: F401

    handle.start()  # in the background: the socket answers while the cluster starts

    def install_sigint() -> None:
        nonlocal sigint_wanted
        if sigint_wanted and handle.ready:
            signal.signal(signal.SIGINT, on_signal)
            sigint_wanted = False

    print(f"saxsdogserver listening on {endpoint}", flush=True)
    if args.ready_file:
        tmp = f"{args.ready_file}.tmp"
        Path(tmp).write_text(endpoint + "\n")
        os.replace(tmp, args.ready_file)
    try:
        server.serve_forever(tick=install_sigint)
    finally:
        handle.close()
        flush_repeats()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
