"""Bluesky documents checked and read into the small values the consumer works with.

Every document is validated against event-model's schema first; what cannot be used
raises :class:`~saxs_pipeline.bluesky.wire.DocumentError` naming the document (kind and
uid) and what is wrong with it.

* a start -> :class:`RunStart` (uid, scan id, the calibration named by ``saxs_calibration``,
  its numbers);
* a descriptor -> :class:`ImageStream` when it has the image field: the named one, or the
  first field whose shape has two or more dimensions; its last two are a frame's, the ones
  before (ophyd-async's leading 1) the frames per event;
* a stream_resource (ophyd-async) or resource (ophyd v1 areaDetector, ``AD_HDF5``) ->
  :class:`FileResource`: the HDF5 file on this host and its 3-D dataset.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import event_model

from saxs_pipeline.bluesky.wire import DocumentError

__all__ = ["FileResource", "ImageStream", "RunStart", "file_resource", "image_stream",
           "run_start", "validate", "what"]

CALIBRATION_KEY = "saxs_calibration"
HDF5_MIMETYPES = ("application/x-hdf5", "application/x-hdf5-swmr")  # ophyd-async writers
HDF5_SPECS = ("AD_HDF5", "AD_HDF5_SWMR", "AD_HDF5_SWMR_STREAM")  # areaDetector's HDF5 plugin
AD_DATASET = "/entry/data/data"  # where areaDetector's HDF5 plugin puts the frames


def what(name: str, doc: Any) -> str:
    """How a document is named in messages: its kind and uid (or datum id)."""
    uid = None
    if isinstance(doc, dict):
        uid = doc.get("uid") or doc.get("datum_id")
    return f"{name} document {str(uid)[:60]}" if uid else f"{name} document"


def validate(name: str, doc: dict[str, Any]) -> None:
    """Check ``doc`` against event-model's schema for ``name``."""
    try:
        validator = event_model.schema_validators[event_model.DocumentNames[name]]
    except KeyError:
        raise DocumentError(f"{what(name, doc)}: unknown kind of document") from None
    error = next(iter(validator.iter_errors(doc)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the document"
        raise DocumentError(f"{what(name, doc)}: {where}: {error.message[:200]}")


@dataclass(frozen=True)
class RunStart:
    uid: str
    scan_id: int | None
    time: float
    calibration: str | None  # the start's ``saxs_calibration``: a file or a calibration id
    # the start's numeric top-level metadata (energy, distance, ...): what overrides read
    metadata: dict[str, float] = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        """The run's name for its stack and folder: scan id and the uid's first part."""
        scan = f"scan{self.scan_id:05d}" if self.scan_id is not None else "run"
        return f"{scan}-{self.uid.split('-')[0][:8]}"


def run_start(doc: dict[str, Any]) -> RunStart:
    scan = doc.get("scan_id")
    cal = doc.get(CALIBRATION_KEY)
    if cal is not None and not isinstance(cal, str):
        raise DocumentError(f"{what('start', doc)}: {CALIBRATION_KEY} must be a path or a "
                            "calibration id, "
                            f"not {type(cal).__name__}")
    if not _safe_uid(doc["uid"]):
        raise DocumentError(f"{what('start', doc)}: a uid of letters, digits, '-' and '_' "
                            "is needed (it names the run's folder)")
    return RunStart(doc["uid"], int(scan) if isinstance(scan, int) and not isinstance(scan, bool)
                    else None, float(doc["time"]), cal,
                    {k: float(v) for k, v in doc.items() if isinstance(v, int | float)
                     and not isinstance(v, bool) and math.isfinite(v)})


def _safe_uid(uid: str) -> bool:
    return 0 < len(uid) <= 100 and all(c.isalnum() or c in "-_" for c in uid)


@dataclass(frozen=True)
class ImageStream:
    """The image field of one event stream (one descriptor)."""

    descriptor: str
    run: str
    stream: str
    field: str
    shape: tuple[int, int]  # rows, columns of a frame
    per_event: int  # frames per event
    external: str | None  # "STREAM:" (StreamDatum), "FILESTORE:" (Datum), None (filled)


def image_stream(doc: dict[str, Any], field: str | None) -> ImageStream | None:
    """The descriptor's image stream, None when it has no such field."""
    keys = doc["data_keys"]
    if field is None:
        field = next((k for k, v in keys.items() if len(v.get("shape") or ()) >= 2), None)
        if field is None:
            return None
    elif field not in keys:
        return None
    key = keys[field]
    shape = [int(n) if isinstance(n, int) else -1 for n in key.get("shape") or ()]
    if len(shape) < 2:
        return None  # the field is there, but not frames: as if it were not
    if min(shape) < 1:
        raise DocumentError(f"{what('descriptor', doc)}: field {field!r} has shape {shape}, "
                            "not that of frames (rows, columns)")
    external = key.get("external")
    return ImageStream(doc["uid"], doc["run_start"], str(doc.get("name") or "primary"), field,
                       (shape[-2], shape[-1]), math.prod(shape[:-2]),
                       external.split(":")[0] + ":" if external else None)


@dataclass(frozen=True)
class FileResource:
    """Frames in an HDF5 file: a StreamResource's or a Resource's."""

    uid: str
    run: str | None
    data_key: str | None  # a StreamResource names its field; a Resource does not
    path: str
    dataset: str
    per_point: int = 1  # a Resource's frame_per_point (rows per datum)


def file_resource(name: str, doc: dict[str, Any]) -> FileResource:
    """The file a stream_resource or resource names; DocumentError when it is not an
    HDF5 file on this host."""
    if name == "stream_resource":
        if doc.get("mimetype") not in HDF5_MIMETYPES:
            raise DocumentError(f"{what(name, doc)}: mimetype {doc.get('mimetype')!r} is not "
                                f"read (only {', '.join(HDF5_MIMETYPES)})")
        url = urlparse(doc["uri"])
        if url.scheme != "file" or url.netloc not in ("", "localhost"):
            raise DocumentError(f"{what(name, doc)}: uri {doc['uri']!r} is not a file on this "
                                "host (file://localhost/...)")
        params = doc.get("parameters") or {}
        return FileResource(doc["uid"], doc.get("run_start"), doc.get("data_key"),
                            unquote(url.path), str(params.get("dataset") or AD_DATASET))
    if doc.get("spec") not in HDF5_SPECS:
        raise DocumentError(f"{what(name, doc)}: spec {doc.get('spec')!r} is not read "
                            f"(only {', '.join(HDF5_SPECS)})")
    kwargs = doc.get("resource_kwargs") or {}
    per_point = kwargs.get("frame_per_point", 1)
    if not isinstance(per_point, int) or not 1 <= per_point <= 100_000:
        raise DocumentError(f"{what(name, doc)}: frame_per_point {per_point!r}")
    path = os.path.join(doc.get("root") or "", doc["resource_path"])
    if not os.path.isabs(path):
        raise DocumentError(f"{what(name, doc)}: {path!r} is not an absolute path")
    return FileResource(doc["uid"], doc.get("run_start"), None, path, AD_DATASET, per_point)
