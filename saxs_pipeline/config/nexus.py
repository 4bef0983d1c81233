"""Detector geometry from a NeXus/DECTRIS master file, as a calibration (nested form).

Read from ``/entry/instrument`` (units from each field's ``units`` attribute):

=====================  ========================================================  ================
calibration            NeXus field (first one present)                           flag supplying it
=====================  ========================================================  ================
DedectorDistanceMM     detector/distance, detector/detector_distance             --distance-mm
BeamCenter             detector/beam_center_x, detector/beam_center_y (pixels)   --beam-x, --beam-y
PixelSizeMicroM        detector/y_pixel_size, detector/x_pixel_size              --pixel-size-um
Wavelength             beam/incident_wavelength, else beam/incident_energy or    --wavelength-a
                       detector/detectorSpecific/photon_energy (eV)
Imagesize              detectorSpecific/y_pixels_in_detector, x_pixels_in_...,   --shape
                       else the frame shape of the data
Masks[0].MaskFile      detectorSpecific/pixel_mask (or <channel>_channel/...)     (none: optional)
=====================  ========================================================  ================

**Beam centre convention.** NeXus/DECTRIS ``beam_center_x``/``beam_center_y`` are pixel
coordinates on the stored image, x along the columns from the left edge and y along the
rows from the *top* (row 0 is the first stored row), both measured from the outer pixel
edge (pixel k spans [k, k+1), as pyFAI and DIALS read them). Ours (FIT2D's) is
``BeamCenter = [Y from the bottom edge, X from the left edge]``, so
``BeamCenter = [rows - beam_center_y, beam_center_x]``. The ``--beam-x``/``--beam-y``
flags take the detector's convention, as the detector software shows it.

Tilt is not read (the NXtransformations chain is not interpreted): the base's ``Tilt`` is
kept (0 in the default calibration).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy import constants

from saxs_pipeline.frames.hdf5 import Hdf5Frames, open_hdf5
from saxs_pipeline.frames.hdf5meta import DETECTOR
from saxs_pipeline.frames.source import FrameIncompleteError, ImageError

__all__ = ["NexusError", "NexusGeometry", "NexusOverrides", "nexus_calibration", "read_nexus_geometry"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

BEAM = "/entry/instrument/beam"
SPECIFIC = f"{DETECTOR}/detectorSpecific"
HC_EV_A = constants.h * constants.c / constants.e * 1e10  # photon energy (eV) x wavelength (A)
_LENGTH_M = {"m": 1.0, "meter": 1.0, "metre": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "micron": 1e-6,
             "microns": 1e-6, "nm": 1e-9, "angstrom": 1e-10, "a": 1e-10}
_ENERGY_EV = {"ev": 1.0, "kev": 1e3}


class NexusError(ValueError):
    """A master file that does not give a complete geometry; names the NeXus path and flag."""


@dataclass(frozen=True)
class NexusOverrides:
    """Values given on the command line; each replaces the NeXus field it names."""

    distance_mm: float | None = None
    beam_x: float | None = None  # pixels from the left edge
    beam_y: float | None = None  # pixels from the TOP edge (the detector's convention)
    pixel_size_um: float | None = None
    wavelength_a: float | None = None
    shape: tuple[int, int] | None = None  # rows, cols


@dataclass(frozen=True)
class NexusGeometry:
    """The geometry of a master file, in the NeXus convention but our units."""

    distance_mm: float
    beam_x: float  # pixels from the left edge
    beam_y: float  # pixels from the top edge
    pixel_size_um: tuple[float, float]  # (y, x)
    wavelength_a: float
    shape: tuple[int, int]  # rows, cols
    pixel_mask: np.ndarray | None  # True = bad

    def beam_center(self) -> list[float]:
        """``BeamCenter`` in our (FIT2D) convention: [Y from the bottom, X from the left]."""
        return [self.shape[0] - self.beam_y, self.beam_x]


def _value(fh: h5py.File, path: str, units: dict[str, float] | None = None) -> float | None:
    obj = fh.get(path)
    if not isinstance(obj, h5py.Dataset) or obj.size != 1 or obj.dtype.kind not in "iuf":
        return None
    value = float(np.asarray(obj[()]).reshape(-1)[0])
    if units is None:
        return value
    unit = obj.attrs.get("units", "")
    unit = (unit.decode() if isinstance(unit, bytes) else str(unit)).strip().lower()
    if unit not in units:
        raise NexusError(f"{fh.filename}: {path} has units {unit!r}; expected one of {sorted(units)}")
    return value * units[unit]


def _first(fh: h5py.File, paths: tuple[str, ...], units: dict[str, float] | None = None) -> float | None:
    return next((v for p in paths if (v := _value(fh, p, units)) is not None), None)


def _missing(source: str, paths: tuple[str, ...], flag: str) -> NexusError:
    return NexusError(f"{source}: {' / '.join(paths)} missing; give it with {flag}")


def read_nexus_geometry(path: PathLike, overrides: NexusOverrides | None = None) -> NexusGeometry:
    """The geometry of the master file at ``path``, ``overrides`` taking precedence.

    Raises :class:`NexusError` naming the NeXus path and the flag that supplies a missing
    value, and ImageError for a file that is not a readable HDF5 file.
    """
    source = os.fspath(path)
    over = overrides or NexusOverrides()
    try:
        fh = open_hdf5(source)
    except FileNotFoundError:
        raise ImageError(f"{source} does not exist") from None
    with fh:
        dist_paths = (f"{DETECTOR}/distance", f"{DETECTOR}/detector_distance")
        distance_m = _first(fh, dist_paths, _LENGTH_M)
        distance_mm = over.distance_mm if over.distance_mm is not None else (
            distance_m * 1e3 if distance_m is not None else None)
        if distance_mm is None:
            raise _missing(source, dist_paths, "--distance-mm MM")
        beam = []
        for axis, given in (("x", over.beam_x), ("y", over.beam_y)):
            field = f"{DETECTOR}/beam_center_{axis}"
            value = given if given is not None else _value(fh, field)
            if value is None:
                edge = "left" if axis == "x" else "top"
                raise _missing(source, (field,), f"--beam-{axis} PIXELS (from the {edge} edge, as the detector reports it)")
            beam.append(value)
        sizes = []
        for axis in ("y", "x"):
            field = f"{DETECTOR}/{axis}_pixel_size"
            value = _value(fh, field, _LENGTH_M)
            if over.pixel_size_um is None and value is None:
                raise _missing(source, (field,), "--pixel-size-um UM")
            sizes.append(over.pixel_size_um if over.pixel_size_um is not None else value * 1e6)
        wavelength = over.wavelength_a
        if wavelength is None:
            wavelength = _first(fh, (f"{BEAM}/incident_wavelength",), {k: v / 1e-10 for k, v in _LENGTH_M.items()})
        if wavelength is None:
            energy_paths = (f"{BEAM}/incident_energy", f"{SPECIFIC}/photon_energy")
            energy = _first(fh, energy_paths, _ENERGY_EV)
            if energy is None:
                raise _missing(source, (f"{BEAM}/incident_wavelength", *energy_paths), "--wavelength-a A")
            wavelength = HC_EV_A / energy
        rows, cols = _value(fh, f"{SPECIFIC}/y_pixels_in_detector"), _value(fh, f"{SPECIFIC}/x_pixels_in_detector")
        shape = over.shape or ((int(rows), int(cols)) if rows and cols else None)
    mask, frame_shape = None, None
    try:
        with Hdf5Frames(source) as frames:
            frame_shape, mask = frames.shape, frames.pixel_mask()
    except (ImageError, FrameIncompleteError) as exc:  # geometry without readable data is fine
        log.info("%s: no frame data to take the shape and pixel mask from (%s)", source, exc)
    shape = shape or frame_shape
    if shape is None:
        raise _missing(source, (f"{SPECIFIC}/y_pixels_in_detector", f"{SPECIFIC}/x_pixels_in_detector"), "--shape ROWS COLS")
    if mask is not None and mask.shape != tuple(shape):
        raise NexusError(f"{source}: pixel_mask has shape {mask.shape}, the detector {tuple(shape)}")
    return NexusGeometry(distance_mm, beam[0], beam[1], (sizes[0], sizes[1]), wavelength, tuple(shape), mask)


def nexus_calibration(
    geometry: NexusGeometry, base: dict[str, Any], mask_file: str | None
) -> dict[str, Any]:
    """A copy of the nested calibration ``base`` with ``geometry`` written in, and
    ``Masks[0].MaskFile = mask_file`` when given (the written pixel mask)."""
    out = copy.deepcopy(base)
    geo = out.setdefault("Geometry", {})
    geo.pop("DetectorDistanceMM", None)
    geo["DedectorDistanceMM"] = geometry.distance_mm
    geo["BeamCenter"] = geometry.beam_center()
    y, x = geometry.pixel_size_um
    geo["PixelSizeMicroM"] = [y] if y == x else [y, x]
    geo["Imagesize"] = list(geometry.shape)
    geo.setdefault("Tilt", {"TiltRotDeg": 0.0, "TiltAngleDeg": 0.0})
    out["Wavelength"] = geometry.wavelength_a
    if mask_file is not None:
        out.setdefault("Masks", [{}])[0]["MaskFile"] = mask_file
    return out


def write_pixel_mask(path: PathLike, mask: np.ndarray) -> None:
    """Save a pixel mask as ``.npy`` (uint8, nonzero = masked, as our mask readers take it)."""
    np.save(Path(path), np.asarray(mask, dtype=np.uint8))
