"""``saxsdog mask``: a detector mask made from the frames themselves -- module gaps,
invalid, dead and hot pixels, the beam stop with its arm, shadows -- with a picture of
what was masked and why."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from saxs_pipeline.cli.calibframes import UsageError, load_frames, write_mask

__all__ = ["build_parser", "main"]

EPILOG = """\
Dead pixels are zero in every frame given, hot ones far above the azimuthal median at
their angle (over the frames' sum) and above their neighbours; the beam stop is the
connected shadow around the beam centre, far below its ring's level. The radial
coordinate comes from --calibration (recommended) or from the beam centre found on the
frames. Written as FIT2D .msk, .npy or .tif by the extension; the counts per cause are
printed as JSON.

examples:
  saxsdog mask buf_00000.tif -c cal.json -o mask.msk --plot mask.png

exit status: 0 on success, 2 on errors.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saxsdog mask", description=__doc__.split(": ", 1)[1].replace("\n", " "),
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("frames", nargs="+", help="frame files (any format)")
    p.add_argument("-c", "--calibration", help="calibration JSON whose geometry gives each pixel's angle")
    p.add_argument("--h5-path", help="dataset of a plain HDF5 file")
    p.add_argument("-o", "--out", required=True, help="mask file to write (.msk, .npy, .tif)")
    p.add_argument("--plot", help="picture to write (PNG)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from saxs_pipeline.ops.datamask import mask_from_frames

    args = build_parser().parse_args(argv)
    try:
        fs = load_frames(args.frames, dataset=args.h5_path)
        geometry = None
        if args.calibration:
            from saxs_pipeline.config.calibration import load_calibration

            geometry = load_calibration(args.calibration).geometry
            if geometry.image_shape != fs.frames[0].shape:
                raise UsageError(f"the frames' shape {fs.frames[0].shape} differs from the calibration's "
                                 f"Imagesize {geometry.image_shape}")
        mask = mask_from_frames(fs.frames, detector_mask=fs.pixel_mask, geometry=geometry)
        write_mask(args.out, mask.valid)
        if args.plot:
            from saxs_pipeline.curves.calibplot import plot_mask

            plot_mask(args.plot, np.nan_to_num(fs.summed()), mask.cause)
    except (UsageError, ValueError, OSError) as exc:
        print(f"saxsdog mask: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"mask": args.out, "masked": int((~mask.valid).sum()), "counts": mask.counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
