"""Calibration files: load, validate (:mod:`saxs_pipeline.config.calibschema`), parse into
dataclasses.

Both the nested form (``Geometry``/``Masks``/``Slices``) and the old flat form of the 2014
manual are read. Every error names the file and the JSON path that is wrong.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import scipy.constants

from saxs_pipeline.config.calibschema import (
    CalibrationError,
    check_finite,
    flat_to_nested,
    is_flat,
    validate,
)
from saxs_pipeline.config.wedges import check_wedge

# IntensityDefinition values (schema): the original's mean of per-pixel corrected counts,
# and pyFAI's summed signal over summed normalisation.
PIXEL_MEAN = "pixel-mean"
SIGNAL_OVER_NORMALISATION = "signal-over-normalisation"
_CORRECTION_KEYS = ("Dark", "Flat", "SolidAngle", "Sensor")

__all__ = [
    "PIXEL_MEAN",
    "SIGNAL_OVER_NORMALISATION",
    "Calibration",
    "Geometry",
    "MaskConfig",
    "Polarization",
    "Sensor",
    "SliceConfig",
    "empty_windows",
    "load_calibration",
]


@dataclass(frozen=True)
class Geometry:
    """Detector geometry. Beam centre in FIT2D's convention: y from the bottom edge, x from
    the left edge, both in pixels measured from pixel edges."""

    beam_center_y: float
    beam_center_x: float
    distance_mm: float
    pixel_size_um: tuple[float, float]  # (y, x)
    image_shape: tuple[int, int]  # (rows, cols)
    tilt_angle_deg: float
    tilt_rot_deg: float
    wavelength_a: float


@dataclass(frozen=True)
class Polarization:
    fraction: float
    angle_deg: float


@dataclass(frozen=True)
class Sensor:
    """The detector sensor: ``mu_per_cm`` is its photo-absorption coefficient at the beam
    energy (xraydb), looked up when the calibration is loaded."""

    material: str
    thickness_um: float
    mu_per_cm: float
    density_g_cm3: float | None = None


@dataclass(frozen=True)
class MaskConfig:
    mask_file: str
    oversampling: int = 3
    pixels_per_radial_element: float = 1.0
    name: str | None = None
    phi_mode: bool = False
    q_start: float = 0.0
    q_stop: float = 0.0
    radial_bins: int | None = None
    radial_range: tuple[float, float] | None = None
    radial_edges: tuple[float, ...] | None = None
    pixel_splitting: str | None = None  # "point" | "linear"; None = by grid (see operator)
    azimuth: tuple[tuple[float, float], ...] | None = None  # wedges [start, stop] in degrees
    azimuth_bins: int | None = None  # a 2-D cake I(q, chi) with this many chi bins
    store_sums: bool = False  # the per-bin sums go into the curve stack too
    index: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class SliceConfig:
    direction: str
    plane: str
    cut_position: int
    cut_margin: int = 1
    incident_angle_deg: float = 0.0
    mask_ref: int = 0
    index: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Calibration:
    """A parsed calibration. ``raw`` is the nested-form dict as given (it is what the
    ``.chi`` header repeats); ``base_dir`` is where relative mask paths resolve."""

    geometry: Geometry
    masks: tuple[MaskConfig, ...]
    slices: tuple[SliceConfig, ...] = ()
    polarization: Polarization | None = None
    gisaxs_mode: bool = False
    directory: tuple[str, ...] = (".",)
    live_filelisting: bool = True
    overwrite_files: bool = True
    threads: int = 2
    title: str | None = None
    error_model: str = "poisson"
    intensity_definition: str = PIXEL_MEAN
    dark: str | None = None
    dark_exposures: int = 1
    flat: str | None = None
    solid_angle: bool = False
    sensor: Sensor | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    base_dir: Path | None = field(default=None, compare=False)

    @property
    def summed_normalisation(self) -> bool:
        """True for IntensityDefinition "signal-over-normalisation" (see the schema)."""
        return self.intensity_definition == SIGNAL_OVER_NORMALISATION

    def resolve(self, name: str) -> Path:
        """A file named in the calibration, relative paths resolved against ``base_dir``."""
        path = Path(name).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    def mask_path(self, mask: MaskConfig) -> Path:
        """The mask file of ``mask``, relative paths resolved against ``base_dir``."""
        return self.resolve(mask.mask_file)

    def to_json(self) -> str:
        """The calibration as the original wrote it into ``.chi`` headers."""
        return json.dumps(self.raw)


def load_calibration(
    config: str | Path | dict[str, Any], *, base_dir: str | Path | None = None
) -> Calibration:
    """Load a calibration from a file path or a dict (nested or flat form).

    Raises :class:`CalibrationError` naming the file and the JSON path of the problem.
    """
    if isinstance(config, dict):
        source = "calibration"
        raw = copy.deepcopy(config)
    else:
        path = Path(config)
        source = str(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise CalibrationError(source, "$", "file not found") from None
        except json.JSONDecodeError as exc:
            raise CalibrationError(source, "$", f"not valid JSON ({exc})") from None
        if base_dir is None:
            base_dir = path.absolute().parent
    if not isinstance(raw, dict):
        raise CalibrationError(source, "$", "a calibration must be a JSON object")
    check_finite(raw, source)
    flat = is_flat(raw)
    if flat:
        validate(raw, "flat", source)
        raw = flat_to_nested(raw)
    validate(raw, "nested", source)
    return _parse(raw, source, Path(base_dir) if base_dir is not None else None,
                  "$" if flat else "$.Geometry")


def _check_beam_center(geometry: Geometry, source: str, where: str) -> None:
    """A beam centre may lie off the detector (GISAXS, a corner detector), but not more
    than a detector size off: that is a typo or swapped units, and its curve would be
    tens of thousands of bins with a few dozen filled."""
    rows, cols = geometry.image_shape
    y, x = geometry.beam_center_y, geometry.beam_center_x
    if not (-rows <= y <= 2 * rows and -cols <= x <= 2 * cols):
        raise CalibrationError(
            source, f"{where}.BeamCenter",
            f"[{y:g}, {x:g}] (y, x in pixels) lies more than a detector size outside the "
            f"{rows} x {cols} pixel detector (y within {-rows}..{2 * rows} and x within "
            f"{-cols}..{2 * cols} are accepted)")


def empty_windows(cal: Calibration) -> list[int]:
    """Indices of the mask entries whose I0/I1/I2 window ``[qStart, qStop)`` is empty
    (qStart = qStop, as the original's default 0, 0): their integral parameters are all 0.
    Valid, and what the original did, so callers warn rather than refuse (Phi-mode entries
    use the window to choose pixels, where 0..0 means all of them)."""
    return [m.index for m in cal.masks if m.q_start == m.q_stop and not m.phi_mode]


def _parse(raw: dict[str, Any], source: str, base_dir: Path | None,
           geometry_path: str = "$.Geometry") -> Calibration:
    geo = raw["Geometry"]
    distance = geo.get("DedectorDistanceMM", geo.get("DetectorDistanceMM"))
    if distance is None:
        raise CalibrationError(source, "$.Geometry", "'DedectorDistanceMM' is a required property")
    pixel = [float(v) for v in geo["PixelSizeMicroM"]]
    pixel_yx = (pixel[0], pixel[1] if len(pixel) > 1 else pixel[0])
    geometry = Geometry(
        beam_center_y=float(geo["BeamCenter"][0]),
        beam_center_x=float(geo["BeamCenter"][1]),
        distance_mm=float(distance),
        pixel_size_um=pixel_yx,
        image_shape=(int(geo["Imagesize"][0]), int(geo["Imagesize"][1])),
        tilt_angle_deg=float(geo["Tilt"]["TiltAngleDeg"]),
        tilt_rot_deg=float(geo["Tilt"]["TiltRotDeg"]),
        wavelength_a=float(raw["Wavelength"]),
    )
    _check_beam_center(geometry, source, geometry_path)
    masks = tuple(_parse_mask(m, i, source) for i, m in enumerate(raw["Masks"]))
    slices = tuple(_parse_slice(s, i, len(masks), source) for i, s in enumerate(raw.get("Slices", [])))
    pol = raw.get("PolarizationCorrection")
    return Calibration(
        geometry=geometry,
        masks=masks,
        slices=slices,
        polarization=Polarization(float(pol["Fraction"]), float(pol["Angle"])) if pol else None,
        gisaxs_mode=bool(raw.get("GISAXSmode", False)),
        directory=tuple(raw.get("Directory", ["."])),
        live_filelisting=bool(raw.get("Live-Filelisting", True)),
        overwrite_files=bool(raw.get("OverwriteFiles", True)),
        threads=int(raw.get("Threads", 2)),
        title=raw.get("Title"),
        error_model=str(raw.get("ErrorModel", "poisson")),
        intensity_definition=_definition(raw, source),
        dark=raw.get("Dark"),
        dark_exposures=int(raw.get("DarkExposures", 1)),
        flat=raw.get("Flat"),
        solid_angle=bool(raw.get("SolidAngle", False)),
        sensor=_parse_sensor(raw["Sensor"], geometry.wavelength_a, source) if "Sensor" in raw else None,
        raw=raw,
        base_dir=base_dir,
    )


def _definition(raw: dict[str, Any], source: str) -> str:
    given = [k for k in _CORRECTION_KEYS if k in raw and raw[k] is not False]
    definition = raw.get("IntensityDefinition")
    if definition is None:
        return SIGNAL_OVER_NORMALISATION if given else PIXEL_MEAN
    if definition == PIXEL_MEAN and given:
        raise CalibrationError(
            source, "$.IntensityDefinition",
            f"'{PIXEL_MEAN}' (the original's definition) has no {', '.join(given)}: "
            f"use '{SIGNAL_OVER_NORMALISATION}' or leave IntensityDefinition out")
    return str(definition)


def _parse_sensor(s: dict[str, Any], wavelength_a: float, source: str) -> Sensor:
    import xraydb  # 0.6 s to import: only for calibrations that name a sensor

    material, density = s["Material"], s.get("DensityGcm3")
    where = "$.Sensor.Material"
    if density is None and xraydb.find_material(material) is None:
        raise CalibrationError(
            source, where,
            f"unknown sensor material {material!r}: not in xraydb's materials list (use a name "
            "or formula of that list such as 'Si', 'CdTe', 'GaAs', or give DensityGcm3 with a "
            "chemical formula)")
    energy_ev = scipy.constants.h * scipy.constants.c / scipy.constants.e / (wavelength_a * 1e-10)
    try:
        mu = float(xraydb.material_mu(material, energy_ev, density=density, kind="photo"))
    except (ValueError, KeyError, ArithmeticError, Warning) as exc:
        raise CalibrationError(source, where,
                               f"xraydb cannot compute the absorption of {material!r} ({exc})") from None
    if not (math.isfinite(mu) and mu > 0):
        raise CalibrationError(source, where, f"{material!r} gives no absorption ({mu}) at {energy_ev:.0f} eV")
    return Sensor(str(material), float(s["ThicknessMicroM"]), mu,
                  None if density is None else float(density))


def _parse_mask(m: dict[str, Any], index: int, source: str) -> MaskConfig:
    where = f"$.Masks[{index}]"
    edges = m.get("RadialEdges")
    if edges is not None and any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise CalibrationError(source, f"{where}.RadialEdges", "bin edges must increase strictly")
    rng = m.get("RadialRange")
    if rng is not None and rng[1] <= rng[0]:
        raise CalibrationError(source, f"{where}.RadialRange", "q_max must be larger than q_min")
    if rng is not None and "RadialBins" not in m:
        raise CalibrationError(source, f"{where}.RadialBins", "RadialRange needs RadialBins")
    q_start, q_stop = float(m.get("qStart", 0.0)), float(m.get("qStop", 0.0))
    if q_stop < q_start:
        raise CalibrationError(source, f"{where}.qStop",
                               f"qStop ({q_stop:g}) is below qStart ({q_start:g})")
    wedges = m.get("Azimuth")
    if wedges is not None:
        wedges = tuple(_parse_wedge(w, f"{where}.Azimuth[{i}]", source) for i, w in enumerate(wedges))
    if "AzimuthBins" in m and m.get("Phi-mode", False):
        raise CalibrationError(source, f"{where}.AzimuthBins",
                               "a cake (AzimuthBins) cannot be combined with Phi-mode")
    return MaskConfig(
        mask_file=m["MaskFile"],
        oversampling=int(m.get("Oversampling", 3)),
        pixels_per_radial_element=float(m.get("PixelPerRadialElement", 1)),
        name=m.get("Name"),
        phi_mode=bool(m.get("Phi-mode", False)),
        q_start=q_start,
        q_stop=q_stop,
        radial_bins=m.get("RadialBins"),
        radial_range=tuple(map(float, rng)) if rng is not None else None,
        radial_edges=tuple(map(float, edges)) if edges is not None else None,
        pixel_splitting=m.get("PixelSplitting"),
        azimuth=wedges,
        azimuth_bins=m.get("AzimuthBins"),
        store_sums=bool(m.get("StoreSums", False)),
        index=index,
        raw=m,
    )


def _parse_wedge(w: list[float], where: str, source: str) -> tuple[float, float]:
    try:
        return check_wedge(w)
    except ValueError as exc:
        raise CalibrationError(source, where, str(exc)) from None


def _parse_slice(s: dict[str, Any], index: int, n_masks: int, source: str) -> SliceConfig:
    ref = int(s.get("MaskRef", 0))
    if ref >= n_masks:
        raise CalibrationError(
            source, f"$.Slices[{index}].MaskRef", f"{ref} is not an index into Masks (0..{n_masks - 1})"
        )
    return SliceConfig(
        direction=s["Direction"],
        plane=s["Plane"],
        cut_position=int(s["CutPosition"]),
        cut_margin=int(s.get("CutMargin", 1)),
        incident_angle_deg=float(s.get("IncidentAngle", 0.0)),
        mask_ref=ref,
        index=index,
        raw=s,
    )
