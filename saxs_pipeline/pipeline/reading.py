"""Reading a task's frames on the worker: consecutive frames of one file as one range
(:mod:`saxs_pipeline.frames.registry`: TIFF, HDF5/NeXus, CBF/EDF), or stream frames from their
messages, with what the engine must exclude."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from saxs_pipeline.frames.source import ImageError, ImageIncompleteError

if TYPE_CHECKING:
    from saxs_pipeline.integrator import Integrator
    from saxs_pipeline.pipeline.tasktypes import FrameResult, FrameTask

__all__ = ["Loaded", "decode_stream", "ranges", "read_range"]


@dataclass
class Loaded:
    """Frames ready to integrate: the tasks, their results so far, their images and the
    value marking invalid pixels (None: only negative and NaN pixels are excluded)."""

    tasks: list[FrameTask]
    results: list[FrameResult]
    images: list[np.ndarray]
    invalid: float | None
    meta: list[dict[str, Any]]  # per frame: the header / per-frame datasets
    scales: list[float] = field(default_factory=list)  # per frame: normalisation multipliers

    def joined(self, other: Loaded) -> Loaded:
        """Both sets of frames, this one's first (same ``invalid``)."""
        return Loaded(self.tasks + other.tasks, self.results + other.results,
                      self.images + other.images, self.invalid, self.meta + other.meta,
                      self.scales + other.scales)


def ranges(frames: Sequence[FrameTask]) -> list[list[FrameTask]]:
    """Runs of consecutive frames of one file."""
    out: list[list[FrameTask]] = []
    for t in frames:
        last = out[-1][-1] if out else None
        if last is not None and last.path == t.path and t.index == last.index + 1:
            out[-1].append(t)
        else:
            out.append([t])
    return out


def read_range(group: list[FrameTask], integ: Integrator, dataset: str | None,
               results: list[FrameResult]) -> Loaded | None:
    """Read one run of frames; on failure every frame's result says why (incomplete:
    retried by the driver; error: reported) and None is returned."""
    from saxs_pipeline.frames.registry import open_frames

    path = group[0].path
    try:
        with open_frames(path, dataset=dataset, shape=integ.shape) as src:
            images = _read_chunks(src, group[0].index, group[-1].index + 1)
            meta = src.metadata(group[0].index, group[-1].index + 1)
            invalid = src.invalid_value
            images = _apply_pixel_mask(integ, path, src, images)
        st = os.stat(path)
    except ImageIncompleteError as exc:
        for r in results:
            r.status, r.error, r.size = "incomplete", str(exc), exc.present
        return None
    except (ImageError, OSError) as exc:
        for r in results:
            r.status, r.error = "error", str(exc)
        return None
    for r, m in zip(results, meta, strict=True):
        r.fingerprint = (st.st_size, st.st_mtime_ns)
        r.image_time = m.get("time")
    return Loaded(list(group), list(results), images, invalid, list(meta))


def _read_chunks(src: Any, start: int, stop: int) -> list[np.ndarray]:
    """Frames ``[start, stop)`` one chunk at a time: a whole chunk comes back as decoded,
    where one read of the range would copy every frame into a new block (for 4 Mpx EIGER
    frames 18 MB of copying and of fresh pages per frame)."""
    k = max(int(src.chunk_frames), 1)
    images: list[np.ndarray] = []
    lo = start
    while lo < stop:
        hi = min(stop, (lo // k + 1) * k)
        images.extend(src.read(lo, hi))
        lo = hi
    return images


# (integrator id, file) -> flat indices of the file's bad pixels the calibration lets through
_MASK_EXTRA: dict[tuple[int, str], np.ndarray | None] = {}


def _apply_pixel_mask(integ: Integrator, path: str, src: Any,
                      images: list[np.ndarray]) -> list[np.ndarray]:
    """Mark the file's bad pixels (its own pixel mask) that the calibration's mask lets
    through as invalid. A calibration made by ``saxsconverter`` from the master file
    covers them all, and then nothing is copied. Checked once per file."""
    key = (id(integ), path)
    if key not in _MASK_EXTRA:
        mask = src.pixel_mask()
        extra = None
        if mask is not None and src.invalid_value is not None:
            used = np.zeros(mask.size, bool)
            for op in integ.operators:
                if op is not None:
                    used |= op.valid
            hit = np.flatnonzero(mask.ravel() & used)
            extra = hit if hit.size else None
        if len(_MASK_EXTRA) > 256:
            _MASK_EXTRA.clear()
        _MASK_EXTRA[key] = extra
    extra = _MASK_EXTRA[key]
    if extra is None:
        return images
    marked = []
    for image in images:
        image = np.array(image)  # a decoded chunk may be read-only
        image.reshape(-1)[extra] = src.invalid_value
        marked.append(image)
    return marked


def decode_stream(frames: Sequence[FrameTask], payloads: Sequence[bytes], integ: Integrator,
                  results: list[FrameResult]) -> Loaded:
    """Stream frames from their (compressed) messages, decoded here on the worker; an
    image of another shape than the calibration's Imagesize fails before it is
    decompressed."""
    from saxs_pipeline.frames.source import invalid_value_for
    from saxs_pipeline.stream.codec import StreamDecodeError, decode_message
    from saxs_pipeline.stream.messages import ImageMessage

    tasks, kept, images, meta = [], [], [], []
    for task, payload, res in zip(frames, payloads, results, strict=True):
        try:
            msg = decode_message(payload, integ.shape)
            if not isinstance(msg, ImageMessage):
                raise StreamDecodeError(f"a {type(msg).__name__} where an image was expected")
        except ValueError as exc:
            res.status, res.error = "error", str(exc)
            continue
        res.image_time = msg.metadata.get("start_time")
        tasks.append(task)
        kept.append(res)
        images.append(msg.array)
        meta.append(dict(msg.metadata, index=msg.image_number))
    invalid = invalid_value_for(images[0].dtype) if images else None
    return Loaded(tasks, kept, images, invalid, meta)
