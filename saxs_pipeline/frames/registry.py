"""Frame sources: one interface from "a path" to "frames with their metadata".

A frame is addressed as ``(file, index)``; a file holds one frame (TIFF, most CBF/EDF) or
many (HDF5/NeXus: an EIGER/PILATUS4 ``*_master.h5`` with its ``*_data_NNNNNN.h5`` files,
or any HDF5 file with a 3-D dataset the caller names). :func:`open_frames` picks the reader
from the file's first bytes (``.tif``/``.tiff`` names always go to the TIFF reader, so
today's TIFF behaviour is unchanged):

* TIFF -- :func:`saxs_pipeline.frames.tiff.read_frame`, one frame per file;
* HDF5 -- :class:`saxs_pipeline.frames.hdf5.Hdf5Frames`;
* anything else -- fabio (CBF, EDF and its other formats),
  :class:`saxs_pipeline.frames.fabioformats.FabioFrames`.

Every source has the same members (:class:`FrameSource`): ``shape`` (rows, cols),
``dtype`` (the stored one; frames are returned in it), ``frame_count()``, ``chunk_frames``
(frames per storage chunk: task ranges starting at multiples of it read every chunk
once), ``read(start, stop)`` -> ``(n, rows, cols)`` array, ``metadata(start, stop)`` ->
one dict per frame, ``invalid_value`` and ``pixel_mask()``.

Metadata dicts always have ``"index"`` (the frame's index in the source), ``"date"`` (ISO
8601 or None) and ``"time"`` (Unix seconds or None), as TIFF headers do; the rest depends on
the format (the Pilatus header for TIFF and CBF, per-frame HDF5 datasets, ...).

Invalid pixels: ``invalid_value`` is the maximum of the dtype for unsigned integer data
(EIGER and PILATUS4 mark gaps and dead pixels with it; for other unsigned data it is a
saturated count, which cannot be trusted either) and None for signed or float data, whose
markers (Pilatus -1/-2) are negative. ``pixel_mask()`` is the detector's own mask where the
file has one (bool, True = bad), else None.

Errors: :class:`saxs_pipeline.frames.source.ImageIncompleteError` (or its subclass
:class:`FrameIncompleteError`) when the data are most likely still being written -- the
pipeline retries these -- and :class:`saxs_pipeline.frames.source.ImageError` for broken input.
Messages name the file and the frame index.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.frames.source import FrameIncompleteError, FrameSource, ImageError, PathLike
from saxs_pipeline.frames.tiff import TiffFrames

__all__ = ["HDF5_MAGIC", "TIFF_MAGICS", "declared_frame_count", "detect_format", "frame_count",
           "open_frames", "read_frames"]

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TIFF_SUFFIXES = (".tif", ".tiff")


def detect_format(path: PathLike) -> str:
    """``"tiff"``, ``"hdf5"`` or ``"fabio"`` for the file at ``path``.

    ``.tif``/``.tiff`` names are always ``"tiff"``; otherwise the first bytes decide. A file
    too short to hold a signature, whose bytes start one, is still being written:
    :class:`FrameIncompleteError`. A missing file is an ImageError.
    """
    source = os.fspath(path)
    if Path(source).suffix.lower() in _TIFF_SUFFIXES:
        return "tiff"
    try:
        with open(source, "rb") as fh:
            head = fh.read(len(HDF5_MAGIC))
    except FileNotFoundError:
        raise ImageError(f"frame {source} does not exist") from None
    except OSError as exc:
        raise ImageError(f"frame {source} cannot be opened ({exc.strerror})") from None
    if head[:4] in TIFF_MAGICS:
        return "tiff"
    if head == HDF5_MAGIC:
        return "hdf5"
    if len(head) < len(HDF5_MAGIC) and HDF5_MAGIC.startswith(head):
        raise FrameIncompleteError(source, f"only {len(head)} bytes, not yet an HDF5 signature", len(head))
    return "fabio"


def open_frames(
    path: PathLike, *, dataset: str | None = None, shape: tuple[int, int] | None = None,
    roots: Sequence[PathLike] | None = None,
) -> FrameSource:
    """The frame source for ``path`` (reader chosen as in the module doc).

    ``dataset`` names the 3-D (frames, rows, cols) dataset of a plain HDF5 file (default:
    EIGER master layout, else ``/entry/data/data``); it is an error for other formats.
    ``shape`` (the calibration's Imagesize) is checked against the declared frame shape
    before any pixel data are read. ``roots``: the directories HDF5 links may lead into
    (:mod:`saxs_pipeline.frames.hdf5links`; default: the file's own directory). Use it as
    a context manager.
    """
    kind = detect_format(path)
    if dataset is not None and kind != "hdf5":
        raise ImageError(f"{os.fspath(path)}: a dataset path is only meaningful for HDF5, not {kind}")
    if kind == "tiff":
        return TiffFrames(path, shape)
    if kind == "hdf5":
        from saxs_pipeline.frames.hdf5 import Hdf5Frames

        return Hdf5Frames(path, dataset=dataset, shape=shape, roots=roots)
    from saxs_pipeline.frames.fabioformats import FabioFrames

    return FabioFrames(path, shape=shape)


def frame_count(path: PathLike, *, dataset: str | None = None,
                roots: Sequence[PathLike] | None = None) -> int:
    """Number of frames in ``path``; reads no pixel data (except for a TIFF, read whole)."""
    with open_frames(path, dataset=dataset, roots=roots) as src:
        return src.frame_count()


def declared_frame_count(path: PathLike) -> int | None:
    """The frames ``path`` declares in its metadata alone (an EIGER/PILATUS4 master's
    ``nimages * ntrigger``), for a file whose frames cannot be opened; None when unknown."""
    try:
        kind = detect_format(path)
    except ImageError:
        return None
    if kind != "hdf5":
        return None
    from saxs_pipeline.frames.hdf5 import declared_frame_count as hdf5_declared

    return hdf5_declared(path)


def read_frames(
    path: PathLike,
    start: int = 0,
    stop: int | None = None,
    *,
    dataset: str | None = None,
    shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Frames ``[start, stop)`` of ``path`` (default: all) as one ``(n, rows, cols)`` array
    in the stored dtype, and their metadata dicts."""
    with open_frames(path, dataset=dataset, shape=shape) as src:
        stop = src.frame_count() if stop is None else stop
        return src.read(start, stop), src.metadata(start, stop)
