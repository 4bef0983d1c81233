"""From an offered path to the frames it holds: one for a TIFF/CBF/EDF file, all frames
of an HDF5/NeXus file.

An EIGER/PILATUS4 series is a ``<name>_master.h5`` with ``<name>_data_NNNNNN.h5`` parts; an
event for a part (its close-write, in watch mode) stands for the master: the master's
frames are offered again, and the ledger takes those not yet done (frames of a part that
was still being written failed as incomplete and are taken again); a part whose master
is not there yet waits for the master. The frame count is read from the file's metadata
only.

A file whose frames cannot be counted is not left out: a file still being written (or
truncated, or a master whose data files are missing, unreadable or linked outside the data
roots) offers the frames its metadata declare, else its frame 0 for the whole file, and the
workers' reads say per frame why they fail (incomplete ones are retried while the file
grows, a bounded number of times otherwise); once a frame 0 that stood in for its file is
read, the file's frames are listed (:meth:`FrameFinder.stood_in`). A file that is no frame
source at all is an error, recorded for its frame 0. A file whose chunks hold more frames
than one task takes is reported once as a slow layout: every worker decodes whole chunks.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
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
    """See the module doc. ``dataset``: the 3-D dataset of plain HDF5 files; ``roots``:
    where HDF5 links may lead besides the run's directory
    (:mod:`saxs_pipeline.frames.hdf5links`; :attr:`roots` holds both); ``task_frames``:
    the most frames a task takes."""

    def __init__(self, layout: OutputLayout, pattern: str, dataset: str | None = None,
                 roots: Sequence[str] = (), task_frames: int = 32) -> None:
        self.layout, self.pattern, self.dataset = layout, pattern, dataset
        self.roots = (str(layout.directory), *roots)
        self.task_frames = task_frames
        self._slow_reported = False
        self._stand_ins: set[str] = set()  # files offered as their frame 0 alone
        self._lock = threading.Lock()

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
        from saxs_pipeline.frames.registry import declared_frame_count, open_frames

        try:
            with open_frames(path, dataset=self.dataset, roots=self.roots) as src:
                n = src.frame_count()
                self._check_layout(path, src.chunk_frames)
        except (ImageError, OSError) as exc:
            n = declared_frame_count(path)
            if n is None and not isinstance(exc, ImageIncompleteError):
                return Found(path, error=str(exc))
            log.debug("%s: frames not readable (%s); %s offered", path, exc,
                      "frame 0" if n is None else f"the {n} frames declared")
            if n is None:
                with self._lock:
                    self._stand_ins.add(path)
                n = 1
        return Found(path, tuple(FrameRef(source, i, True) for i in range(n)))

    def stood_in(self, path: str) -> bool:
        """Whether frame 0 of ``path`` was offered for a file whose frames could not be
        counted (and is not any more: it has been read, so they can be)."""
        with self._lock:
            if path not in self._stand_ins:
                return False
            self._stand_ins.discard(path)
            return True

    def _check_layout(self, path: str, chunk_frames: int) -> None:
        if chunk_frames > self.task_frames and not self._slow_reported:
            self._slow_reported = True
            log.warning("%s: a slow layout: each chunk holds %d frames and a task takes at most "
                        "%d, so every worker decodes and holds whole chunks (%.0fx the frames "
                        "a task needs); chunks of one frame read fastest", path, chunk_frames,
                        self.task_frames, chunk_frames / self.task_frames)
