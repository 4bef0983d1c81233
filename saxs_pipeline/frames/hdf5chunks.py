"""HDF5 chunks: which are decoded here rather than by HDF5's filter pipeline, and the
limits a stored chunk is held to before anything is decoded.

Decoded here (direct chunk read), with any chunk shape: chunks whose only filter is
bitshuffle-LZ4 (the DECTRIS layout) or LZ4, or deflate with or without byte shuffle. The
codecs are dectris-compression (:func:`saxs_pipeline.frames.compression.decompress`) and
zlib; both refuse corrupt input with an error, and both are held to the chunk's own size.
Through h5py the same chunks are dangerous: the bitshuffle filter behind h5py's read
trusts the block sizes in the data and crashes the process on a corrupt chunk; the
bitshuffle and LZ4 filters allocate whatever size a chunk's header declares; and HDF5's
deflate filter grows its buffer for as long as the data inflate (a 1 MB chunk inflating to
1 GB took 1 GB, and the frame then read as the first bytes of it, without an error).

Checked for every chunk read, before it is read: it is written (else the frames are still
being written: :class:`FrameIncompleteError`) and its stored size is at most
:func:`stored_limit` of its decoded size (shape x itemsize). Before a chunk is decoded:
the size its header declares (bitshuffle, LZ4) is its decoded size, and deflate output
is cut at that size (more is an error). Chunks of other filters are read through h5py
(hdf5plugin's filters) after the same stored-size check.

The block decoded last in the process (the frames of one chunk, :func:`read_block`) is
kept, for all its threads: the tasks reading frames of one chunk of many frames -- one
after the other, a few frames each -- decode it once per worker, not once per task.
It is keyed by the file as it was when opened (real path, size, mtime), the dataset, the
frame and the chunk's address in the file, so a file written since is read anew.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np

from saxs_pipeline.frames.compression import CompressionError, decompress
from saxs_pipeline.frames.source import FrameIncompleteError, ImageError

__all__ = ["Chunking", "chunking", "file_identity", "read_block", "stored_limit"]

_DEFLATE, _SHUFFLE, _LZ4, _BSHUF = 1, 2, 32004, 32008
_BSHUF_LZ4 = 2  # the bitshuffle filter's compression option for LZ4
_NAMES = {_DEFLATE: "deflate", _SHUFFLE: "shuffle", _LZ4: "lz4", _BSHUF: "bslz4"}
# the filter pipelines decoded here, in HDF5's (writing) order
_DIRECT = {("bslz4",), ("lz4",), ("deflate",), ("shuffle", "deflate")}


@dataclass(frozen=True)
class Chunking:
    """A chunked 2-D or 3-D dataset as read here: its shape, chunk shape and dtype, and
    the filters decoded here in HDF5's order (None: h5py decodes its chunks)."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    filters: tuple[str, ...] | None

    @property
    def direct(self) -> bool:
        return self.filters is not None

    @property
    def nbytes(self) -> int:
        """The decoded size of one chunk."""
        return math.prod(self.chunks) * self.dtype.itemsize


def chunking(dset: h5py.Dataset) -> Chunking | None:
    """How ``dset``'s chunks are read (None: not chunked). h5py decodes them where this
    module does not: a byte order other than the machine's, filters not decoded here."""
    if dset.chunks is None:
        return None
    dtype = dset.dtype
    plist = dset.id.get_create_plist()
    names: tuple[str, ...] | None = ()
    for i in range(plist.get_nfilters()):
        code, _flags, options, _name = plist.get_filter(i)
        lz4 = len(options) >= 5 and options[4] == _BSHUF_LZ4 and options[2] == dtype.itemsize
        names = names + (_NAMES.get(code, "") if code != _BSHUF or lz4 else "",)
    if names not in _DIRECT or not dtype.isnative or dtype.kind not in "iuf":
        names = None
    return Chunking(tuple(dset.shape), tuple(dset.chunks), dtype, names)


def file_identity(path: str) -> tuple[str, int, int]:
    """The file at ``path`` as it is now: real path, size, mtime (ns)."""
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns


def stored_limit(nbytes: int) -> int:
    """The most bytes a stored chunk of ``nbytes`` decoded bytes may hold. No codec here
    grows data by more than a small share (LZ4: 1/255 + 16 bytes a block; deflate: 5 bytes
    a 16 kB block; bitshuffle's smallest blocks of 8 elements: 4 bytes of size each);
    twice the size plus a page leaves room for all of them and refuses a chunk that is
    mostly something else before it is read into memory."""
    return 2 * nbytes + 4096


def _stored(dset: h5py.Dataset, layout: Chunking, coord: tuple[int, ...],
            where: Callable[[], str]) -> int:
    """The address of the chunk at ``coord``, its stored size checked (module doc);
    ``where()`` names the frame in messages."""
    info = dset.id.get_chunk_info_by_coord(coord)
    if info.byte_offset is None:
        raise FrameIncompleteError(where(), "its chunk is not written yet", _file_size(dset))
    limit = stored_limit(layout.nbytes)
    if info.size > limit:
        raise ImageError(f"{where()}: its chunk stores {info.size} bytes, more than the "
                         f"{limit} a chunk of {layout.nbytes} bytes may hold; not read")
    return int(info.byte_offset)


