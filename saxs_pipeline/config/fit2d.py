"""Calibration files from FIT2D calibration logs (and from older calibration JSON, and from
NeXus/DECTRIS master files: :func:`convert_nexus`, see :mod:`saxs_pipeline.config.nexus`).

FIT2D prints the refined geometry after a powder calibration as ``INFO:`` lines::

    INFO: Refined Beam centre =      387.772     808.370 (pixels)
    INFO: Refined sample to detector distance =     1031.657 mm
    INFO: Refined wavelength =      1.54000 Angstroms
    INFO: Refined tilt plane rotation angle =       73.569 degrees
    INFO: Refined tilt angle =       -0.560 degrees

The values are found with regular expressions anywhere in a line (the original split
lines into words and broke on leading blanks or a changed prefix). FIT2D's beam centre is
``X Y`` in pixels, which becomes ``BeamCenter = [Y, X]`` (see
:mod:`saxs_pipeline.ops.geometry`). When a log holds several refinements, the last one
wins. The "(mm)" beam centre, energy, ROT X/Y and ring lines are not used; pixel size and
image size do not appear in the log and come from the base calibration.

The base calibration that parsed values are written into is, in this order: a template,
an existing output file, or :func:`default_calibration` -- a complete calibration that
validates and has every field the original code read (its converter's defaults lacked
``Phi-mode``, ``GISAXSmode``, ``OverwriteFiles``, ``Live-Filelisting`` and ``Threads``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.config.calibration import empty_windows, load_calibration
from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.config.nexus import (
    NexusError,
    NexusOverrides,
    nexus_calibration,
    read_nexus_geometry,
)
from saxs_pipeline.frames.registry import HDF5_MAGIC
from saxs_pipeline.frames.source import ImageError

__all__ = [
    "ConverterError",
    "Fit2dGeometry",
    "apply_fit2d",
    "convert",
    "convert_nexus",
    "default_calibration",
    "import_calibration",
    "is_hdf5",
    "mask_path_for",
    "parse_fit2d_log",
    "read_base",
    "to_text",
    "write_calibration",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class ConverterError(ValueError):
    """Input that cannot be converted; the message names the file and what is wrong."""


_DEFAULT: dict[str, Any] = {
    "Geometry": {
        "Tilt": {"TiltRotDeg": 0.0, "TiltAngleDeg": 0.0},
        "BeamCenter": [900.0, 300.0],
        "DedectorDistanceMM": 1000.0,
        "PixelSizeMicroM": [172.0],
        "Imagesize": [1043, 981],
    },
    "Wavelength": 1.54,
    "Masks": [
        {
            "MaskFile": "AAA_integ.msk",
            "Oversampling": 3,
            "PixelPerRadialElement": 1,
            "Phi-mode": False,
            "qStart": 0.0,
            "qStop": 0.0,
        }
    ],
    "Directory": ["."],
    "GISAXSmode": False,
    "Live-Filelisting": True,
    "OverwriteFiles": True,
    "Threads": 2,
}


def default_calibration() -> dict[str, Any]:
    """A complete default calibration (nested form) for a Pilatus 1M: 172 um pixels,
    1043 x 981 pixels, a placeholder mask ``AAA_integ.msk`` (to be replaced by the real
    one), oversampling 3, no polarization correction. A fresh copy on every call."""
    return copy.deepcopy(_DEFAULT)


# ---------------------------------------------------------------------------------------
# FIT2D log

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?)"

# (field, description for error messages, pattern); case-insensitive, blanks flexible.
_PATTERNS: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("beam_center", "'Refined Beam centre = X Y (pixels)'",
     re.compile(rf"Refined\s+Beam\s+cent(?:re|er)\s*=\s*{_NUM}\s+{_NUM}\s*\(\s*pixels\s*\)", re.I)),
    ("distance_mm", "'Refined sample to detector distance = D mm'",
     re.compile(rf"Refined\s+sample\s+to\s+detector\s+distance\s*=\s*{_NUM}", re.I)),
    ("tilt_rot_deg", "'Refined tilt plane rotation angle = R degrees'",
     re.compile(rf"Refined\s+tilt\s+plane\s+rotation\s+angle\s*=\s*{_NUM}", re.I)),
    ("tilt_angle_deg", "'Refined tilt angle = T degrees'",
     re.compile(rf"Refined\s+tilt\s+angle\s*=\s*{_NUM}", re.I)),
    ("wavelength_a", "'Refined wavelength = L Angstroms'",
     re.compile(rf"Refined\s+wavelength\s*=\s*{_NUM}", re.I)),
)


def _float(text: str) -> float:
    # Fortran output may use D for the exponent.
    return float(text.replace("D", "E").replace("d", "e"))


@dataclass(frozen=True)
class Fit2dGeometry:
    """The refined geometry of a FIT2D calibration log, in FIT2D's terms."""

    beam_x: float  # pixels from the left edge
    beam_y: float  # pixels from the bottom edge
    distance_mm: float
    tilt_rot_deg: float
    tilt_angle_deg: float
    wavelength_a: float


