"""Frames that came inside events (filled events) written to files of the run's own,
so the workers read them as they read a detector's HDF5 and a restarted consumer still
finds them: ``<run folder>/filled/<stream>_<first frame index>.h5``, one per event,
written under a hidden name and renamed when complete."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from saxs_pipeline.bluesky.documents import AD_DATASET
from saxs_pipeline.pipeline.frames import FrameAt, FrameRef

__all__ = ["spool"]


def spool(folder: Path, stream: str, first: int, time: float, array: np.ndarray) -> list[FrameAt]:
    """Write ``array`` (n, rows, cols) and return its frames, indices ``first`` on."""
    target = folder / "filled" / f"{stream}_{first:06d}.h5"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset(AD_DATASET, data=array, chunks=(1, *array.shape[1:]))
    os.replace(tmp, target)
    return [FrameAt(FrameRef(stream, first + k, True), str(target), k, time)
            for k in range(array.shape[0])]
