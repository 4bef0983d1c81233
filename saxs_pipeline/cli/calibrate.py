"""``saxsdog calibrate``: the detector geometry from calibrant frames, with no starting
geometry; writes a calibration that ``saxsdog -c`` takes, its data mask and a report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from saxs_pipeline.cli.calibframes import UsageError, load_frames, write_mask

__all__ = ["build_parser", "calibration_dict", "main"]

EPILOG = """\
The beam centre comes from the rings themselves, each ring's calibrant order from the
ratios of the ring radii; beam centre, distance and tilt are refined by robust least
squares on sub-pixel ring positions in azimuthal sectors. The report gives every
parameter with its 1 sigma, the rings used (order, d, points, rms), the rings dropped and
why, the check of the result in 12 sectors, and the time taken.

examples:
  saxsdog calibrate agbeh.tif --calibrant AgBh --wavelength 1.54 -o cal.json --plot check.png
  saxsdog calibrate lab6_*.cbf --calibrant LaB6 --wavelength 0.8266 --pixel-size 172 -o cal.json

exit status: 0 on success, 2 when the frames give no trustworthy geometry (the message
says what was found) or on usage errors.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saxsdog calibrate", description=__doc__.split(": ", 1)[1].replace("\n", " "),
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("frames", nargs="+", help="calibrant frame files (any format; several are summed)")
    p.add_argument("--calibrant", required=True, help="AgBh, LaB6, CeO2, Si, or d-spacings in A: 'd1,d2,...'")
    p.add_argument("--wavelength", type=float, required=True, help="wavelength in A")
    p.add_argument("--pixel-size", type=float, help="pixel size in um (default: from the file)")
    p.add_argument("--mask", help="mask file of pixels not to use (FIT2D .msk, image, .npy)")
    p.add_argument("--refine-wavelength", action="store_true", help="refine the wavelength too (needs >= 3 rings "
                   "reaching 2theta >= 10 deg)")
    p.add_argument("--max-rms", type=float, default=1.0, help="refuse a fit whose rms exceeds this (px, default 1)")
    p.add_argument("--h5-path", help="dataset of a plain HDF5 file")
    p.add_argument("-o", "--out", required=True, help="calibration JSON to write")
    p.add_argument("--report", help="report JSON to write")
    p.add_argument("--plot", help="check picture to write (PNG)")
    return p


def calibration_dict(result, mask_file: str, frames: list[str]) -> dict:
    """The nested calibration ``saxsdog -c`` and ``saxsleash new`` take."""
    g = result.geometry
    names = ", ".join(Path(f).name for f in frames[:3]) + (", ..." if len(frames) > 3 else "")
    return {
        "Title": f"saxsdog calibrate: {result.calibrant} at {g.wavelength_a:g} A on {names}; rms "
                 f"{result.rms_px:.3f} px over {len(result.rings)} rings",
        "Geometry": {"BeamCenter": [g.beam_center_y, g.beam_center_x], "DedectorDistanceMM": g.distance_mm,
                     "Tilt": {"TiltAngleDeg": g.tilt_angle_deg, "TiltRotDeg": g.tilt_rot_deg},
                     "PixelSizeMicroM": list(g.pixel_size_um), "Imagesize": list(g.image_shape)},
        "Wavelength": g.wavelength_a,
        "Masks": [{"MaskFile": mask_file, "Oversampling": 2, "PixelPerRadialElement": 1}],
    }


def run(args: argparse.Namespace) -> int:
    from saxs_pipeline.ops.calibcheck import check_calibration
    from saxs_pipeline.ops.calibrants import calibrant_from_spec
    from saxs_pipeline.ops.calibrate import CalibrationOptions, calibrate
    from saxs_pipeline.ops.datamask import mask_from_frames

    calibrant = calibrant_from_spec(args.calibrant)
    fs = load_frames(args.frames, args.pixel_size, args.h5_path)
    if fs.pixel_um is None:
        raise UsageError(f"{args.frames[0]} does not give its pixel size: use --pixel-size")
    image = fs.summed()
    valid = np.ones(image.shape, dtype=bool) if fs.pixel_mask is None else ~fs.pixel_mask
    if args.mask:
        from saxs_pipeline.config.masks import read_mask

        given = read_mask(args.mask)
        if given.shape != image.shape:
            raise UsageError(f"the frames' shape {image.shape[0]} x {image.shape[1]} differs from the mask "
                             f"{args.mask}'s {given.shape[0]} x {given.shape[1]}")
        valid &= given
    options = CalibrationOptions(refine_wavelength=args.refine_wavelength, max_rms_px=args.max_rms)
    result = calibrate(image, calibrant, args.wavelength, fs.pixel_um, valid=valid, options=options)
    data = mask_from_frames(fs.frames, detector_mask=~valid, geometry=result.geometry)
    out = Path(args.out)
    mask_path = out.with_name(out.stem + "_mask.msk")
    write_mask(str(mask_path), data.valid)
    out.write_text(json.dumps(calibration_dict(result, mask_path.name, fs.names), indent=2) + "\n")
    check = check_calibration(image, data.valid, result.geometry, calibrant, sectors=12)
    print(result.summary())
    print(check.message)
    if args.report:
        report = result.report() | {"frames": fs.names, "mask_file": str(mask_path), "mask_counts": data.counts,
                                    "check": check.as_dict()}
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        from saxs_pipeline.curves.calibplot import plot_check

        plot_check(args.plot, np.nan_to_num(image), data.valid, result.geometry, calibrant, check)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from saxs_pipeline.ops.calibresult import CalibrationRefused

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (CalibrationRefused, UsageError, ValueError, OSError) as exc:
        print(f"saxsdog calibrate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
