"""``saxs-average``: average the frames of a sample from a zarr curve stack, outlier
frames rejected, optionally minus an averaged buffer; writes .chi and/or NXcanSAS."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from saxs_pipeline.cli.export import add_selection
from saxs_pipeline.curves.nxcansas import Q_UNITS
from saxs_pipeline.stack import reduction

__all__ = ["build_parser", "main"]

EPILOG = """\
Frames are compared pairwise with the CorMap test (Franke et al. 2015, as ATSAS and RAW)
or chi-square; p-values are adjusted for the number of pairs (Bonferroni by default) and
a pair with adjusted p < alpha (0.01) is different. The frame that differs from most
others is rejected until no different pair is left. The report (what was subtracted from
what, kept and rejected frames by name, reasons, p-values) is printed as JSON; the .chi
file names the frames averaged on its I0/I1/I2 line.

Frames are chosen in acquisition order, the order open_dataset shows (source file, numbers
in names compared as numbers, then frame index), never by stack row; --names takes shell
patterns on the frame names (source files, FILE#N in multi-frame files). Without a
sample selection every frame is averaged. A buffer is subtracted when a buffer selection
or --buffer-stack is given; --buffer-stack alone means all of its frames.

examples:
  saxs-average work/run.zarr --names 'lyso_*' -o lyso.chi
  saxs-average work/run.zarr --frames 0-19 --buffer-stack work/buffer.zarr -o sub.chi
  saxs-average work/run.zarr --names 'lyso_*' --buffer-names 'buf_*' -o sub.chi --nxcansas sub.h5

exit status: 0 on success, 1 on errors, 2 on usage errors.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saxs-average", description=__doc__.split(": ", 1)[1].replace("\n", " "),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stack", help="zarr curve stack of the sample frames")
    parser.add_argument("-k", "--key", default="R0", help="curve key (default: R0)")
    add_selection(parser, what="sample frames")
    add_selection(parser, "buffer-", "buffer frames")
    parser.add_argument("--buffer-stack", help="stack of the buffer frames (default: the same; "
                        "without a buffer selection, all of its frames)")
    parser.add_argument("--test", choices=("cormap", "chi2"), default="cormap",
                        help="pairwise similarity test (default: cormap)")
    parser.add_argument("--alpha", type=float, default=0.01,
                        help="threshold on the adjusted p-value (default: 0.01)")
    parser.add_argument("--correction", choices=("bonferroni", "holm", "none"),
                        default="bonferroni", help="multiple-testing correction (default: bonferroni)")
    parser.add_argument("-o", "--out", help=".chi file to write")
    parser.add_argument("--nxcansas", metavar="FILE", help="NXcanSAS file to write (.h5)")
    parser.add_argument("--q-units", choices=Q_UNITS, default="1/nm",
                        help="units of Q in the NXcanSAS file (default: 1/nm)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``saxs-average``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.out and not args.nxcansas:
        parser.error("give -o FILE.chi and/or --nxcansas FILE.h5")
    logging.basicConfig(level=logging.WARNING, format="saxs-average: %(message)s")
    wants_buffer = args.buffer_frames is not None or args.buffer_names
    buffer = reduction.Selection(args.buffer_frames, args.buffer_names) if wants_buffer else None
    try:
        result = reduction.reduce_stack(
            args.stack, args.key, reduction.Selection(args.frames, args.names),
            buffer=buffer, buffer_stack=args.buffer_stack, test=args.test, alpha=args.alpha,
            correction=args.correction)
        if args.out:
            reduction.write_chi(result, args.out)
        if args.nxcansas:
            reduction.write_nxcansas(result, args.nxcansas, q_units=args.q_units)
    except (ValueError, OSError) as exc:
        print(f"saxs-average: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.notes, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
