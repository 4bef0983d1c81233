"""bitshuffle-LZ4 / LZ4 buffers: our encoder matches the HDF5 filter byte for byte, the
decoder round-trips exactly, and corrupt input is an error, never a crash."""

from __future__ import annotations

import io

import h5py
import hdf5plugin
import numpy as np
import pytest

from saxs_pipeline.frames.compression import CompressionError, compress_bslz4, decompress


@pytest.mark.parametrize("dtype", ["u1", "u2", "u4", "i4"])
def test_round_trip_and_same_bytes_as_the_hdf5_filter(dtype: str) -> None:
    a = np.random.default_rng(0).poisson(7, (53, 47)).astype(dtype)
    payload = compress_bslz4(a)
    np.testing.assert_array_equal(decompress(payload, "bslz4", a.dtype, a.shape), a)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as fh:
        dset = fh.create_dataset("x", data=a[None], chunks=(1, *a.shape), **hdf5plugin.Bitshuffle(cname="lz4"))
        _, chunk = dset.id.read_direct_chunk((0, 0, 0))
    assert chunk == payload


def test_lz4_from_the_hdf5_lz4_filter() -> None:
    a = np.arange(4000, dtype=np.uint32).reshape(40, 100)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as fh:
        dset = fh.create_dataset("x", data=a[None], chunks=(1, *a.shape), **hdf5plugin.LZ4())
        _, chunk = dset.id.read_direct_chunk((0, 0, 0))
    np.testing.assert_array_equal(decompress(chunk, "lz4", a.dtype, a.shape), a)


def test_corrupt_wrong_size_and_unknown() -> None:
    a = np.random.default_rng(1).poisson(3, (64, 50)).astype(np.uint32)
    payload = compress_bslz4(a)
    garbage = payload[:12] + np.random.default_rng(2).integers(0, 255, len(payload) - 12, dtype=np.uint8).tobytes()
    with pytest.raises(CompressionError, match="do not decode"):
        decompress(garbage, "bslz4", a.dtype, a.shape)  # the bitshuffle filter segfaults here
    with pytest.raises(CompressionError, match="do not decode"):
        decompress(payload[: len(payload) // 2], "bslz4", a.dtype, a.shape)
    with pytest.raises(CompressionError, match="needs 6400"):
        decompress(payload, "bslz4", np.uint16, a.shape)
    with pytest.raises(CompressionError, match="too short"):
        decompress(b"abc", "bslz4", a.dtype, a.shape)
    with pytest.raises(CompressionError, match="unknown compression 'zip'"):
        decompress(payload, "zip", a.dtype, a.shape)
