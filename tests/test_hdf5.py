"""HDF5/NeXus frame sources on real files: a DECTRIS-layout master + bitshuffle-LZ4 data
files written with h5py + hdf5plugin, and plain 3-D datasets. Frames must come back
bit-exact (integer data, lossless codec: tolerance 0)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from saxs_pipeline.demo.eiger import MASK_DEAD, MASK_GAP, write_eiger_series
from saxs_pipeline.frames.hdf5 import Hdf5Frames
from saxs_pipeline.frames.registry import open_frames, read_frames
from saxs_pipeline.frames.source import FrameIncompleteError, ImageError, ImageIncompleteError

SHAPE = (37, 29)
N_PER_FILE = 4
MAX = np.iinfo(np.uint32).max


def _frames(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    stack = rng.poisson(40, (n, *SHAPE)).astype(np.uint32)
    stack[:, 5, :] = MAX  # a gap row, as EIGER writes it
    return stack


@pytest.fixture
def series(tmp_path: Path):
    stack = _frames(2 * N_PER_FILE)
    mask = np.zeros(SHAPE, np.uint32)
    mask[5, :] = MASK_GAP
    mask[9, 3] = MASK_DEAD
    written = write_eiger_series(
        tmp_path, iter(stack), n_frames=len(stack), frames_per_file=N_PER_FILE, shape=SHAPE,
        beam_center=(12.5, 7.25), pixel_mask=mask,
    )
    return written, stack, mask


def test_every_frame_and_ranges_read_back(series) -> None:
    written, stack, _ = series
    with open_frames(written.master) as src:
        assert isinstance(src, Hdf5Frames)
        assert src.frame_count() == len(stack)
        assert src.shape == SHAPE and src.dtype == np.uint32
        assert all(p.chunking.direct for p in src._parts)  # the DECTRIS layout: direct read
        for i in range(len(stack)):
            np.testing.assert_array_equal(src.read(i, i + 1)[0], stack[i])
        whole = src.read(0, len(stack))
        assert whole.shape == stack.shape and whole.dtype == np.uint32
        np.testing.assert_array_equal(whole, stack)
        np.testing.assert_array_equal(src.read(2, 7), stack[2:7])  # across the two data files


def test_invalid_value_and_pixel_mask(series) -> None:
    written, stack, mask = series
    with open_frames(written.master) as src:
        assert src.invalid_value == MAX
        frame = src.read(0, 1)[0]
        assert np.all(frame[5] == src.invalid_value)
        np.testing.assert_array_equal(src.pixel_mask(), mask != 0)


def test_metadata_image_numbers_and_times(series) -> None:
    written, stack, _ = series
    with open_frames(written.master) as src:
        meta = src.metadata(3, 6)
    assert [m["index"] for m in meta] == [3, 4, 5]
    assert [m["image_number"] for m in meta] == [4, 5, 6]  # DECTRIS numbers from 1
    steps = np.diff([m["time"] for m in meta])
    # frame_time of the writer; Unix times near 1.7e9 s resolve to about 0.2 us in float64
    np.testing.assert_allclose(steps, 0.01, rtol=0, atol=1e-6)
    assert meta[0]["date"].startswith("2024-03-14T09:00:00.03")


def _plain(path: Path, data: np.ndarray, chunks: tuple[int, ...] | None, **filters) -> None:
    with h5py.File(path, "w") as fh:
        fh.create_dataset("/entry/data/data", data=data, chunks=chunks, **filters)
        fh.create_dataset("/entry/instrument/detector/start_time", data=np.arange(len(data)) * 0.5)
        fh["/entry/start_time"] = "2025-01-02T03:04:05"


@pytest.mark.parametrize("chunks, filters, direct", [
    ((3, *SHAPE), hdf5plugin.Bitshuffle(cname="lz4"), True),  # several frames per chunk
    ((1, 16, 16), hdf5plugin.Bitshuffle(cname="lz4"), True),  # tiles, edge tiles cut
    ((2, 16, 20), {"compression": "gzip", "shuffle": True}, True),  # deflate + shuffle
    ((4, 16, 16), {"compression": "gzip", "fletcher32": True}, False),  # through h5py
    (None, {}, False),  # contiguous, uncompressed
])
def test_plain_dataset_ranges_and_chunks(tmp_path: Path, chunks, filters, direct) -> None:
    stack = _frames(10)
    path = tmp_path / "plain.h5"
    _plain(path, stack, chunks, **filters)
    with open_frames(path, dataset="/entry/data/data", shape=SHAPE) as src:
        assert (src._parts[0].chunking is not None and src._parts[0].chunking.direct) is direct
        assert src.chunk_frames == (chunks[0] if chunks else 1)
        for start, stop in [(0, 10), (1, 2), (2, 8), (9, 10), (3, 6)]:
            np.testing.assert_array_equal(src.read(start, stop), stack[start:stop])
        meta = src.metadata(0, 10)
    assert meta[4]["/entry/instrument/detector/start_time"] == 2.0  # per-frame dataset
    assert meta[4]["time"] - meta[0]["time"] == pytest.approx(2.0)


def test_read_frames_default_dataset_and_one_2d_frame(tmp_path: Path) -> None:
    stack = _frames(3)
    path = tmp_path / "plain.h5"
    _plain(path, stack, (1, *SHAPE), **hdf5plugin.Bitshuffle(cname="lz4"))
    data, meta = read_frames(path)
    np.testing.assert_array_equal(data, stack)
    with h5py.File(path, "a") as fh:
        fh["/single"] = stack[1]
    data, meta = read_frames(path, dataset="/single")
    np.testing.assert_array_equal(data, stack[1:2])


def test_corrupt_chunk_names_file_and_frame(series) -> None:
    written, stack, _ = series
    data_file = written.data_files[1]
    with h5py.File(data_file, "r") as fh:
        info = fh["/entry/data/data"].id.get_chunk_info(2)  # frame 6 of the series
    with open(data_file, "r+b") as fh:
        fh.seek(info.byte_offset + 12)
        fh.write(np.random.default_rng(0).integers(0, 255, info.size - 12, dtype=np.uint8).tobytes())
    with open_frames(written.master) as src:
        np.testing.assert_array_equal(src.read(5, 6)[0], stack[5])  # others still read
        with pytest.raises(ImageError, match=r"frame 6 .*corrupt chunk") as err:
            src.read(4, 8)
    assert str(data_file) in str(err.value) and not isinstance(err.value, ImageIncompleteError)


def test_missing_data_file_is_incomplete_for_its_frames(series) -> None:
    written, stack, _ = series
    written.data_files[1].unlink()
    with open_frames(written.master) as src:
        assert src.frame_count() == 8  # declared by the master
        np.testing.assert_array_equal(src.read(0, 4), stack[:4])
        with pytest.raises(ImageIncompleteError, match=r"frame 4: .*series_data_000002.h5.* does not exist"):
            src.read(3, 6)


def test_nonexistent_dataset_path(tmp_path: Path) -> None:
    path = tmp_path / "plain.h5"
    _plain(path, _frames(2), None)
    with pytest.raises(ImageError, match=r"plain.h5: dataset /entry/data/nope does not exist"):
        open_frames(path, dataset="/entry/data/nope")
    with pytest.raises(ImageError, match="is a group"):
        open_frames(path, dataset="/entry/data")


def test_wrong_shape_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as fh:
        fh["/frame"] = np.zeros((10, 20), np.int32)
        fh["/cube"] = np.zeros((2, 3, 4, 5), np.int32)
    with pytest.raises(ImageError, match=r"shape \(10, 20\) but Imagesize is \[37, 29\]"):
        open_frames(path, dataset="/frame", shape=SHAPE)
    with pytest.raises(ImageError, match=r"dataset /cube has shape \(2, 3, 4, 5\)"):
        open_frames(path, dataset="/cube")


def test_range_outside_and_unwritten_chunk(tmp_path: Path) -> None:
    path = tmp_path / "growing.h5"
    with h5py.File(path, "w") as fh:
        dset = fh.create_dataset("/entry/data/data", shape=(4, *SHAPE), dtype="u4",
                                 chunks=(1, *SHAPE), **hdf5plugin.Bitshuffle(cname="lz4"))
        dset[0] = _frames(1)[0]
    with open_frames(path) as src:
        with pytest.raises(ImageError, match=r"frames \[3, 9\) are not a range"):
            src.read(3, 9)
        with pytest.raises(FrameIncompleteError, match="frame 1 .*not written yet"):
            src.read(0, 3)


def test_file_open_for_writing_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "open.h5"
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, h5py, numpy as np\n"
         f"f = h5py.File({str(path)!r}, 'w', libver='latest'); f['/entry/data/data'] = np.zeros((2, 3, 4), 'u2'); f.flush()\n"
         "print('ready', flush=True); sys.stdin.read(); f.close()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        with pytest.raises(ImageIncompleteError, match="still open for writing"):
            open_frames(path)
    finally:
        writer.communicate("", timeout=10)
    deadline = time.monotonic() + 5
    while True:  # after the writer closed it, the same file reads
        try:
            with open_frames(path) as src:
                assert src.frame_count() == 2
            break
        except ImageIncompleteError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_truncated_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "plain.h5"
    _plain(path, _frames(4), None)
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageIncompleteError, match="shorter than it declares"):
        open_frames(cut)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(data[:3])
    with pytest.raises(ImageIncompleteError, match="not yet an HDF5 signature"):
        open_frames(empty)
