"""Reading a task's frames on the worker: consecutive frames of one file through one open
source (:mod:`saxs_pipeline.frames.registry`: TIFF, HDF5/NeXus, CBF/EDF), or stream frames
from their messages, with what the engine must exclude and how many non-finite pixels a
float frame holds."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from saxs_pipeline.frames.source import ImageError, ImageIncompleteError

if TYPE_CHECKING:
    from saxs_pipeline.integrator import Integrator
    from saxs_pipeline.pipeline.tasktypes import FrameResult, FrameTask, TaskOptions

__all__ = ["Loaded", "decode_stream", "nonfinite", "ranges", "read_run"]


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


def read_run(run: list[FrameTask], integ: Integrator, options: TaskOptions,
             results: list[FrameResult], size: int) -> Iterator[Loaded]:
    """The frames of one run (consecutive frames of one file), ``size`` at a time, through
    one open source (a chunk of many frames is decoded once, not once per group: the
    reader keeps the block it read last). A frame that cannot be read has its result say why (incomplete: retried by the
    driver; error: reported) and is left out; a chunk that cannot be read fails only its
    own frames."""
    from saxs_pipeline.frames.registry import open_frames

    try:
        src = open_frames(run[0].path, dataset=options.dataset, shape=integ.shape,
                          roots=options.data_roots or None)
    except (ImageError, OSError) as exc:
        _failed(results, exc)
        return
    with src:
        for i in range(0, len(run), size):
            loaded = _read_group(src, integ, run[i : i + size], results[i : i + size])
            if loaded is not None:
                yield loaded


def _failed(results: Sequence[FrameResult], exc: Exception) -> None:
    for r in results:
        if isinstance(exc, ImageIncompleteError):
            r.status, r.error, r.size = "incomplete", str(exc), exc.present
        else:
            r.status, r.error = "error", str(exc)


def _read_group(src: Any, integ: Integrator, group: list[FrameTask],
                results: list[FrameResult]) -> Loaded | None:
    path, start, stop = group[0].path, group[0].index, group[-1].index + 1
    frames: list[np.ndarray | None] = []
    k = max(int(src.chunk_frames), 1)
    lo = start
    try:
        meta = src.metadata(start, stop)
        while lo < stop:  # a chunk at a time: a whole chunk comes back as decoded, no copy
            hi = min(stop, (lo // k + 1) * k)
            try:
                frames.extend(src.read(lo, hi))
            except (ImageError, OSError) as exc:
                _failed(results[lo - start : hi - start], exc)
                frames.extend([None] * (hi - lo))
            lo = hi
        read = [i for i, f in enumerate(frames) if f is not None]
        images = _apply_pixel_mask(integ, path, src, [frames[i] for i in read])
        st = os.stat(path)
    except (ImageError, OSError) as exc:
        _failed([r for r in results if r.status == "ok"], exc)
        return None
    if not read:
        return None
    for i, image in zip(read, images, strict=True):
        results[i].fingerprint = (st.st_size, st.st_mtime_ns)
        results[i].image_time = meta[i].get("time")
        results[i].nonfinite_pixels = nonfinite(image)
    return Loaded([group[i] for i in read], [results[i] for i in read], images,
                  src.invalid_value, [meta[i] for i in read])


def nonfinite(image: np.ndarray) -> int:
    """How many pixels of ``image`` are +inf, -inf or NaN (0 for integer frames); the
    engine excludes them as it excludes invalid pixels."""
    if image.dtype.kind not in "fc":
        return 0
    return int(image.size - np.count_nonzero(np.isfinite(image)))


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
        res.nonfinite_pixels = nonfinite(msg.array)
        tasks.append(task)
        kept.append(res)
        images.append(msg.array)
        meta.append(dict(msg.metadata, index=msg.image_number))
    invalid = invalid_value_for(images[0].dtype) if images else None
    return Loaded(tasks, kept, images, invalid, meta)
