"""From an offered path to the frames it holds: one for a TIFF/CBF/EDF file, all frames
of an HDF5/NeXus file.

An EIGER/PILATUS4 series is a ``<name>_master.h5`` with ``<name>_data_NNNNNN.h5`` parts; an
event for a part (its close-write, in watch mode) stands for the master: the master's
frames are offered again, and the ledger takes those not yet done (frames of a part that
was still being written failed as incomplete and are taken again); a part whose master
is not there yet waits for the master. The frame count is read from the file's metadata
only.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from saxs_pipeline.frames.source import ImageError, ImageIncompleteError
from saxs_pipeline.pipeline.frames import CONTAINER_SUFFIXES, FrameRef, matches
from saxs_pipeline.pipeline.naming import OutputLayout

__all__ = ["Found", "FrameFinder"]

log = logging.getLogger(__name__)

_PART = re.compile(r"^(?P<stem>.+)_data_\d{6}\.(?:h5|hdf5|nxs)$", re.IGNORECASE)


@dataclass(frozen=True)
class Found:
    """The frames of one offered path, or why none could be listed."""

    path: str  # the file the frames are read from (the master for a series part)
    refs: tuple[FrameRef, ...] = ()
    error: str | None = None  # a file whose frames cannot be listed (reported once)


class FrameFinder:
    """See the module doc. ``dataset``: the 3-D dataset of plain HDF5 files."""

    def __init__(self, layout: OutputLayout, pattern: str, dataset: str | None = None) -> None:
        self.layout, self.pattern, self.dataset = layout, pattern, dataset

    def find(self, path: str) -> Found | None:
        """The frames of ``path``; None for a path outside the run or not matching."""
        source = self.layout.source(path)
        if source is None or not matches(source, self.pattern):
            return None
        if not source.lower().endswith(CONTAINER_SUFFIXES):
            return Found(path, (FrameRef.of(source),))
        m = _PART.match(os.path.basename(path))
        if m:
            master = Path(path).with_name(f"{m['stem']}_master.h5")
            if not master.exists():
                log.debug("%s: no master file yet; its frames come with the master", path)
                return Found(path)
            path, source = str(master), self.layout.source(master) or source
        from saxs_pipeline.frames.registry import frame_count

        try:
            n = frame_count(path, dataset=self.dataset)
        except ImageIncompleteError as exc:
            log.debug("%s: frames not countable yet (%s)", path, exc)
            return Found(path)  # its close-write comes later
        except (ImageError, OSError) as exc:
            return Found(path, error=str(exc))
        return Found(path, tuple(FrameRef(source, i, True) for i in range(n)))
