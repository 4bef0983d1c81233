"""HDF5/NeXus frame sources: EIGER/PILATUS4 master files and plain 3-D datasets.

Two layouts are read (see :mod:`saxs_pipeline.frames.registry` for the interface):

* **DECTRIS master** (``*_master.h5``): ``/entry/data/data_000001``, ``data_000002`` ...
  are (external) links to ``(n, rows, cols)`` datasets, usually ``/entry/data/data`` in
  ``*_data_000001.h5`` ...; frame ``i`` of the series is frame ``i - offset`` of its part.
  Link targets with relative names resolve against the master's directory. A part whose
  file does not exist yet, or is still open for writing, raises
  :class:`~saxs_pipeline.frames.source.FrameIncompleteError` for its frames only; its frame
  count is taken to be that of the first part (DECTRIS fills every data file but the last).
* **Plain file**: a dataset named by the caller (default ``/entry/data/data``) of shape
  ``(frames, rows, cols)``, or ``(rows, cols)`` as one frame.

Pixel data are read a block at a time: the frames of one chunk (all its tiles), by direct
chunk read where :mod:`saxs_pipeline.frames.hdf5chunks` decodes the filters (the DECTRIS
bitshuffle-LZ4 among them: faster than h5py's filter pipeline, see ``benchmarks/readers.py``,
and safe on corrupt chunks), else through h5py; every chunk's stored size is checked
before it is read. The block read last is kept (for the whole process), so a chunk of many
frames is decoded once for all the ranges read from it, not once per range or task.

Links (external links, virtual dataset sources) are followed only into the data roots
(:mod:`saxs_pipeline.frames.hdf5links`); a part linked elsewhere fails its frames.

Per-frame metadata (:meth:`Hdf5Frames.metadata`): :mod:`saxs_pipeline.frames.hdf5meta`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters with HDF5)
import numpy as np

from saxs_pipeline.frames.hdf5chunks import Chunking, chunking, file_identity, read_block
from saxs_pipeline.frames.hdf5links import check_dataset, data_roots, link_target, outside_roots
from saxs_pipeline.frames.hdf5meta import DETECTOR, FrameMetadata
from saxs_pipeline.frames.source import (
    FrameIncompleteError,
    ImageError,
    check_range,
    check_shape,
    invalid_value_for,
)

__all__ = ["Hdf5Frames", "declared_frame_count", "open_hdf5"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

_DATA_GROUP = "/entry/data"
_DEFAULT_DATASET = "/entry/data/data"
_PIXEL_MASKS = (f"{DETECTOR}/detectorSpecific/pixel_mask",)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def open_hdf5(path: PathLike) -> h5py.File:
    """Open an HDF5 file read-only; a file still being written raises FrameIncompleteError
    (unless its writer is in SWMR mode: then it is opened as a SWMR reader and shows the
    frames flushed so far), one that is missing or no HDF5 file an ImageError
    (FileNotFoundError passes through)."""
    source = os.fspath(path)
    try:
        return h5py.File(source, "r")
    except FileNotFoundError:
        raise
    except OSError as exc:
        text = str(exc)
        if "already open for write" in text:
            try:  # a writer in SWMR mode (ophyd-async detectors) lets SWMR readers in
                return h5py.File(source, "r", swmr=True)
            except OSError:
                pass
        size = _size(source)
        if isinstance(exc, BlockingIOError) or "lock file" in text or "already open for write" in text:
            raise FrameIncompleteError(source, "the file is still open for writing", size) from None
        if "truncated file" in text:
            raise FrameIncompleteError(source, f"the file is shorter than it declares ({text})", size) from None
        raise ImageError(f"{source} is not a readable HDF5 file ({text})") from None


def _declared(fh: h5py.File) -> int | None:
    """Frames a DECTRIS master declares (``nimages * ntrigger``), None if it does not."""
    spec = fh.get(f"{DETECTOR}/detectorSpecific")
    if not isinstance(spec, h5py.Group) or "nimages" not in spec:
        return None
    ntrigger = int(spec["ntrigger"][()]) if "ntrigger" in spec else 1
    return int(spec["nimages"][()]) * max(ntrigger, 1)


def declared_frame_count(path: PathLike) -> int | None:
    """The frames the file at ``path`` declares without any of them being read (a DECTRIS
    master's ``nimages * ntrigger``); None when it declares none or cannot be opened."""
    try:
        with open_hdf5(path) as fh:
            return _declared(fh)
    except (ImageError, OSError):
        return None


@dataclass
class _Part:
    """One dataset holding frames ``[start, start + count)`` of the source."""

    name: str  # how the part is addressed in messages: "data_000001" or the dataset path
    file: str
    dataset: str
    start: int
    count: int
    dset: h5py.Dataset | None = None  # None: not available, see ``unavailable``
    # why not: a FrameIncompleteError (still being written), or an ImageError (a link
    # outside the data roots)
    unavailable: ImageError | None = None
    image_nr_low: int | None = None
    chunking: Chunking | None = None  # None: not chunked
    source: tuple = ()  # the file as opened and the dataset: what its blocks are kept by


class Hdf5Frames:
    """Frames of an HDF5 file (module doc); a context manager that closes its files."""

    def __init__(
        self, path: PathLike, *, dataset: str | None = None, shape: tuple[int, int] | None = None,
        roots: Sequence[PathLike] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.roots = data_roots(roots, self.path)
        try:
            self._file = open_hdf5(self.path)
        except FileNotFoundError:
            raise ImageError(f"frame {self.path} does not exist") from None
        self._open: dict[str, h5py.File] = {self.path: self._file}
        self._metadata: FrameMetadata | None = None
        try:
            self._parts = self._layout(dataset)
            first = next((p for p in self._parts if p.dset is not None), None)
            if first is None:
                raise self._why(self._parts[0], None)
            self.shape = (int(first.dset.shape[-2]), int(first.dset.shape[-1]))
            self.dtype = first.dset.dtype
            for part in self._parts:
                if part.dset is not None:
                    self._check_part(part, shape)
            self._fill_offsets(first.count)
            self.chunk_frames = int(first.dset.chunks[0]) if first.dset.chunks and first.dset.ndim == 3 else 1
            self.invalid_value = invalid_value_for(self.dtype)
        except BaseException:
            self.close()
            raise

    # -- layout ---------------------------------------------------------------------------

    def _layout(self, dataset: str | None) -> list[_Part]:
        if dataset is not None:
            return [self._plain(dataset)]
        group = self._file.get(_DATA_GROUP)
        links = sorted(k for k in group.keys() if k.startswith("data_")) if isinstance(group, h5py.Group) else []
        if links:
            return [self._linked(name) for name in links]
        return [self._plain(_DEFAULT_DATASET)]

    def _plain(self, name: str) -> _Part:
        obj = self._file.get(name)
        if not isinstance(obj, h5py.Dataset):
            what = "does not exist" if obj is None else "is a group, not a dataset"
            raise ImageError(f"{self.path}: dataset {name} {what}")
        if obj.ndim not in (2, 3):
            raise ImageError(
                f"{self.path}: dataset {name} has shape {obj.shape}; frames need (frames, rows, cols) or (rows, cols)"
            )
        check_dataset(obj, self.roots, f"{self.path}: {name}")
        count = 1 if obj.ndim == 2 else int(obj.shape[0])
        return self._found(_Part(name, self.path, name, 0, count), obj)

    def _linked(self, name: str) -> _Part:
        link = self._file[_DATA_GROUP].get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            file, dataset = link_target(self.path, link.filename), link.path
        else:
            file, dataset = self.path, f"{_DATA_GROUP}/{name}"
        part = _Part(name, file, dataset, 0, 0)
        refused = outside_roots(file, self.roots)
        if refused is not None:  # not even opened
            part.unavailable = ImageError(f"{name}: {refused}")
            return part
        try:
            handle = self._open.get(file) or open_hdf5(file)
        except FileNotFoundError:
            part.unavailable = FrameIncompleteError(
                self.path, f"data file {file} ({name}) does not exist yet", _size(self.path)
            )
            return part
        except FrameIncompleteError as exc:
            part.unavailable = exc
            return part
        self._open[file] = handle
        dset = handle.get(dataset)
        if not isinstance(dset, h5py.Dataset) or dset.ndim != 3:
            found = "nothing" if dset is None else f"shape {getattr(dset, 'shape', 'a group')}"
            raise ImageError(f"{self.path}: {name} -> {file}:{dataset} is {found}, not a 3-D dataset")
        try:  # the data file's dataset may be a link again
            check_dataset(dset, self.roots, name)
        except ImageError as exc:
            part.unavailable = exc
            return part
        low = dset.attrs.get("image_nr_low")
        part.count, part.image_nr_low = int(dset.shape[0]), int(low) if low is not None else None
        return self._found(part, dset)

    @staticmethod
    def _found(part: _Part, dset: h5py.Dataset) -> _Part:
        try:
            identity = file_identity(dset.file.filename)
        except OSError as exc:
            raise ImageError(f"{part.file}: cannot be looked at ({exc})") from None
        part.dset, part.chunking, part.source = dset, chunking(dset), (*identity, dset.name)
        return part

    def _check_part(self, part: _Part, expected: tuple[int, int] | None) -> None:
        dset = part.dset
        where = f"{self.path} ({part.file}:{part.dataset})"
        check_shape(where, (int(dset.shape[-2]), int(dset.shape[-1])), expected)
        if tuple(dset.shape[-2:]) != self.shape or dset.dtype != self.dtype:
            raise ImageError(
                f"{where}: frames of shape {dset.shape[-2:]} {dset.dtype} differ from the first "
                f"part's {self.shape} {self.dtype}"
            )

    def _fill_offsets(self, per_file: int) -> None:
        start = 0
        for part in self._parts:
            if part.dset is None:
                part.count = per_file
            if part.image_nr_low is not None:
                start = part.image_nr_low - 1  # DECTRIS image numbers count from 1
            part.start = start
            start += part.count

    # -- interface ------------------------------------------------------------------------

    def frame_count(self) -> int:
        """Frames the file declares (``nimages * ntrigger`` of a DECTRIS master), else the
        frames its parts hold."""
        declared = _declared(self._file)
        if declared is not None:
            return declared
        last = self._parts[-1]
        return last.start + last.count

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` as an ``(n, rows, cols)`` array of the stored dtype; a
        range within one chunk comes back read-only (a view of the decoded block)."""
        if stop > self.frame_count() and self._file.swmr_mode:
            raise FrameIncompleteError(self.path, f"frame {stop - 1} is not flushed yet (the "
                                       f"file is being written, {self.frame_count()} frames so "
                                       "far)", _size(self.path))
        check_range(self.path, start, stop, self.frame_count())
        out: np.ndarray | None = None
        done = start
        for part in self._parts:
            lo, hi = max(start, part.start), min(stop, part.start + part.count)
            if lo >= hi:
                continue
            if part.dset is None:
                raise self._why(part, lo)
            for first, frames in self._pieces(part, lo - part.start, hi - part.start):
                at = part.start + first - start
                if out is None and at == 0 and len(frames) == stop - start:
                    return frames  # the whole range in one block
                if out is None:  # filled block by block: one decoded block alive at a time
                    out = np.empty((stop - start, *self.shape), dtype=self.dtype)
                out[at : at + len(frames)] = frames
            done = max(done, hi)
        if done < stop or out is None:
            raise FrameIncompleteError(
                self.path, f"frame {done} is beyond the frames written so far ({done})", _size(self.path)
            )
        return out

    def _why(self, part: _Part, frame: int | None) -> ImageError:
        """The error for the frames of an unavailable part (``frame``: the first asked)."""
        exc = part.unavailable
        if exc is None:
            return ImageError(f"{self.path}: no frame data")
        if isinstance(exc, FrameIncompleteError):
            return exc if frame is None else FrameIncompleteError(self.path, f"frame {frame}: {exc}", exc.present)
        return ImageError(f"{self.path}: {exc}" if frame is None else f"{self.path}: frame {frame}: {exc}")

    def _pieces(self, part: _Part, lo: int, hi: int) -> Iterator[tuple[int, np.ndarray]]:
        """Frames ``[lo, hi)`` of ``part`` as (first frame, frames) pieces: one read of a
        dataset without chunks, else a view of each block (the last one kept)."""
        dset = part.dset
        if part.chunking is None:
            out = np.empty((hi - lo, *self.shape), dtype=self.dtype)
            try:
                dset.read_direct(out, np.s_[lo:hi]) if dset.ndim == 3 else dset.read_direct(out[0])
            except (OSError, RuntimeError, ValueError) as exc:
                raise ImageError(f"{self._where(part, lo)}: cannot be read ({exc})") from None
            yield lo, out
            return
        k = part.chunking.chunks[0] if len(part.chunking.shape) == 3 else 1
        for first in range(lo - lo % k, hi, k):
            block = read_block(dset, part.chunking, first, lambda i: self._where(part, i), part.source)
            a = max(lo, first)
            yield a, block[a - first : min(hi, first + k) - first]

    def _where(self, part: _Part, local: int) -> str:
        src = self.path if part.file == self.path else f"{self.path} ({part.name}: {part.file})"
        return f"{src}: frame {part.start + local} ({part.dataset} [{local}])"

    def pixel_mask(self) -> np.ndarray | None:
        """The detector's pixel mask (True = bad): ``detectorSpecific/pixel_mask``, else the
        first channel's ``<channel>_channel/pixel_mask`` (NXmx 2024); None if there is none."""
        names = list(_PIXEL_MASKS)
        det = self._file.get(DETECTOR)
        if isinstance(det, h5py.Group):
            names += [f"{DETECTOR}/{k}/pixel_mask" for k in sorted(det) if k.endswith("_channel")]
        for name in names:
            dset = self._file.get(name)
            if isinstance(dset, h5py.Dataset):
                if tuple(dset.shape) != self.shape:
                    raise ImageError(f"{self.path}: {name} has shape {dset.shape}, frames {self.shape}")
                return dset[()] != 0
        return None

    def metadata(self, start: int, stop: int) -> list[dict[str, Any]]:
        """One dict per frame of ``[start, stop)`` (:mod:`saxs_pipeline.frames.hdf5meta`)."""
        check_range(self.path, start, stop, self.frame_count())
        if self._metadata is None:
            self._metadata = FrameMetadata(self._file, self.frame_count())
        return self._metadata.rows(start, stop, self._image_number)

    def _image_number(self, i: int) -> int | None:
        part = next((p for p in self._parts if p.start <= i < p.start + p.count), None)
        if part is None or part.image_nr_low is None:
            return None
        return part.image_nr_low + i - part.start

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()

    def __enter__(self) -> Hdf5Frames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
