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
It is keyed by the file (real path, size, mtime), the dataset, the frame and the chunk's
address in the file, so a file written since is read anew.
"""

from __future__ import annotations

import itertools
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np

from saxs_pipeline.frames.compression import CompressionError, decompress
from saxs_pipeline.frames.source import FrameIncompleteError, ImageError

__all__ = ["ChunkCodec", "chunk_codec", "read_block", "stored_limit"]

_DEFLATE, _SHUFFLE, _LZ4, _BSHUF = 1, 2, 32004, 32008
_BSHUF_LZ4 = 2  # the bitshuffle filter's compression option for LZ4
_NAMES = {_DEFLATE: "deflate", _SHUFFLE: "shuffle", _LZ4: "lz4", _BSHUF: "bslz4"}
# the filter pipelines decoded here, in HDF5's (writing) order
_DIRECT = {("bslz4",), ("lz4",), ("deflate",), ("shuffle", "deflate")}


@dataclass(frozen=True)
class ChunkCodec:
    """How a dataset's stored chunks are decoded here: its filters in HDF5's order."""

    filters: tuple[str, ...]


def chunk_codec(dset: h5py.Dataset) -> ChunkCodec | None:
    """The codec for ``dset``'s chunks, or None when h5py must read them (not chunked,
    a byte order other than the machine's, filters not decoded here)."""
    if dset.chunks is None or not dset.dtype.isnative or dset.dtype.kind not in "iuf":
        return None
    plist = dset.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        code, _flags, options, _name = plist.get_filter(i)
        if code == _BSHUF and not (len(options) >= 5 and options[4] == _BSHUF_LZ4
                                   and options[2] == dset.dtype.itemsize):
            return None  # bitshuffle alone, or with zstd
        names.append(_NAMES.get(code, ""))
    return ChunkCodec(tuple(names)) if tuple(names) in _DIRECT else None


def stored_limit(nbytes: int) -> int:
    """The most bytes a stored chunk of ``nbytes`` decoded bytes may hold. No codec here
    grows data by more than a small share (LZ4: 1/255 + 16 bytes a block; deflate: 5 bytes
    a 16 kB block; bitshuffle's smallest blocks of 8 elements: 4 bytes of size each);
    twice the size plus a page leaves room for all of them and refuses a chunk that is
    mostly something else before it is read into memory."""
    return 2 * nbytes + 4096


def _chunk_bytes(dset: h5py.Dataset) -> int:
    return int(np.prod(dset.chunks, dtype=np.int64)) * dset.dtype.itemsize


def _stored(dset: h5py.Dataset, coord: tuple[int, ...], where: str) -> int:
    """The stored size of the chunk at ``coord``, checked (module doc)."""
    info = dset.id.get_chunk_info_by_coord(coord)
    if info.byte_offset is None:
        raise FrameIncompleteError(where, "its chunk is not written yet", _file_size(dset))
    limit = stored_limit(_chunk_bytes(dset))
    if info.size > limit:
        raise ImageError(f"{where}: its chunk stores {info.size} bytes, more than the "
                         f"{limit} a chunk of {_chunk_bytes(dset)} bytes may hold; not read")
    return int(info.size)


def _file_size(dset: h5py.Dataset) -> int:
    try:
        return int(dset.file.id.get_filesize())
    except (OSError, RuntimeError):
        return 0


def _decode(raw: bytes, mask: int, codec: ChunkCodec, dtype: np.dtype,
            shape: tuple[int, ...]) -> np.ndarray:
    """One stored chunk decoded into a read-only array of ``shape``; ``mask`` has bit i
    set where HDF5 skipped filter i for this chunk."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    data: bytes | np.ndarray = raw
    for i in reversed(range(len(codec.filters))):
        if mask & (1 << i):
            continue
        name = codec.filters[i]
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


def _chunk(dset: h5py.Dataset, codec: ChunkCodec, coord: tuple[int, ...], where: str) -> np.ndarray:
    _stored(dset, coord, where)
    try:
        mask, raw = dset.id.read_direct_chunk(coord)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ImageError(f"{where}: chunk cannot be read ({exc})") from None
    try:
        return _decode(raw, mask, codec, dset.dtype, tuple(dset.chunks))
    except CompressionError as exc:
        raise ImageError(f"{where}: corrupt chunk ({exc})") from None


_last_lock = threading.Lock()
_last: tuple[tuple, np.ndarray] | None = None  # the block decoded last (module doc)


def read_block(dset: h5py.Dataset, codec: ChunkCodec | None, first: int,
               where: Callable[[int], str]) -> np.ndarray:
    """The frames of the chunks that hold frame ``first`` of ``dset`` (a multiple of its
    chunks' frame count; a 2-D dataset is one frame, ``first`` 0) as a read-only
    ``(n, rows, cols)`` array; one chunk of whole frames comes back as decoded, no copy.
    ``where(i)`` names frame ``i`` in messages. The block read last is kept (module doc)."""
    global _last
    key = _block_key(dset, first)
    with _last_lock:
        if key is not None and _last is not None and _last[0] == key:
            return _last[1]
        _last = None  # the block before goes before this one is decoded (if nobody holds it)
    block = _decode_block(dset, codec, first, where)
    if key is not None:
        with _last_lock:
            _last = (key, block)
    return block


def _block_key(dset: h5py.Dataset, first: int) -> tuple | None:
    """What identifies the block of frame ``first``; None: not cached (no written chunk
    there, a file that cannot be looked at)."""
    coord = ((first,) if dset.ndim == 3 else ()) + (0, 0)
    try:
        address = dset.id.get_chunk_info_by_coord(coord).byte_offset
        st = os.stat(dset.file.filename)
    except (OSError, RuntimeError, ValueError):
        return None
    if address is None:
        return None
    return (os.path.realpath(dset.file.filename), st.st_size, st.st_mtime_ns, dset.name, first, address)


def _decode_block(dset: h5py.Dataset, codec: ChunkCodec | None, first: int,
                  where: Callable[[int], str]) -> np.ndarray:
    frames = dset.ndim == 3
    k = int(dset.chunks[0]) if frames else 1
    n = min(k, int(dset.shape[0]) - first) if frames else 1
    rows, cols = (int(s) for s in dset.shape[-2:])
    crows, ccols = (int(c) for c in dset.chunks[-2:])
    lead = (first,) if frames else ()
    grid = list(itertools.product(range(0, rows, crows), range(0, cols, ccols)))
    if codec is None:
        for r, c in grid:
            _stored(dset, (*lead, r, c), where(first))
        out = np.empty((n, rows, cols), dset.dtype)
        try:
            dset.read_direct(out if frames else out[0], np.s_[first : first + n] if frames else None)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ImageError(f"{where(first)}: cannot be read ({exc})") from None
        out.flags.writeable = False
        return out
    if grid == [(0, 0)] and (crows, ccols) == (rows, cols):
        return _chunk(dset, codec, (*lead, 0, 0), where(first)).reshape(k, rows, cols)[:n]
    out = np.empty((n, rows, cols), dset.dtype)
    for r, c in grid:
        tile = _chunk(dset, codec, (*lead, r, c), where(first)).reshape(k, crows, ccols)
        h, w = min(crows, rows - r), min(ccols, cols - c)
        out[:, r : r + h, c : c + w] = tile[:n, :h, :w]
    out.flags.writeable = False
    return out
