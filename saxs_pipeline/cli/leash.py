"""``saxsleash COMMAND [options] [args]``: control a saxsdogserver from the command line.

Commands: close, abort, new, plot, plotdata, readdir, stat, get, listdir, fileslist,
failures (the frames that failed and why). Every
reply is printed as indented JSON. Exit codes: 0 = done, 1 = the server answered with an
error (or the input was wrong), 2 = no reply from the server.

``new`` takes the original's positional arguments: ``new CAL MASK... DIR`` sends the
calibration with the given mask files (one per Masks entry, in order) for the directory
DIR (relative to the server's base directory). Shorter forms: ``new CAL DIR`` and ``new
CAL`` read the masks named in the calibration's MaskFile entries (relative to the
calibration file) and, without DIR, keep the calibration's Directory. With two arguments
the second one is a mask when it is an existing local file, else DIR. ``new --bluesky
tcp://HOST:PORT CAL [MASK...] [DIR]`` reduces the runs of a Bluesky 0MQ proxy into DIR.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.config.masks import MaskError, encode_attachment
from saxs_pipeline.control import protocol as proto
from saxs_pipeline.control.client import LeashClient, ServerUnavailable
from saxs_pipeline.control.netconf import NetConfError, load_network, select_entry

EXIT_OK, EXIT_ERROR, EXIT_DOWN = 0, 1, 2
SLOW_COMMANDS = {"new", "close"}
SCALES = ("linear", "log", "symlog")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-S", "--server", default=None, metavar="URL",
                   help="server URL tcp://host:port (default: the network config's entry)")
    p.add_argument("-N", "--index", type=int, default=0,
                   help="entry of the network config (default: 0)")
    p.add_argument("--config", default=None,
                   help="network config (default: $SAXSDOG_NETWORK or ~/.saxsdognetwork)")
    p.add_argument("--legacy-sign", action="store_true",
                   help="sign like the original (v1, SHA-512) instead of v2 (HMAC-SHA256)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for each reply (default: 10; 300 for new and close)")
    p.add_argument("--retries", type=int, default=3,
                   help="attempts before giving up (default: 3)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saxsleash", description="Control a saxsdogserver.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    simple = {
        "close": "stop taking new frames; queued frames are finished",
        "abort": "stop the queue; queued frames are dropped",
        "readdir": "(re)process every frame of the queue's directory",
        "stat": "queue statistics",
        "get": "the current calibration and its masks",
        "fileslist": "the output files written so far",
        "failures": "the frames that failed, with their reasons",
        "plotdata": "the latest curves as JSON (one 'plot' request)",
    }
    for name, text in simple.items():
        _common(sub.add_parser(name, help=text, description=text))
    new = sub.add_parser("new", help="start a new queue",
                         description="Start a new queue: new CAL [MASK...] [DIR]")
    new.add_argument("files", nargs="+", metavar="CAL [MASK...] [DIR]")
    new.add_argument("--bluesky", default=None, metavar="URL",
                     help="reduce the runs of a Bluesky RunEngine from its 0MQ proxy's out "
                     "address tcp://HOST:PORT instead of watching DIR (each run's folder "
                     "goes into DIR); CAL is for runs whose start names no saxs_calibration")
    new.add_argument("--bluesky-field", default=None, metavar="NAME",
                     help="the runs' image field (default: the first of 2 or more dimensions)")
    new.add_argument("--bluesky-idle", type=float, default=None, metavar="SECONDS",
                     help="close a run without stop after this long without a document "
                     "(server default: 120)")
    _common(new)
    ls = sub.add_parser("listdir", help="list a directory on the server",
                        description="List a directory relative to the server's base directory.")
    ls.add_argument("path", nargs="?", default="", help="directory (default: the base directory)")
    _common(ls)
    plot = sub.add_parser("plot", help="plot the latest curves",
                          description="Plot the latest curves: a live window, or a file with --out.")
    plot.add_argument("-s", "--skip", type=int, default=0, help="skip the first N points")
    plot.add_argument("-k", "--clip", type=int, default=1, help="clip the last N points (default: 1)")
    plot.add_argument("-x", "--xscale", choices=SCALES, default="linear", help="x axis scale")
    plot.add_argument("-y", "--yscale", choices=SCALES, default="log", help="y axis scale")
    plot.add_argument("--out", default=None, metavar="FILE",
                      help="write the plot to FILE (.png, .svg, .pdf) and exit")
    plot.add_argument("--interval", type=float, default=0.5,
                      help="seconds between updates of the live window (default: 0.5)")
    plot.add_argument("--wait", type=float, default=0.0,
                      help="with --out: wait up to this many s for a first image (default: 0)")
    _common(plot)
    return p


def _client(args: argparse.Namespace) -> LeashClient:
    entry = select_entry(load_network(args.config), args.index)
    if not entry.secret:
        raise NetConfError("the network config entry has no Secret (run saxsnetconf)")
    timeout = args.timeout if args.timeout is not None else (
        300.0 if args.command in SLOW_COMMANDS else 10.0)
    return LeashClient(args.server or entry.server, entry.secret, timeout=timeout,
                       retries=args.retries, legacy=args.legacy_sign)


def _print(msg: dict[str, Any]) -> None:
    try:
        proto.validate_result(msg)
    except Exception as exc:  # show the reply anyway; the schema problem is a warning
        print(f"saxsleash: warning: reply does not fit LeashResultSchema: {exc}", file=sys.stderr)
    print(json.dumps(msg, indent=4))
    url = msg.get("data", {}).get("dashboard") if isinstance(msg.get("data"), dict) else None
    if url:  # for a person: the reply itself stays plain JSON on stdout
        print(f"saxsleash: live page {url}", file=sys.stderr)


def _exit_code(msg: dict[str, Any]) -> int:
    return EXIT_ERROR if proto.is_error(msg) else EXIT_OK


def new_request(files: list[str]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Argument and attachments of ``new CAL [MASK...] [DIR]`` (see the module doc)."""
    cal_path = Path(files[0])
    rest = files[1:]
    cal = load_calibration(cal_path)  # validates locally, as the original did
    calibration = json.loads(cal_path.read_text())
    if len(rest) == 1 and Path(rest[0]).is_file():
        masks, directory = rest, None
    elif rest:
        masks, directory = rest[:-1], rest[-1]
    else:
        masks, directory = [], None
    if masks and len(masks) != len(cal.masks):
        raise ValueError(f"{cal_path} has {len(cal.masks)} Masks entries but {len(masks)} "
                         "mask file(s) were given")
    if masks:
        attachments = [encode_attachment(m, filename=mc.mask_file)
                       for m, mc in zip(masks, cal.masks, strict=True)]
    else:
        attachments = [encode_attachment(cal.mask_path(mc), filename=mc.mask_file)
                       for mc in cal.masks]
    if "Geometry" not in calibration:
        calibration = json.loads(json.dumps(cal.raw))  # a flat (2014) file: send the nested form
    if directory is not None:
        parts = [p for p in os.path.normpath(directory).split(os.sep) if p not in ("", ".")]
        calibration["Directory"] = parts or ["."]
    return {"calibration": calibration, "data": {}}, attachments


