"""``saxsfeeder [options] DIR``: announce complete frames to saxsdogserver (``-f``).

Watches DIR (inotify close-after-write and renames; ``--poll`` for network file systems)
and publishes ``{"command": "new file", "argument": path}`` once per completely written
file on a PUB socket. ``--replay`` is the original's simulator: it publishes the files
already in DIR, one every ``--interval`` seconds, cycling through them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import zmq

from saxs_pipeline.control.feeder import FeederPublisher, FileWatcher, replay
from saxs_pipeline.control.netconf import (
    DEFAULT_FEEDER,
    NetConfError,
    bind_address,
    config_path,
    load_network,
    select_entry,
    split_url,
)

log = logging.getLogger("saxsfeeder")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saxsfeeder", description=__doc__.split("\n\n")[1])
    p.add_argument("directory", nargs="?", default=None, metavar="DIR", help="directory to watch")
    p.add_argument("-d", "--dir", dest="dir_option", default=None, metavar="DIR",
                   help="directory to watch (the original's spelling)")
    p.add_argument("-p", "--port", type=int, default=None,
                   help="port to publish on (default: the config's Feeder URL port; 0 = any free port)")
    p.add_argument("--bind", default=None, metavar="HOST",
                   help="interface to publish on (default: the config's Feeder host, else 127.0.0.1; '*' = all)")
    p.add_argument("--config", default=None,
                   help="network config (default: $SAXSDOG_NETWORK or ~/.saxsdognetwork; optional)")
    p.add_argument("-N", "--index", type=int, default=0, help="entry of the network config")
    p.add_argument("--pattern", default="*.tif", help="file pattern (default: *.tif)")
    p.add_argument("--poll", action="store_true",
                   help="poll instead of inotify (NFS/SMB): publish when size and mtime are stable")
    p.add_argument("--settle", type=float, default=1.0,
                   help="with --poll: a file must be unchanged this many s (default: 1)")
    p.add_argument("--replay", action="store_true",
                   help="simulator: publish the existing files at --interval instead of watching")
    p.add_argument("--interval", type=float, default=None,
                   help="replay: s between files (default: 7); poll: s between scans (default: 0.5)")
    p.add_argument("--cycles", type=int, default=0,
                   help="replay: passes over the files (default: 0 = forever)")
    p.add_argument("--ready-file", default=None, metavar="PATH",
                   help="write the bound endpoint to PATH once publishing (for scripts)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every published file")
    return p


def _endpoint(args: argparse.Namespace) -> str:
    url = DEFAULT_FEEDER
    if args.config or config_path().exists():
        url = select_entry(load_network(args.config), args.index).feeder
    host, port = split_url(url)
    return bind_address(args.bind if args.bind is not None else host,
                        args.port if args.port is not None else port)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s saxsfeeder %(levelname)s: %(message)s")
    directory = args.dir_option or args.directory
    if not directory or not os.path.isdir(directory):
        print(f"saxsfeeder: {directory or 'DIR'}: not a directory", file=sys.stderr)
        return 1
    try:
        publisher = FeederPublisher(_endpoint(args))
    except (NetConfError, ValueError, zmq.ZMQError) as exc:
        print(f"saxsfeeder: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        publisher.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker: threading.Thread | None = None
    watcher: FileWatcher | None = None
    if args.replay:
        worker = threading.Thread(
            target=replay, name="replay", daemon=True,
            args=(publisher, directory),
            kwargs=dict(pattern=args.pattern, interval=7.0 if args.interval is None else args.interval,
                        cycles=args.cycles, stop=stop))
        worker.start()
    else:
        watcher = FileWatcher(directory, publisher.publish, pattern=args.pattern, poll=args.poll,
                              interval=0.5 if args.interval is None else args.interval,
                              settle=args.settle)
        watcher.start()
    print(f"saxsfeeder publishing on {publisher.endpoint}", flush=True)
    if args.ready_file:
        tmp = f"{args.ready_file}.tmp"
        Path(tmp).write_text(publisher.endpoint + "\n")
        os.replace(tmp, args.ready_file)
    if worker is not None:
        # A finite replay ends the feeder; the publisher drains what replay queued first.
        threading.Thread(target=lambda: (worker.join(), publisher.stop()), daemon=True).start()
    try:
        publisher.run(stop)
    finally:
        stop.set()
        if watcher is not None:
            watcher.stop()
        publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