def parse_fit2d_log(text: str, source: str = "<log>") -> Fit2dGeometry:
    """Parse the refined geometry out of a FIT2D calibration log.

    Raises :class:`ConverterError` naming every expected line that is missing.
    """
    found: dict[str, tuple[float, ...]] = {}
    for line in text.splitlines():
        for name, _, pattern in _PATTERNS:
            match = pattern.search(line)
            if match:
                found[name] = tuple(_float(g) for g in match.groups())  # last one wins
    missing = [desc for name, desc, _ in _PATTERNS if name not in found]
    if len(missing) == len(_PATTERNS):
        raise ConverterError(
            f"{source}: not a FIT2D calibration log (no 'Refined ...' geometry lines found)"
        )
    if missing:
        raise ConverterError(f"{source}: FIT2D log lacks the line(s) {', '.join(missing)}")
    beam_x, beam_y = found["beam_center"]
    return Fit2dGeometry(
        beam_x=beam_x,
        beam_y=beam_y,
        distance_mm=found["distance_mm"][0],
        tilt_rot_deg=found["tilt_rot_deg"][0],
        tilt_angle_deg=found["tilt_angle_deg"][0],
        wavelength_a=found["wavelength_a"][0],
    )


def apply_fit2d(base: dict[str, Any], fit2d: Fit2dGeometry) -> dict[str, Any]:
    """A copy of the nested calibration ``base`` with the FIT2D geometry written in."""
    out = copy.deepcopy(base)
    geometry = out.setdefault("Geometry", {})
    geometry["BeamCenter"] = [fit2d.beam_y, fit2d.beam_x]
    # One spelling only, so no stale alias can disagree with the new distance.
    geometry.pop("DetectorDistanceMM", None)
    geometry["DedectorDistanceMM"] = fit2d.distance_mm
    geometry["Tilt"] = {"TiltRotDeg": fit2d.tilt_rot_deg, "TiltAngleDeg": fit2d.tilt_angle_deg}
    out["Wavelength"] = fit2d.wavelength_a
    return out


# ---------------------------------------------------------------------------------------
# JSON input

# What the original's JSON import copied (its path table); other fields of the base stay.
_GEOMETRY_KEYS = ("Tilt", "Imagesize", "DedectorDistanceMM", "BeamCenter", "PixelSizeMicroM")
_MASK_KEYS = ("MaskFile", "PixelPerRadialElement", "qStart", "qStop", "Oversampling")