def _listdir_argument(path: str) -> dict[str, Any]:
    parts = [p for p in path.split(os.sep) if p not in ("", ".")] if path else []
    return {"directory": parts}


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def draw(fig: Any, data: dict[str, Any], args: argparse.Namespace) -> None:
    """Draw every graph of a plot reply into ``fig`` (one axes per curve)."""
    import numpy as np

    fig.clear()
    graphs = data.get("graphs") or []
    axes = fig.subplots(max(1, len(graphs)), 1, squeeze=False)[:, 0]
    for ax, graph in zip(axes, graphs, strict=False):
        arr = graph.get("array") or [[], []]
        x = np.asarray(arr[0], dtype=float)
        y = np.asarray(arr[1], dtype=float)
        stop = len(x) - args.clip if args.clip > 0 else len(x)
        part = slice(max(args.skip, 0), max(stop, 0))
        ax.plot(x[part], y[part], lw=1)
        if len(arr) > 2:
            err = np.asarray(arr[2], dtype=float)[part]
            ax.fill_between(x[part], y[part] - err, y[part] + err, alpha=0.3, lw=0)
        ax.set_xscale(args.xscale)
        ax.set_yscale(args.yscale)
        labels = graph.get("columnLabels") or []
        if len(labels) > 1:
            ax.set_xlabel(labels[0])
            ax.set_ylabel(labels[1])
        name = os.path.basename(str(data.get("filename", "")))
        ax.set_title(f"{graph.get('kind', '')} {name}")
    fig.tight_layout()


def _plot(client: LeashClient, args: argparse.Namespace) -> int:
    if args.out is None and not _has_display():
        args.out = "saxsleash-plot.png"
        print(f"saxsleash: no display; writing {args.out}", file=sys.stderr)
    if args.out is not None:
        from matplotlib.figure import Figure

        end = time.monotonic() + args.wait
        while True:
            msg = client.request("plot")
            if msg.get("result") == "plot" or proto.is_error(msg) or time.monotonic() >= end:
                break
            time.sleep(args.interval)
        if msg.get("result") != "plot":
            _print(msg)
            print("saxsleash: nothing to plot yet", file=sys.stderr)
            return EXIT_ERROR
        fig = Figure(figsize=(8, 3 + 2.5 * max(0, len(msg["data"]["graphs"]) - 1)))
        draw(fig, msg["data"], args)
        fig.savefig(args.out)
        print(json.dumps({"result": "plot", "data": {"filename": msg["data"]["filename"],
                                                      "out": str(Path(args.out).resolve())}},
                         indent=4))
        return EXIT_OK
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8, 6))
    plt.ion()
    shown = None
    while plt.fignum_exists(fig.number):
        msg = client.request("plot")
        if proto.is_error(msg):
            _print(msg)
            return EXIT_ERROR
        if msg.get("result") == "plot" and msg["data"].get("filename") != shown:
            shown = msg["data"].get("filename")
            draw(fig, msg["data"], args)
            fig.canvas.draw_idle()
        plt.pause(args.interval)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="saxsleash: %(message)s")
    try:
        client = _client(args)
    except (NetConfError, ValueError) as exc:
        print(f"saxsleash: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        with client:
            if args.command == "plot":
                return _plot(client, args)
            argument: dict[str, Any] = {}
            attachments: list[dict[str, str]] = []
            if args.command == "new":
                try:
                    argument, attachments = new_request(args.files)
                    if args.bluesky is not None:
                        argument["bluesky"] = {k: v for k, v in (
                            ("address", args.bluesky), ("field", args.bluesky_field),
                            ("idle", args.bluesky_idle)) if v is not None}
                except (CalibrationError, MaskError, ValueError, OSError) as exc:
                    print(f"saxsleash: {exc}", file=sys.stderr)
                    return EXIT_ERROR
            elif args.command == "listdir":
                argument = _listdir_argument(args.path)
            command = "plot" if args.command == "plotdata" else args.command
            msg = client.request(command, argument, attachments)
            _print(msg)
            return _exit_code(msg)
    except ServerUnavailable as exc:
        print(f"saxsleash: {exc}", file=sys.stderr)
        return EXIT_DOWN
    except KeyboardInterrupt:
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. piped into head: not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