def _file_size(dset: h5py.Dataset) -> int:
    try:
        return int(dset.file.id.get_filesize())
    except (OSError, RuntimeError):
        return 0


def _decode(raw: bytes, mask: int, layout: Chunking) -> np.ndarray:
    """One stored chunk decoded into a read-only array of the chunk's shape; ``mask`` has
    bit i set where HDF5 skipped filter i for this chunk."""
    dtype, shape, nbytes = layout.dtype, layout.chunks, layout.nbytes
    data: bytes | np.ndarray = raw
    for i in reversed(range(len(layout.filters))):
        if mask & (1 << i):
            continue
        name = layout.filters[i]
        if name in ("bslz4", "lz4"):
            data = decompress(data, name, dtype, shape)  # checks the declared size first
        elif name == "deflate":
            data = _inflate(data, nbytes)
        else:  # shuffle: byte k of every element stored together
            flat = np.frombuffer(data, np.uint8)
            if flat.size != nbytes:
                raise CompressionError(f"{flat.size} bytes to unshuffle, the chunk has {nbytes}")
            data = np.ascontiguousarray(flat.reshape(dtype.itemsize, -1).T)
    size = data.nbytes if isinstance(data, np.ndarray) else len(data)
    if size != nbytes:
        raise CompressionError(f"the chunk decodes to {size} bytes, its shape needs {nbytes}")
    out = np.frombuffer(data, dtype=dtype).reshape(shape)
    out.flags.writeable = False
    return out


def _inflate(data: bytes, nbytes: int) -> bytes:
    """Deflate data inflated to at most ``nbytes`` (one byte more is an error)."""
    inflate = zlib.decompressobj()
    try:
        out = inflate.decompress(data, nbytes)
        more = bool(inflate.unconsumed_tail) or (not inflate.eof and bool(inflate.decompress(b"", 1)))
    except zlib.error as exc:
        raise CompressionError(f"the deflate data do not decode ({exc})") from None
    if more:
        raise CompressionError(f"the deflate data inflate to more than the chunk's {nbytes} bytes")
    if not inflate.eof:
        raise CompressionError("the deflate data end before their end mark")
    return out


def _chunk(dset: h5py.Dataset, layout: Chunking, coord: tuple[int, ...],
           where: Callable[[], str]) -> np.ndarray:
    _stored(dset, layout, coord, where)
    try:
        mask, raw = dset.id.read_direct_chunk(coord)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ImageError(f"{where()}: chunk cannot be read ({exc})") from None
    try:
        return _decode(raw, mask, layout)
    except CompressionError as exc:
        raise ImageError(f"{where()}: corrupt chunk ({exc})") from None


_last_lock = threading.Lock()
_last: tuple[tuple, np.ndarray] | None = None  # the block decoded last (module doc)


def read_block(dset: h5py.Dataset, layout: Chunking, first: int, where: Callable[[int], str],
               source: tuple) -> np.ndarray:
    """The frames of the chunks that hold frame ``first`` of ``dset`` (a multiple of its
    chunks' frame count; a 2-D dataset is one frame, ``first`` 0) as a read-only
    ``(n, rows, cols)`` array; one chunk of whole frames comes back as decoded, no copy.
    ``where(i)`` names frame ``i`` in messages; ``source`` identifies the dataset (its
    :func:`file_identity` when opened and its path) for the block kept (module doc)."""
    global _last
    lead = (first,) if len(layout.shape) == 3 else ()
    at = lambda: where(first)  # noqa: E731  (messages only)
    key = (*source, first, _stored(dset, layout, (*lead, 0, 0), at))
    with _last_lock:
        if _last is not None and _last[0] == key:
            return _last[1]
        _last = None  # the block before goes before this one is decoded (if nobody holds it)
    block = _decode_block(dset, layout, first, at)
    with _last_lock:
        _last = (key, block)
    return block


def _decode_block(dset: h5py.Dataset, layout: Chunking, first: int,
                  where: Callable[[], str]) -> np.ndarray:
    frames = len(layout.shape) == 3
    k = layout.chunks[0] if frames else 1
    n = min(k, layout.shape[0] - first) if frames else 1
    rows, cols = layout.shape[-2:]
    crows, ccols = layout.chunks[-2:]
    lead = (first,) if frames else ()
    grid = list(itertools.product(range(0, rows, crows), range(0, cols, ccols)))
    if not layout.direct:
        for r, c in grid:
            _stored(dset, layout, (*lead, r, c), where)
        out = np.empty((n, rows, cols), layout.dtype)
        try:
            dset.read_direct(out if frames else out[0], np.s_[first : first + n] if frames else None)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ImageError(f"{where()}: cannot be read ({exc})") from None
        out.flags.writeable = False
        return out
    if grid == [(0, 0)] and (crows, ccols) == (rows, cols):
        return _chunk(dset, layout, (*lead, 0, 0), where).reshape(k, rows, cols)[:n]
    out = np.empty((n, rows, cols), layout.dtype)
    for r, c in grid:
        tile = _chunk(dset, layout, (*lead, r, c), where).reshape(k, crows, ccols)
        h, w = min(crows, rows - r), min(ccols, cols - c)
        out[:, r : r + h, c : c + w] = tile[:n, :h, :w]
    out.flags.writeable = False
    return out
