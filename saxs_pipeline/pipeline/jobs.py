"""A frame on its way through the dispatcher."""

from __future__ import annotations

from dataclasses import dataclass

from saxs_pipeline.pipeline.frames import Fingerprint, FrameRef
from saxs_pipeline.pipeline.tasktypes import FrameTask

__all__ = ["Job"]


@dataclass(eq=False)
class Job:
    """One frame on its way: where it is read, where its outputs go, its stack row from
    an earlier integration (updated in place) and its retry state."""

    ref: FrameRef
    path: str
    output: str
    row: int | None = None
    fingerprint: Fingerprint | None = None  # of the file when taken
    payload: bytes | None = None  # a stream frame's message (no file to read)
    file_index: int | None = None  # the frame's row in ``path`` when not ``ref.index``
    image_time: float | None = None  # when the source knows it and the file does not
    attempt: int = 1
    stalls: int = 0
    last_size: int = -1
    again: bool = False  # offered anew (changed) while in flight: run once more after

    def task(self) -> FrameTask:
        index = self.ref.index if self.file_index is None else self.file_index
        return FrameTask(self.path, self.output, index)
