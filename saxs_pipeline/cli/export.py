"""``saxs-export``: write frames of a zarr curve stack as an NXcanSAS file."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from saxs_pipeline.curves.nxcansas import Q_UNITS, export_stack

__all__ = ["add_selection", "build_parser", "main"]

EPILOG = """\
examples:
  saxs-export work/run.zarr -o run.h5                       every frame, one 2-D I(frame, Q)
  saxs-export work/run.zarr -o run.h5 --layout entries      one SASentry per frame (SasView)
  saxs-export work/run.zarr -o s.h5 --glob 'sample_*' --q-units 1/angstrom

SasView (sasdata) reads a 2-D I(frame, Q) as copies of its last frame: use --layout
entries for files meant for SasView. Exit status: 0 on success, 1 on errors, 2 on usage
errors.
"""


def add_selection(parser: argparse.ArgumentParser, prefix: str = "", what: str = "frames") -> None:
    """The frame-selection options (a union; none selects every frame)."""
    dest = prefix.replace("-", "_")
    parser.add_argument(f"--{prefix}frames", dest=f"{dest}frames", metavar="RANGES",
                        help=f"{what} by stack index: 0-9,12,-1 (ranges inclusive)")
    parser.add_argument(f"--{prefix}name", dest=f"{dest}names", metavar="FILE", action="append",
                        default=[], help=f"{what} by file name (repeatable)")
    parser.add_argument(f"--{prefix}glob", dest=f"{dest}globs", metavar="PATTERN",
                        action="append", default=[],
                        help=f"{what} whose file name matches a shell pattern (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saxs-export", description=__doc__.split("\n")[0].split(": ", 1)[1],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stack", help="zarr curve stack (a run's .zarr directory)")
    parser.add_argument("-o", "--out", required=True, help="NXcanSAS file to write (.h5)")
    parser.add_argument("-k", "--key", default="R0", help="curve key (default: R0)")
    add_selection(parser)
    parser.add_argument("--q-units", choices=Q_UNITS, default="1/nm",
                        help="units of Q in the file (default: 1/nm)")
    parser.add_argument("--layout", choices=("stack", "entries"), default="stack",
                        help="stack: one SASdata with I(frame, Q); entries: one SASentry per "
                        "frame (default: stack)")
    parser.add_argument("--title", help="entry title (default: the stack's name)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``saxs-export``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="saxs-export: %(message)s")
    try:
        out = export_stack(args.stack, args.out, key=args.key, indices=args.frames,
                           names=args.names, globs=args.globs, q_units=args.q_units,
                           layout=args.layout, title=args.title)
    except (ValueError, OSError) as exc:
        print(f"saxs-export: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
