"""``saxsnetconf``: create or check the network config ``~/.saxsdognetwork``.

Without options it creates the file when it is missing (one server entry with a new random
secret) and otherwise checks the existing one. It never opens an editor unless ``--edit``
is given. Copy the file (or its Secret) to every machine that runs saxsleash for that
server; keep it private (mode 0600).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

from saxs_pipeline.control.netconf import (
    DEFAULT_FEEDER,
    DEFAULT_NAME,
    DEFAULT_SERVER,
    NetConfError,
    NetEntry,
    config_path,
    load_network,
    new_secret,
    permission_problem,
    split_url,
    write_network,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saxsnetconf", description=__doc__.split("\n\n")[1])
    p.add_argument("--config", default=None,
                   help="file to write (default: $SAXSDOG_NETWORK or ~/.saxsdognetwork)")
    p.add_argument("-n", "--new", "--force", dest="force", action="store_true",
                   help="overwrite an existing file")
    p.add_argument("--add", action="store_true", help="append an entry to an existing file")
    p.add_argument("--server", default=DEFAULT_SERVER, metavar="URL",
                   help=f"server URL of the entry (default: {DEFAULT_SERVER})")
    p.add_argument("--feeder", default=DEFAULT_FEEDER, metavar="URL",
                   help=f"feeder URL of the entry (default: {DEFAULT_FEEDER})")
    p.add_argument("--name", default=None, help=f"name of the entry (default: {DEFAULT_NAME}, "
                   "or QueueN when appending)")
    p.add_argument("--secret", default=None,
                   help="use this secret (to share one with another machine) instead of a new one")
    p.add_argument("--secret-bytes", type=int, default=24,
                   help="random bytes in a new secret (minimum 16; default: 24)")
    p.add_argument("--print", dest="print_", action="store_true",
                   help="print the resulting file (secrets included) to stdout")
    p.add_argument("--fix-permissions", action="store_true", help="chmod 600 an existing file")
    p.add_argument("--edit", action="store_true", help="open the file in $VISUAL/$EDITOR afterwards")
    return p


def _edit(path: str) -> int:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or (
        "notepad" if sys.platform == "win32" else "vi")
    return subprocess.call([*shlex.split(editor), path])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = config_path(args.config)
    exists = path.exists()
    if exists and args.fix_permissions:
        os.chmod(path, 0o600)
    for flag, url in (("--server", args.server), ("--feeder", args.feeder)):
        try:
            split_url(url)
        except ValueError as exc:
            print(f"saxsnetconf: {flag}: {exc} (expected e.g. tcp://beamline-pc:9723)",
                  file=sys.stderr)
            return 2
    try:
        if exists and not (args.force or args.add):
            entries = load_network(path, warn=False)  # validates; warns on loose permissions
            given = [f for f in ("--server", "--feeder", "--name", "--secret")
                     if getattr(args, f[2:]) not in (None, DEFAULT_SERVER, DEFAULT_FEEDER)]
            if given:
                print(f"saxsnetconf: {path} exists; use --force to overwrite it or --add to "
                      f"append an entry (ignoring {', '.join(given)})", file=sys.stderr)
                return 1
            print(f"{path}: {len(entries)} server(s)", file=sys.stderr)
            for i, e in enumerate(entries):
                print(f"  [{i}] {e.name}: server {e.server}, feeder {e.feeder}, "
                      f"secret {'set' if e.secret else 'MISSING'}", file=sys.stderr)
        else:
            entries = load_network(path, warn=False) if exists and args.add else []
            if args.secret is not None and len(args.secret) < 16:
                print("saxsnetconf: warning: a secret shorter than 16 characters is easy to guess",
                      file=sys.stderr)
            name = args.name or (f"Queue{len(entries) + 1}" if entries else DEFAULT_NAME)
            entries.append(NetEntry(server=args.server, feeder=args.feeder, name=name,
                                    secret=args.secret or new_secret(args.secret_bytes)))
            write_network(path, entries)
            print(f"saxsnetconf: wrote {path} (mode 0600, {len(entries)} server(s))",
                  file=sys.stderr)
    except NetConfError as exc:
        print(f"saxsnetconf: {exc}", file=sys.stderr)
        return 1
    problem = permission_problem(path)
    if problem:
        print(f"saxsnetconf: warning: {problem}", file=sys.stderr)
    if args.edit:
        _edit(str(path))
        try:
            entries = load_network(path, warn=False)
        except NetConfError as exc:
            print(f"saxsnetconf: {exc}", file=sys.stderr)
            return 1
    if args.print_:
        print(json.dumps([e.to_json() for e in entries], indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
