"""What following a Bluesky run calls for, as small values from the run tracker
(:mod:`saxs_pipeline.bluesky.runs`) to the consumer (:mod:`saxs_pipeline.bluesky.consumer`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saxs_pipeline.bluesky.documents import FileResource, ImageStream, RunStart
from saxs_pipeline.pipeline.frames import FrameAt

__all__ = ["Action", "Closed", "Filled", "Located", "Opened", "Resourced"]


@dataclass(frozen=True)
class Opened:
    """A run with an image stream: it is reduced."""

    start: RunStart
    stream: ImageStream


@dataclass(frozen=True)
class Resourced:
    """A file of a reduced run's frames (kept in the run's record for a restart)."""

    run: str
    resource: FileResource
    offset: int | None  # frame index minus row, once known


@dataclass(frozen=True)
class Located:
    run: str
    dataset: str
    frames: list[FrameAt]


@dataclass(frozen=True)
class Filled:
    """Frames that came in the event: ``array`` is (n, rows, cols), frame indices from
    ``first`` on."""

    run: str
    stream: str
    first: int
    time: float
    array: np.ndarray


@dataclass(frozen=True)
class Closed:
    run: str
    how: str
    clean: bool  # a stop document ended it
    reduced: bool  # it had an image stream


Action = Opened | Resourced | Located | Filled | Closed
