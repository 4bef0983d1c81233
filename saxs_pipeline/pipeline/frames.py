"""Frame references: the small values that travel from a source through the ledger and
the dispatcher to a worker task and back.

A frame is addressed as (source, index): ``source`` is the file's path relative to the
run's directory with ``/`` separators (unique within a run, unlike a bare file name) and
``index`` the frame's position in a multi-frame file (0 for a single-frame TIFF). Stream
images are frames of ``stream/<series>``, indexed by image number.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field

__all__ = ["CONTAINER_SUFFIXES", "STREAM_PREFIX", "Fingerprint", "FrameAt", "FrameRef",
           "FrameSpan", "fingerprint", "matches", "stream_series"]

# Files that hold many frames (HDF5/NeXus); every other format holds one frame per file.
CONTAINER_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".cxi")
STREAM_PREFIX = "stream/"  # the source of a stream series' frames: stream/<series>


@dataclass(frozen=True, order=True)
class FrameRef:
    """One frame of a run. ``container`` marks frames of multi-frame files (their outputs
    are named ``<stem>_<index:06d>``); it is not part of the identity."""

    source: str
    index: int = 0
    container: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        return f"{self.source}#{self.index}" if self.container else self.source

    @classmethod
    def of(cls, source: str, index: int = 0) -> FrameRef:
        """The frame ``index`` of ``source``, a container when the format holds many."""
        return cls(source, int(index), source.lower().endswith(CONTAINER_SUFFIXES))


@dataclass(frozen=True)
class FrameSpan:
    """Frames ``start`` .. ``stop - 1`` of ``source``, held as one range however many they
    are: the images of a stream series that never arrived."""

    source: str
    start: int
    stop: int

    @property
    def count(self) -> int:
        return self.stop - self.start


def stream_series(source: str) -> str | None:
    """The series of a stream frame's source, None for a file's."""
    return source[len(STREAM_PREFIX):] if source.startswith(STREAM_PREFIX) else None


@dataclass(frozen=True)
class FrameAt:
    """A frame whose file and position the source knows (a Bluesky run's frames: the
    ledger keys them by ``ref``, (stream, frame index), while the worker reads row
    ``index`` of ``path``); ``time``: when it was taken (Unix seconds), if known."""

    ref: FrameRef
    path: str
    index: int
    time: float | None = None


@dataclass(frozen=True)
class Fingerprint:
    """What tells a rewritten file from the one integrated before: size and mtime."""

    size: int
    mtime_ns: int


def fingerprint(path: str | os.PathLike[str]) -> Fingerprint | None:
    """The fingerprint of the file at ``path``, None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return Fingerprint(st.st_size, st.st_mtime_ns)


def matches(path: str, pattern: str) -> bool:
    """Whether ``path``'s file name matches the glob ``pattern``, ignoring case (a detector
    writing ``UPPER.TIF`` is as common as ``lower.tif``). Hidden files never match: atomic
    writers use hidden temporary names."""
    name = os.path.basename(path)
    return not name.startswith(".") and fnmatch.fnmatch(name.lower(), pattern.lower())
