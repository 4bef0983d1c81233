"""Whether a Bluesky run can be reduced, and with what: its calibration, its frames'
size against it, the place of its files; and the start its reduced run is published
with. Each refusal is one error line naming the run, ending "not reduced"; the consumer
(:mod:`saxs_pipeline.bluesky.consumer`) then leaves the run alone and goes on."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from saxs_pipeline.bluesky.documents import RunStart
from saxs_pipeline.bluesky.geometry import (
    GeometryError,
    GeometryOptions,
    RunCalibration,
    run_calibration,
)
from saxs_pipeline.frames.hdf5links import outside_roots

__all__ = ["calibration_of", "frames_allowed", "frames_fit", "tiled_start"]

log = logging.getLogger("saxs_pipeline.bluesky.consumer")  # one logger for the consumer's lines


def calibration_of(start: RunStart, options: GeometryOptions) -> RunCalibration | None:
    """The run's calibration, or None (said) when it names none that can be used."""
    try:
        return run_calibration(start, options)
    except GeometryError as exc:
        log.error("run %s (%s): %s; not reduced", start.uid, start.name, exc)
        return None


def frames_fit(start: RunStart, calibration: RunCalibration, shape: tuple[int, int]) -> bool:
    """Whether the run's frames are the calibration's size (checked before any frame is
    read)."""
    from saxs_pipeline.config.calibschema import CalibrationError

    try:
        expected = calibration.parsed().geometry.image_shape
    except CalibrationError as exc:
        log.error("run %s (%s): calibration %s: %s; not reduced", start.uid, start.name,
                  calibration.source, exc)
        return False
    if tuple(expected) != tuple(shape):
        log.error("run %s (%s): frames of %dx%d, but Imagesize of %s is %s; not reduced",
                  start.uid, start.name, *shape, calibration.source, list(expected))
        return False
    return True


def frames_allowed(start: RunStart, path: str, roots: tuple[Path, ...] | None) -> bool:
    """Whether the frame file ``path`` lies in one of ``roots`` (None: anywhere). A
    server's roots: whoever sends its ``new`` chooses the proxy, and so the files."""
    if roots is None or outside_roots(path, tuple(os.path.realpath(r) for r in roots)) is None:
        return True
    log.error("run %s (%s): its frames are in %s, outside the base directory and the data "
              "roots (%s); not reduced", start.uid, start.name, path,
              ", ".join(str(r) for r in roots))
    return False


def tiled_start(start: RunStart, calibration: RunCalibration | None) -> dict[str, Any]:
    """What the reduced run's start in Tiled says of the raw run and its geometry."""
    extra: dict[str, Any] = {}
    if calibration is not None:
        extra["calibration_source"] = calibration.source  # "calibration" is the dict
        if calibration.override:
            extra["geometry_override"] = calibration.override
    return {"scan_id": start.scan_id, "raw_time": start.time, "name": start.name,
            "saxs_calibration": start.calibration, **extra}
