"""``saxs-absolute``: the absolute-scale factor from a water or glassy-carbon measurement,
written into a copy of the calibration as ``Normalisation.AbsoluteScale``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from saxs_pipeline.curves.chi import ChiError, read_chi
from saxs_pipeline.ops import absolute

__all__ = ["build_parser", "main", "read_curve"]

EPILOG = """\
The factor F satisfies dSigma/dOmega = F * I / (transmission * exposure * thickness), I the
integrated curve (counts/pixel); exposure is what else the calibration divides by
(monitor x exposure time). Water: 1.632e-2 cm^-1 at 20 C (Orthaber et al. 2000), other
temperatures from IAPWS-95. Curves are .chi files; a reference curve may also be a text
file of q, I[, error] columns (whitespace or comma separated, # comments).

examples:
  saxs-absolute water cal.json --water water.chi --empty cell.chi --thickness 0.1 \\
      --water-transmission 0.35 --empty-transmission 0.9 --q-range 0.5 2.5 -o cal_abs.json
  saxs-absolute glassy-carbon cal.json --sample gc.chi --reference srm3600.dat \\
      --reference-q-units 1/angstrom --thickness 0.1055 --transmission 0.4 -o cal_abs.json

exit status: 0 on success, 1 on errors, 2 on usage errors.
"""


def read_curve(path: str, q_units: str = "1/nm") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """q (in 1/nm), intensity and error (None if absent) of a .chi or a column text file."""
    if path.endswith(".chi"):
        data = read_chi(path)
        q, i, e = data.radial, data.intensity, data.error
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"curve {path}: cannot be read ({exc.strerror})") from None
        rows = [line.split("#", 1)[0].replace(",", " ").split() for line in text.splitlines()]
        rows = [r for r in rows if r]
        try:
            table = np.array(rows, dtype=np.float64)
        except ValueError:
            raise ValueError(f"curve {path}: expected rows of 2 or 3 numbers") from None
        if table.ndim != 2 or table.shape[1] not in (2, 3):
            raise ValueError(f"curve {path}: expected rows of 2 or 3 numbers")
        q, i, e = table[:, 0], table[:, 1], table[:, 2] if table.shape[1] == 3 else None
    return (q * 10.0 if q_units == "1/angstrom" else q), i, e


def _error(path: str, e: np.ndarray | None) -> np.ndarray:
    if e is None:
        raise ValueError(f"curve {path} has no error column")
    return e


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saxs-absolute", description=__doc__.split(": ", 1)[1].replace("\n", " "),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="standard", required=True)
    water = sub.add_parser("water", help="water in a cell, empty cell subtracted")
    gc = sub.add_parser("glassy-carbon", help="glassy carbon and its reference curve")
    for p in (water, gc):
        p.add_argument("calibration", help="calibration JSON to copy")
        p.add_argument("-o", "--out", required=True, help="calibration JSON to write")
        p.add_argument("--thickness", type=float, required=True, help="sample thickness, cm")
        p.add_argument("--thickness-uncertainty", type=float, default=0.0, help="cm")
        p.add_argument("--q-range", type=float, nargs=2, metavar=("QMIN", "QMAX"),
                       help="q range of the fit, 1/nm (default: all)")
    water.add_argument("--water", required=True, help=".chi of the water frame")
    water.add_argument("--empty", help=".chi of the empty-cell frame")
    water.add_argument("--temperature", type=float, default=20.0, help="C (default: 20)")
    for name in ("water", "empty"):
        water.add_argument(f"--{name}-transmission", type=float, default=1.0)
        water.add_argument(f"--{name}-exposure", type=float, default=1.0)
    gc.add_argument("--sample", required=True, help=".chi of the glassy-carbon frame")
    gc.add_argument("--reference", required=True, help="reference curve, cm^-1")
    gc.add_argument("--reference-q-units", choices=("1/nm", "1/angstrom"), default="1/nm")
    gc.add_argument("--transmission", type=float, default=1.0)
    gc.add_argument("--exposure", type=float, default=1.0)
    return parser


def _fit(args: argparse.Namespace) -> absolute.AbsoluteScale:
    common = {"thickness_cm": args.thickness, "q_range": args.q_range,
              "thickness_uncertainty_cm": args.thickness_uncertainty}
    if args.standard == "water":
        q, w, we = read_curve(args.water)
        empty = {}
        if args.empty:
            eq, e, ee = read_curve(args.empty)
            if eq.shape != q.shape or not np.allclose(eq, q, rtol=1e-9):
                raise ValueError(f"{args.empty} is on another q grid than {args.water}")
            empty = {"empty": e, "empty_error": _error(args.empty, ee),
                     "empty_transmission": args.empty_transmission,
                     "empty_exposure": args.empty_exposure}
        return absolute.water_factor(q, w, _error(args.water, we),
                                     water_transmission=args.water_transmission,
                                     water_exposure=args.water_exposure,
                                     temperature_c=args.temperature, **empty, **common)
    q, s, se = read_curve(args.sample)
    rq, r, re = read_curve(args.reference, args.reference_q_units)
    return absolute.glassy_carbon_factor(q, s, _error(args.sample, se), rq, r, re,
                                         transmission=args.transmission,
                                         exposure=args.exposure, **common)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``saxs-absolute``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="saxs-absolute: %(message)s")
    try:
        raw = json.loads(Path(args.calibration).read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{args.calibration}: a calibration must be a JSON object")
        scale = _fit(args)
        Path(args.out).write_text(json.dumps(absolute.calibration_with_scale(raw, scale), indent=2)
                                  + "\n")
    except (ValueError, OSError, ChiError) as exc:
        print(f"saxs-absolute: error: {exc}", file=sys.stderr)
        return 1
    print(f"AbsoluteScale {scale.factor:.6g} +- {scale.uncertainty:.2g} from {scale.n_points} "
          f"points, q {scale.q_range[0]:.4g}..{scale.q_range[1]:.4g} 1/nm, "
          f"reduced chi2 {scale.chi2_reduced:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
