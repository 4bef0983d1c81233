"""``saxsconverter``: FIT2D calibration log, older calibration JSON or NeXus master file ->
calibration JSON."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from saxs_pipeline.config.fit2d import (
    ConverterError,
    convert,
    convert_nexus,
    is_hdf5,
    mask_path_for,
    to_text,
    write_calibration,
)
from saxs_pipeline.config.nexus import NexusOverrides, write_pixel_mask

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
Convert the refined geometry of a FIT2D calibration log into a saxs_pipeline calibration
(JSON, nested form), or convert an older calibration JSON (the 2014 flat form or the
nested form) into one.

From a FIT2D log (the text FIT2D prints after a powder calibration) these lines are read,
wherever they appear in a line:
  Refined Beam centre = X Y (pixels)      -> Geometry.BeamCenter = [Y, X]
  Refined sample to detector distance = D -> Geometry.DedectorDistanceMM
  Refined tilt plane rotation angle = R   -> Geometry.Tilt.TiltRotDeg
  Refined tilt angle = T                  -> Geometry.Tilt.TiltAngleDeg
  Refined wavelength = L                  -> Wavelength (Angstrom)
All five must be present. If a line occurs several times, the last one is used. Pixel
size and image size are not in the log: they come from the base calibration.

From a calibration JSON, the geometry, wavelength, title, polarization correction and the
first mask entry's MaskFile, PixelPerRadialElement, qStart, qStop and Oversampling are
taken over.

From a NeXus/DECTRIS master file (recognised by its HDF5 signature, e.g. an EIGER or
PILATUS4 *_master.h5) the NXdetector/NXbeam fields give distance, beam centre, pixel size,
wavelength (or energy) and detector size; the pixel mask (detectorSpecific/pixel_mask,
nonzero = bad) is written as OUTPUT's stem + "_mask.npy" next to OUTPUT and named in
Masks[0].MaskFile. The beam centre is converted from the detector's convention (pixels
from the left and from the TOP edge) to BeamCenter = [rows - beam_center_y,
beam_center_x] (Y from the bottom, FIT2D's convention). Tilt is not read; the base's is
kept. A missing field is reported with its NeXus path and the flag that supplies it
(--distance-mm, --beam-x, --beam-y, --pixel-size-um, --wavelength-a, --shape); a flag
also overrides the file.

The values are written into a base calibration: the template given with -t; else OUTPUT
itself if it exists (its other fields are kept); else a complete default calibration for
a Pilatus 1M (172 um pixels, 1043 x 981 pixels, mask placeholder AAA_integ.msk,
oversampling 3). The base must be a valid calibration. The result is validated, written to
OUTPUT (JSON, indent 4) and printed.
"""

EPILOG = """\
examples:
  saxsconverter calibration.txt cal.json
  saxsconverter -t mysetup.json calibration.txt cal.json
  saxsconverter old_flat_cal.json cal.json
  saxsconverter series_master.h5 cal.json
  saxsconverter --distance-mm 3000 --wavelength-a 1.0 series_master.h5 cal.json

exit status: 0 on success, 1 if the input, base or result is not usable, 2 on usage errors.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saxsconverter",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input", metavar="INPUT",
        help="FIT2D calibration log (text), or a calibration JSON in the flat or nested form",
    )
    parser.add_argument(
        "output", metavar="OUTPUT",
        help="calibration JSON to write; if it exists (and no -t is given) it is the base "
        "whose fields are updated",
    )
    parser.add_argument(
        "-t", "--template", metavar="TEMPLATE",
        help="calibration JSON to use as the base instead of OUTPUT or the default",
    )
    nexus = parser.add_argument_group("NeXus master files (values replace the file's)")
    nexus.add_argument("--distance-mm", type=float, metavar="MM", help="sample-detector distance")
    nexus.add_argument("--beam-x", type=float, metavar="PIXELS", help="beam centre x, from the left edge")
    nexus.add_argument("--beam-y", type=float, metavar="PIXELS",
                       help="beam centre y, from the TOP edge (the detector's convention)")
    nexus.add_argument("--pixel-size-um", type=float, metavar="UM", help="pixel size (square pixels)")
    nexus.add_argument("--wavelength-a", type=float, metavar="A", help="wavelength in Angstrom")
    nexus.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLS"), help="detector size")
    parser.add_argument(
        "-q", "--quiet", action="store_true",
        help="do not print the resulting calibration",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``saxsconverter``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="saxsconverter: %(message)s")
    overrides = NexusOverrides(
        distance_mm=args.distance_mm, beam_x=args.beam_x, beam_y=args.beam_y,
        pixel_size_um=args.pixel_size_um, wavelength_a=args.wavelength_a,
        shape=tuple(args.shape) if args.shape else None,
    )
    try:
        if is_hdf5(args.input):
            config, mask = convert_nexus(args.input, args.output, args.template, overrides)
            if mask is not None:
                try:
                    write_pixel_mask(mask_path_for(args.output), mask)
                except OSError as exc:
                    raise ConverterError(f"{mask_path_for(args.output)}: cannot be written ({exc.strerror})") from None
        elif overrides != NexusOverrides():
            raise ConverterError(f"{args.input}: the NeXus flags apply to NeXus (HDF5) input only")
        else:
            config = convert(args.input, args.output, args.template)
        write_calibration(args.output, config)
    except ConverterError as exc:
        print(f"saxsconverter: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(to_text(config), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