def import_calibration(source: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with the geometry, wavelength, title, polarization and the first
    mask entry's MaskFile/PixelPerRadialElement/qStart/qStop/Oversampling taken from the
    calibration ``source`` (nested or old flat form; validated first).

    ``PolarizationCorrection`` follows the source: its presence switches the correction
    on, so a source without it removes it from the base.
    """
    cal = load_calibration(source)  # flat -> nested, and validation with JSON paths
    src = cal.raw
    out = copy.deepcopy(base)
    geometry = out.setdefault("Geometry", {})
    src_geometry = dict(src["Geometry"])
    if "DetectorDistanceMM" in src_geometry and "DedectorDistanceMM" not in src_geometry:
        src_geometry["DedectorDistanceMM"] = src_geometry["DetectorDistanceMM"]
    for key in _GEOMETRY_KEYS:
        if key in src_geometry:
            geometry[key] = copy.deepcopy(src_geometry[key])
    if "DedectorDistanceMM" in src_geometry:
        geometry.pop("DetectorDistanceMM", None)
    out["Wavelength"] = src["Wavelength"]
    if "Title" in src:
        out["Title"] = src["Title"]
    if "PolarizationCorrection" in src:
        out["PolarizationCorrection"] = copy.deepcopy(src["PolarizationCorrection"])
    else:
        out.pop("PolarizationCorrection", None)
    masks = out.setdefault("Masks", [])
    if not masks:
        masks.append(copy.deepcopy(_DEFAULT["Masks"][0]))
    for key in _MASK_KEYS:
        if key in src["Masks"][0]:
            masks[0][key] = src["Masks"][0][key]
    return out


# ---------------------------------------------------------------------------------------
# The whole conversion


def read_base(path: PathLike, role: str) -> dict[str, Any]:
    """The calibration at ``path`` (nested form) as a base to write into; it must validate.
    ``role`` names it in error messages ("template", "existing output")."""
    try:
        cal = load_calibration(path)
    except CalibrationError as exc:
        raise ConverterError(f"{role} {exc}") from None
    return copy.deepcopy(cal.raw)


def _looks_like_json(text: str) -> bool:
    return text.lstrip().startswith(("{", "["))


def _base(output_path: PathLike | None, template: PathLike | None) -> dict[str, Any]:
    if template is not None:
        log.info("base: template %s", template)
        return read_base(template, "template")
    if output_path is not None and Path(output_path).exists():
        log.info("base: existing output %s (parsed values replace its fields)", output_path)
        return read_base(output_path, "existing output")
    log.info("base: default calibration")
    return default_calibration()


def convert(
    input_path: PathLike,
    output_path: PathLike | None = None,
    template: PathLike | None = None,
) -> dict[str, Any]:
    """Convert a FIT2D calibration log or an older calibration JSON into a calibration.

    The base is ``template`` if given, else the existing ``output_path`` if there is one,
    else :func:`default_calibration`. The result is validated and returned; nothing is
    written (see :func:`write_calibration`).
    """
    base = _base(output_path, template)

    source = os.fspath(input_path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise ConverterError(f"{source}: cannot be read ({exc.strerror})") from None
    # FIT2D logs are ASCII, but may hold Windows paths in a local code page.
    text = raw.decode("utf-8", errors="replace")
    if _looks_like_json(text):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConverterError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConverterError(f"{source}: a calibration must be a JSON object")
        try:
            result = import_calibration(data, base)
        except CalibrationError as exc:
            raise ConverterError(f"{source}: {exc.path}: {exc.reason}") from None
    else:
        result = apply_fit2d(base, parse_fit2d_log(text, source))
    return _checked(result, default_base=template is None and not (
        output_path is not None and Path(output_path).exists()))


def _checked(result: dict[str, Any], *, default_base: bool) -> dict[str, Any]:
    """Validate the result. On the default base, whose q window is 0..0 (integral
    parameters all 0, as the original converter wrote), the window becomes the detector's
    whole q range, and the log says so; a template or an existing output keeps its own."""
    try:
        cal = load_calibration(result)
    except CalibrationError as exc:
        raise ConverterError(f"the converted calibration does not validate: {exc.path}: {exc.reason}") from None
    from saxs_pipeline.ops.geometry import q_map

    qmax = None
    for i in empty_windows(cal) if default_base else []:
        qmax = qmax if qmax is not None else float(f"{float(q_map(cal.geometry, 1).max()):.4g}")
        result["Masks"][i]["qStop"] = qmax
        log.warning("$.Masks[%d]: qStart = qStop = 0 would make I0/I1/I2 all 0; qStop set to "
                    "%g 1/nm, the detector's largest q (edit it for your q window)", i, qmax)
    return result


def is_hdf5(path: PathLike) -> bool:
    """True when ``path`` starts with the HDF5 signature (a NeXus master file)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(HDF5_MAGIC)) == HDF5_MAGIC
    except OSError:
        return False


def mask_path_for(output_path: PathLike) -> Path:
    """Where the pixel mask of a NeXus conversion goes: ``<OUTPUT stem>_mask.npy`` beside it."""
    out = Path(output_path)
    return out.with_name(f"{out.stem}_mask.npy")


def convert_nexus(
    input_path: PathLike,
    output_path: PathLike,
    template: PathLike | None = None,
    overrides: NexusOverrides | None = None,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """A calibration from a NeXus/DECTRIS master file (see :mod:`saxs_pipeline.config.nexus`)
    and its pixel mask (True = bad, None if the file has none). The calibration's
    ``Masks[0].MaskFile`` names :func:`mask_path_for` (relative to the output) when there
    is a mask; nothing is written."""
    base = _base(output_path, template)
    try:
        geometry = read_nexus_geometry(input_path, overrides)
    except (NexusError, ImageError) as exc:
        raise ConverterError(str(exc)) from None
    mask_file = mask_path_for(output_path).name if geometry.pixel_mask is not None else None
    if mask_file is None:
        log.warning("%s has no pixel_mask; Masks[0].MaskFile stays %s", input_path,
                    base.get("Masks", [{}])[0].get("MaskFile"))
    default_base = template is None and not Path(output_path).exists()
    return _checked(nexus_calibration(geometry, base, mask_file), default_base=default_base), \
        geometry.pixel_mask


def to_text(config: dict[str, Any]) -> str:
    """The calibration as written to files: JSON, indent 4, with a final newline."""
    return json.dumps(config, indent=4) + "\n"


def write_calibration(path: PathLike, config: dict[str, Any]) -> None:
    """Write ``config`` to ``path`` (indent 4), replacing the file atomically."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(to_text(config))
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConverterError(f"{target}: cannot be written ({exc.strerror})") from None
