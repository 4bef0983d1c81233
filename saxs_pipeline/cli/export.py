"""``saxs-export``: write frames of a zarr curve stack as an NXcanSAS file."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from saxs_pipeline.curves.nxcansas import Q_UNITS, export_stack

__all__ = ["add_selection", "build_parser", "main"]

EPILOG = """\
Frames are chosen in acquisition order, the order open_dataset shows (source file, numbers
in names compared as numbers, then frame index), never by stack row (rows are stored as
frames complete): --frames 10-20 is the 11th to the 21st frame taken. A frame's name is
its source file relative to the run's directory (FILE#N for frame N of a multi-frame
file); --names takes shell patterns on those names. --frames and --names add up.

examples:
  saxs-export work/run.zarr -o run.h5                       every frame, one SASentry each
  saxs-export work/run.zarr -o s.h5 --frames 10-20          the 11th to the 21st frame
  saxs-export work/run.zarr -o s.h5 --names 'sample_*' --q-units 1/angstrom
  saxs-export work/run.zarr -o run.h5 --layout stack        one 2-D I(frame, Q)

SasView (sasdata) reads a 2-D I(frame, Q) as copies of its last frame: the stack layout
is for other readers. Exit status: 0 on success, 1 on errors, 2 on usage errors.
"""


def add_selection(parser: argparse.ArgumentParser, prefix: str = "", what: str = "frames") -> None:
    """The frame-selection options (a union; none selects every frame)."""
    dest = prefix.replace("-", "_")
    parser.add_argument(f"--{prefix}frames", dest=f"{dest}frames", metavar="RANGES",
                        help=f"{what} by position in acquisition order: 0-9,12,-1 (ranges "
                        "inclusive, negative from the end)")
    parser.add_argument(f"--{prefix}names", f"--{prefix}name", f"--{prefix}glob",
                        dest=f"{dest}names", metavar="PATTERN", action="append", default=[],
                        help=f"{what} whose name matches a shell pattern, e.g. 'sample_*' "
                        "(repeatable; --name and --glob are the same option)")


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
    parser.add_argument("--layout", choices=("entries", "stack"), default="entries",
                        help="entries: one SASentry per frame, what SasView reads (the default); "
                        "stack: one SASdata with I(frame, Q)")
    parser.add_argument("--title", help="entry title (default: the stack's name)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``saxs-export``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="saxs-export: %(message)s")
    try:
        out = export_stack(args.stack, args.out, key=args.key, indices=args.frames,
                           patterns=args.names, q_units=args.q_units,
                           layout=args.layout, title=args.title)
    except (ValueError, OSError) as exc:
        print(f"saxs-export: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
