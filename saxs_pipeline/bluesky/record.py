"""A reduced run's record beside its outputs (``<run folder>/bluesky-run.json``): what a
restarted consumer needs to take the run up -- its start, its image streams, the files
of its frames and where their rows begin in the frame count -- and how it ended.

Written whole and replaced atomically (temporary file, ``os.replace``) whenever it grows:
once per run, stream and file, never per frame.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from saxs_pipeline.bluesky.documents import FileResource, ImageStream, RunStart

__all__ = ["RECORD", "RunRecord", "open_records"]

log = logging.getLogger(__name__)

RECORD = "bluesky-run.json"
FORMAT = "saxs_pipeline.bluesky-run/1"


@dataclass
class RunRecord:
    folder: Path
    start: RunStart
    streams: list[ImageStream] = field(default_factory=list)
    files: dict[str, tuple[FileResource, int | None]] = field(default_factory=dict)
    closed: str | None = None  # how the run ended; None while it is reduced

    @property
    def path(self) -> Path:
        return self.folder / RECORD

    def save(self) -> None:
        data = {"format": FORMAT, "start": asdict(self.start),
                "streams": [asdict(s) for s in self.streams],
                "files": [{"resource": asdict(r), "offset": o} for r, o in self.files.values()],
                "closed": self.closed}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{RECORD}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        data: dict[str, Any] = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: format {data.get('format')!r}, not {FORMAT!r}")
        streams = [ImageStream(**dict(s, shape=tuple(s["shape"]))) for s in data["streams"]]
        files = {f["resource"]["uid"]: (FileResource(**f["resource"]), f["offset"])
                 for f in data["files"]}
        return cls(path.parent, RunStart(**data["start"]), streams, files, data["closed"])


def open_records(work: Path) -> list[RunRecord]:
    """The records under ``work`` of runs that were being reduced (not closed)."""
    out = []
    for path in sorted(work.glob(f"*/{RECORD}")):
        try:
            record = RunRecord.load(path)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("run record %s cannot be read (%s); that run is not taken up", path, exc)
            continue
        if record.closed is None and record.streams:
            out.append(record)
    return out
