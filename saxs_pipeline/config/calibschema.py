"""What a calibration must look like before it is parsed
(:mod:`saxs_pipeline.config.calibration` parses it): the shipped JSON schema, validation
against it, finite numbers, and the old flat form of the 2014 manual mapped onto the
nested one. Every error names the file and the JSON path that is wrong.
"""

from __future__ import annotations

import copy
import json
import math
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

__all__ = ["CalibrationError", "check_finite", "flat_to_nested", "is_flat", "schema", "validate"]


class CalibrationError(ValueError):
    """A calibration that does not validate; the message names the JSON path."""

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source, self.path, self.reason = source, path, message
        super().__init__(f"{source}: {path}: {message}")


@cache
def schema(form: str = "nested") -> dict[str, Any]:
    """The shipped JSON schema of the calibration (``"nested"`` or ``"flat"``)."""
    name = "calibration.schema.json" if form == "nested" else "calibration-flat.schema.json"
    text = resources.files("saxs_pipeline.config").joinpath("schemas", name).read_text()
    return json.loads(text)


_FLAT_KEYS = {"Tilt", "BeamCenter", "Imagesize", "MaskFile"}


def is_flat(config: dict[str, Any]) -> bool:
    return "Geometry" not in config and bool(_FLAT_KEYS & config.keys())


def flat_to_nested(flat: dict[str, Any]) -> dict[str, Any]:
    """Map the 2014 flat form onto the nested form (as the original converter did, but
    keeping the root Title)."""
    geometry: dict[str, Any] = {}
    for key in ("Tilt", "BeamCenter", "DedectorDistanceMM", "DetectorDistanceMM",
                "PixelSizeMicroM", "Imagesize"):
        if key in flat:
            geometry[key] = copy.deepcopy(flat[key])
    mask: dict[str, Any] = {"MaskFile": flat["MaskFile"]}
    for key in ("Oversampling", "PixelPerRadialElement"):
        if key in flat:
            mask[key] = flat[key]
    nested: dict[str, Any] = {}
    if "Title" in flat:
        nested["Title"] = flat["Title"]
    nested.update({"Geometry": geometry, "Wavelength": flat["Wavelength"], "Masks": [mask]})
    if "PolarizationCorrection" in flat:
        nested["PolarizationCorrection"] = copy.deepcopy(flat["PolarizationCorrection"])
    return nested


def check_finite(value: Any, source: str, path: str = "$") -> None:
    """JSON allows NaN and Infinity (Python writes and reads them) and the schema's
    number bounds let them through; no calibration value may be one."""
    if isinstance(value, float) and not math.isfinite(value):
        raise CalibrationError(source, path, f"{value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, source, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite(v, source, f"{path}[{i}]")


def validate(config: Any, form: str, source: str) -> None:
    validator = jsonschema.Draft202012Validator(schema(form))
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        # The deepest, first error is the most specific one to show.
        err = jsonschema.exceptions.best_match(errors)
        raise CalibrationError(source, err.json_path, err.message)
