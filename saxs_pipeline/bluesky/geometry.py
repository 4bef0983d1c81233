"""The geometry a Bluesky run is reduced with.

The calibration is the one the run's start names in ``saxs_calibration`` -- a file path,
or a calibration id: the stem of a JSON file in the consumer's calibration folder
(``--calibrations DIR``; ``"saxs-15keV"`` is ``DIR/saxs-15keV.json``) -- else the
consumer's default (``-c``, or the calibration of the server's ``new``). A value without
``/`` and without the ``.json`` suffix is an id, anything else a path.

Opt-in overrides (``--bluesky-override energy=KEY,distance=KEY``) take the beam energy
(keV) and the sample-detector distance (mm) from the start's metadata: they replace the
calibration's ``Wavelength`` (Å, λ = hc/E with CODATA's h, c and e) and
``Geometry.DedectorDistanceMM``, and ``GeometryOverride`` records what was replaced and
from which key, so the stack's calibration attributes and the ``.chi`` headers say which
geometry was used. Without the option such metadata is ignored.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the server's command line reads the overrides without event-model
    from saxs_pipeline.bluesky.documents import RunStart

__all__ = ["GeometryError", "GeometryOptions", "RunCalibration", "parse_overrides",
           "run_calibration", "wavelength_a"]

OVERRIDABLE = ("energy", "distance")  # keV, mm
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class GeometryError(ValueError):
    """The run's calibration cannot be had; the message names the run's value."""


def wavelength_a(energy_kev: float) -> float:
    """The X-ray wavelength in Å of photons of ``energy_kev``."""
    from scipy.constants import c, e, h

    return h * c / (1e3 * e) * 1e10 / energy_kev  # hc = 12.398... keV·Å


def parse_overrides(text: str | None) -> tuple[tuple[str, str], ...]:
    """``"energy=mono_energy,distance"`` -> ``(("energy", "mono_energy"), ("distance",
    "distance"))``: what is overridden, from which start-metadata key (default: its name)."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        what, _, key = (p.strip() for p in item.partition("="))
        if what not in OVERRIDABLE:
            raise ValueError(f"--bluesky-override {item!r}: {what!r} cannot be overridden "
                             f"(only {', '.join(OVERRIDABLE)})")
        out[what] = key or what
    return tuple(out.items())


@dataclass(frozen=True)
class GeometryOptions:
    default: Path | Mapping[str, Any] | None = None  # runs whose start names none
    attachments: tuple[Mapping[str, Any], ...] | None = None  # the default's masks, if sent
    library: Path | None = None  # the calibration folder: ids are its files' stems
    overrides: tuple[tuple[str, str], ...] = ()  # (energy|distance, start-metadata key)


@dataclass(frozen=True)
class RunCalibration:
    """What :class:`~saxs_pipeline.pipeline.queue.ImageQueue` takes (a file, or a dict and
    its mask attachments), where it came from, and the overrides applied."""

    calibration: Path | dict[str, Any]
    attachments: list[dict[str, Any]] | None
    source: str  # the file, the id, or "the server's calibration"
    override: dict[str, Any]

    def parsed(self) -> Any:
        from saxs_pipeline.config.calibration import load_calibration

        cal = self.calibration
        return load_calibration(cal if isinstance(cal, Path) else copy.deepcopy(cal))


def _named(start: RunStart, options: GeometryOptions) -> tuple[Path | Mapping[str, Any], str]:
    named = start.calibration
    if not named:
        if options.default is None:
            raise GeometryError("no calibration (the start document has no saxs_calibration "
                                "and no default calibration was given)")
        default = options.default
        return default, str(default) if isinstance(default, Path) else "the server's calibration"
    if "/" in named or named.endswith(".json"):
        path = Path(named)
        if not path.is_file():
            raise GeometryError(f"calibration {path} does not exist")
        return path, str(path)
    if options.library is None:
        raise GeometryError(f"saxs_calibration {named!r} is a calibration id, but no "
                            "calibration folder was given (--calibrations DIR)")
    if not _ID.match(named):
        raise GeometryError(f"saxs_calibration {named!r} is neither a path nor a calibration id")
    path = options.library / f"{named}.json"
    if not path.is_file():
        known = sorted(p.stem for p in options.library.glob("*.json"))[:20]
        raise GeometryError(f"calibration id {named!r} is not in {options.library} "
                            f"(known: {', '.join(known) or 'none'})")
    return path, f"{named} ({path})"


def _metadata_value(start: RunStart, key: str, what: str, unit: str) -> float:
    value = start.metadata.get(key)  # the start's numbers only
    if value is None:
        raise GeometryError(f"the {what} is taken from the start's {key!r}, which is missing "
                            "or not a number")
    if not math.isfinite(value) or value <= 0:
        raise GeometryError(f"the start's {key!r} = {value!r}: the {what} in {unit} must be "
                            "> 0")
    return float(value)


def _absolute_files(raw: dict[str, Any], base: Path) -> None:
    """Files the calibration names relative to its own folder, made absolute: the derived
    calibration is a dict, read without that folder."""
    def absolute(name: str) -> str:
        p = Path(name).expanduser()
        return str(p if p.is_absolute() else base / p)

    for key in ("Dark", "Flat"):
        if isinstance(raw.get(key), str):
            raw[key] = absolute(raw[key])
    for spec in (raw.get("Normalisation") or {}).values():
        if isinstance(spec, dict) and isinstance(spec.get("Table"), str):
            spec["Table"] = absolute(spec["Table"])


def run_calibration(start: RunStart, options: GeometryOptions) -> RunCalibration:
    """The run's calibration, overrides applied; :class:`GeometryError` when there is none
    or the metadata the overrides need is missing or not a positive number."""
    from saxs_pipeline.plugins.worker import load_payload

    cal, source = _named(start, options)
    attachments = None if isinstance(cal, Path) or options.attachments is None else \
        [dict(a) for a in options.attachments]
    if not options.overrides:
        return RunCalibration(cal if isinstance(cal, Path) else copy.deepcopy(dict(cal)),
                              attachments, source, {})
    values = {what: (key, _metadata_value(start, key, *(
        ("energy", "keV") if what == "energy" else ("distance", "mm"))))
        for what, key in options.overrides}
    try:
        raw, masks = load_payload(cal if isinstance(cal, Path) else dict(cal), attachments)
    except (OSError, ValueError) as exc:  # a CalibrationError or MaskError is a ValueError
        raise GeometryError(f"calibration {source}: {exc}") from None
    raw = copy.deepcopy(raw)
    if isinstance(cal, Path):
        _absolute_files(raw, cal.absolute().parent)
    record: dict[str, Any] = {"Calibration": source}
    if "energy" in values:
        key, energy = values["energy"]
        record["Wavelength"] = {"Calibration": raw["Wavelength"], "EnergyKeV": energy,
                                "FromMetadata": key}
        raw["Wavelength"] = wavelength_a(energy)
    if "distance" in values:
        key, distance = values["distance"]
        geo = raw["Geometry"]
        name = "DetectorDistanceMM" if "DetectorDistanceMM" in geo else "DedectorDistanceMM"
        record[name] = {"Calibration": geo[name], "FromMetadata": key}
        geo[name] = distance
    raw["GeometryOverride"] = record
    return RunCalibration(raw, masks, source, record)
