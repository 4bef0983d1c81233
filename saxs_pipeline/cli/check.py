"""``saxsdog check``: how well a calibration fits a calibrant frame -- every calibrant
ring's measured position against this geometry's, per azimuthal sector -- as numbers and
as a picture."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from saxs_pipeline.cli.calibframes import UsageError, load_frames

__all__ = ["build_parser", "main"]

EPILOG = """\
A wrong beam centre shows as offsets that swing with azimuth, a wrong distance as the
same offset everywhere, growing with the ring's radius. The numbers are printed as JSON.

examples:
  saxsdog check cal.json agbeh.tif --calibrant AgBh --plot check.png

exit status: 0 when the calibration fits the frame, 1 when it does not, 2 on errors.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saxsdog check", description=__doc__.split(": ", 1)[1].replace("\n", " "),
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("calibration", help="calibration JSON (nested or flat form)")
    p.add_argument("frames", nargs="+", help="calibrant frame files (summed)")
    p.add_argument("--calibrant", default="AgBh", help="AgBh (default), LaB6, CeO2, Si or 'd1,d2,...' in A")
    p.add_argument("--sectors", type=int, default=12, help="azimuthal sectors (default 12)")
    p.add_argument("--tolerance", type=float, default=0.5, help="largest offset that fits (px, default 0.5)")
    p.add_argument("--h5-path", help="dataset of a plain HDF5 file")
    p.add_argument("--plot", help="picture to write (PNG)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from saxs_pipeline.config.calibration import load_calibration
    from saxs_pipeline.ops.calibcheck import check_calibration
    from saxs_pipeline.ops.calibrants import calibrant_from_spec
    from saxs_pipeline.ops.datamask import mask_from_frames

    args = build_parser().parse_args(argv)
    try:
        cal = load_calibration(args.calibration)
        calibrant = calibrant_from_spec(args.calibrant)
        fs = load_frames(args.frames, dataset=args.h5_path)
        image = fs.summed()
        if cal.geometry.image_shape != image.shape:
            raise UsageError(f"the frames' shape {image.shape} differs from the calibration's Imagesize "
                             f"{cal.geometry.image_shape}")
        valid = mask_from_frames(fs.frames, detector_mask=fs.pixel_mask, geometry=cal.geometry).valid
        check = check_calibration(image, valid, cal.geometry, calibrant, sectors=args.sectors,
                                  tolerance_px=args.tolerance)
        if args.plot:
            from saxs_pipeline.curves.calibplot import plot_check

            plot_check(args.plot, np.nan_to_num(image), valid, cal.geometry, calibrant, check)
    except (UsageError, ValueError, OSError) as exc:
        print(f"saxsdog check: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(check.as_dict(), indent=1))
    print(check.message, file=sys.stderr)
    return 0 if check.fits else 1


if __name__ == "__main__":
    sys.exit(main())
