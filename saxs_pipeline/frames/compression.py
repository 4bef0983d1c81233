"""Compressed detector buffers in the HDF5 framing: bitshuffle-LZ4 (``"bslz4"``) and LZ4
(``"lz4"``), as EIGER/PILATUS4 HDF5 chunks and DECTRIS Stream V2 messages (CBOR tag
56500) carry them.

Decoding uses ``dectris-compression`` (DECTRIS's own codec library), which rejects corrupt
input with an error. The ``bitshuffle`` package's decoder -- also the one inside the
hdf5plugin filter that h5py's high-level read calls -- trusts the block sizes in the data
and crashes the process on a corrupt chunk, so it is used only to *encode* (simulator,
demo, tests), where the input is our own array.

The bitshuffle framing is a 12-byte big-endian header -- uncompressed size in bytes
(uint64) and block size in bytes (uint32) -- followed by the LZ4-compressed bitshuffled
blocks; :func:`compress_bslz4` gives the same bytes the HDF5 filter writes for a chunk.
"""

from __future__ import annotations

import struct

import bitshuffle
import numpy as np
from dectris.compression import decompress as _dectris_decompress

__all__ = ["ALGORITHMS", "HEADER", "CompressionError", "compress_bslz4", "decompress"]

ALGORITHMS = ("bslz4", "lz4")
HEADER = struct.Struct(">QI")
_TARGET_BLOCK_BYTES = 8192  # the filter's default: blocks of about 8 kB, a multiple of 8 elements


class CompressionError(ValueError):
    """A buffer that is not valid compressed data of the expected size."""


def decompress(
    payload: bytes | memoryview | np.ndarray,
    algorithm: str,
    dtype: np.dtype | str,
    shape: tuple[int, ...],
) -> np.ndarray:
    """Decode ``payload`` into a read-only array of ``shape`` and ``dtype``.

    Raises :class:`CompressionError` for an unknown algorithm, a header that disagrees
    with ``shape``/``dtype``, or blocks that do not decode (a corrupt chunk or message).
    """
    if algorithm not in ALGORITHMS:
        raise CompressionError(f"unknown compression {algorithm!r} (known: {', '.join(ALGORITHMS)})")
    dt = np.dtype(dtype)
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if len(payload) < HEADER.size:
        raise CompressionError(f"{len(payload)} bytes is too short for the 12-byte {algorithm} header")
    nbytes, _block = HEADER.unpack_from(payload)
    if nbytes != expected:
        raise CompressionError(
            f"{algorithm} header says {nbytes} bytes uncompressed, but {shape} {dt} needs {expected}"
        )
    try:
        raw = _dectris_decompress(bytes(payload), algorithm, elem_size=dt.itemsize)
    except (RuntimeError, ValueError) as exc:
        raise CompressionError(f"the {algorithm} data do not decode ({exc})") from None
    if len(raw) != expected:
        raise CompressionError(f"{algorithm} data decode to {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype=dt).reshape(shape)


def _block_elements(itemsize: int) -> int:
    return max(8, (_TARGET_BLOCK_BYTES // itemsize) // 8 * 8)


def compress_bslz4(array: np.ndarray) -> bytes:
    """``array`` (C order) as bitshuffle-LZ4 with the HDF5 header."""
    data = np.ascontiguousarray(array)
    block = _block_elements(data.dtype.itemsize)
    body = bitshuffle.compress_lz4(data, block)
    return HEADER.pack(data.nbytes, block * data.dtype.itemsize) + body.tobytes()
