"""HDF5 damage reported frame by frame (issue 22): truncated data files, corrupt chunks,
links out of the data root, chunks declaring sizes they do not have, chunks of many frames.
Real HDF5 files written by h5py + hdf5plugin in tmp_path and damaged by editing their
bytes; the pipeline on a real LocalCluster, the reader in a real child process where its
peak memory is measured."""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from saxs_pipeline.cli.saxsdog_options import parse_args
from saxs_pipeline.demo.eiger import write_eiger_series
from saxs_pipeline.frames.compression import compress_bslz4
from saxs_pipeline.frames.registry import declared_frame_count, open_frames
from saxs_pipeline.frames.source import FrameIncompleteError, ImageError
from saxs_pipeline.pipeline.queue import ImageQueue
from saxs_pipeline.pipeline.task import process_frames
from saxs_pipeline.pipeline.tasktypes import FrameTask, TaskOptions
from saxs_pipeline.stack.read import read_stack

from procs import wait_until

pytestmark = pytest.mark.timeout(180)

INVALID = 2**32 - 1


def frames_of(shape: tuple[int, int], n: int) -> list[np.ndarray]:
    return [np.random.default_rng([5, i]).poisson(25, shape).astype(np.uint32) for i in range(n)]


def cut(path: Path, keep: float = 0.5) -> None:
    """Truncate ``path`` as a crashed writer or a full disk leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def ledger_rows(q: ImageQueue) -> dict[tuple[str, int], tuple[str, str | None]]:
    with sqlite3.connect(q.zarr_path.with_suffix(".ledger")) as db:
        rows = db.execute("SELECT source, idx, state, error FROM frames").fetchall()
    return {(s, i): (state, err) for s, i, state, err in rows}


def logged_failures(q: ImageQueue) -> list[dict]:
    return [json.loads(line) for line in q.failures_log.read_text().splitlines()]


# -- 1. truncated data files ---------------------------------------------------------------


def test_truncated_files_fail_frame_by_frame(saxs_setup, saxs_local_cluster) -> None:
    """A master whose one data file is truncated: each of the 4 frames it declares is a
    failure (ledger + failures.log) naming the data file; a truncated plain file, whose
    frame count is unreadable, is one failure for its frame 0. Never "no frames"."""
    setup = saxs_setup()
    series = write_eiger_series(setup.data, frames_of(setup.shape, 4), n_frames=4,
                                frames_per_file=4, shape=setup.shape, name="run")
    cut(series.data_files[0])
    with h5py.File(setup.data / "plain.h5", "w") as fh:
        fh["/entry/data/data"] = np.stack(frames_of(setup.shape, 3))
    cut(setup.data / "plain.h5")
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data, pattern="*.h5",
                    retries=1, retry_delay=0.05) as q:
        q.readdir()
        assert q.join(60)
    failures = {(f["file"].split("/")[-1], f["frame"]): f["error"] for f in q.failures()}
    assert sorted(failures) == [("plain.h5", 0)] + [("run_master.h5", i) for i in range(4)]
    for i in range(4):
        assert "run_data_000001.h5" in failures["run_master.h5", i]
        assert "shorter than it declares" in failures["run_master.h5", i]
    assert "shorter than it declares" in failures["plain.h5", 0]
    rows = ledger_rows(q)
    assert {k: v[0] for k, v in rows.items()} == {
        ("plain.h5", 0): "failed", **{("run_master.h5", i): "failed" for i in range(4)}}
    assert all("shorter than it declares" in err for _, err in rows.values())
    logged = {(Path(r["file"]).name, r["frame"]) for r in logged_failures(q)}
    assert logged == set(failures)


def test_truncated_data_file_is_retried_then_taken_when_complete(saxs_setup, saxs_local_cluster,
                                                                 tmp_path) -> None:
    """Watch: the frames of a truncated data file are retried (a bounded number of times),
    fail, and are integrated once the detector has written the file completely."""
    setup = saxs_setup()
    frames = frames_of(setup.shape, 4)
    staged = write_eiger_series(tmp_path / "staged", frames, n_frames=4, frames_per_file=4,
                                shape=setup.shape, name="run")
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, pattern="*.h5",
                   watch=True, retries=2, retry_delay=0.05, write_chi=False)
    q.start()
    try:
        data = setup.data / staged.data_files[0].name
        data.write_bytes(staged.data_files[0].read_bytes()[:2000])  # the writer is behind
        os.replace(staged.master, setup.data / staged.master.name)
        wait_until(lambda: q.stats()["failed"] == 4, 60, "the 4 frames failing")
        assert q.dispatcher.counters()["retried"] >= 4 * 2  # retried before they failed
        tmp = setup.data / ".run_data.tmp"  # the complete file, moved in
        tmp.write_bytes(staged.data_files[0].read_bytes())
        os.replace(tmp, data)
        wait_until(lambda: q.progress()["processed"] >= 4, 60, "the completed file")
        assert q.stats()["failed"] == 0
    finally:
        q.close()
    stack = read_stack(q.zarr_path)
    engine = setup.integrator()
    for row, i in enumerate(stack["frame_index"]):
        expected = engine.integrate(frames[i], invalid=INVALID)[0].mean
        # float32 stack vs float64 engine on the same array: 1e-6 relative covers the rounding
        np.testing.assert_allclose(stack["curves"]["R0"]["I"][row], expected, rtol=1e-6,
                                   equal_nan=True)
    assert sorted(stack["frame_index"]) == [0, 1, 2, 3]



def test_a_file_completed_while_its_frame_0_is_retried_is_listed_whole(saxs_setup,
                                                                      saxs_local_cluster) -> None:
    """Readdir of a plain file still being written (truncated, so its frame count cannot
    be read): its frame 0 stands in and is retried; once the file is complete, all its
    frames are listed and integrated, none left behind."""
    setup = saxs_setup()
    frames = np.stack(frames_of(setup.shape, 5))
    whole = setup.root / "whole.h5"
    with h5py.File(whole, "w") as fh:
        fh["/entry/data/data"] = frames
    path = setup.data / "growing.h5"
    path.write_bytes(whole.read_bytes()[:3000])
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data, pattern="*.h5",
                    retries=5, retry_delay=0.2, write_chi=False) as q:  # 6 s of retries
        q.readdir()
        wait_until(lambda: q.dispatcher.counters()["retried"] >= 1, 30, "frame 0 retried")
        tmp = setup.data / ".growing.tmp"
        tmp.write_bytes(whole.read_bytes())
        os.replace(tmp, path)  # the writer is done
        assert q.join(60)
    assert q.stats()["images processed"] == 5 and not q.failures()
    assert sorted(read_stack(q.zarr_path)["frame_index"]) == [0, 1, 2, 3, 4]

# -- 2. one corrupt chunk ------------------------------------------------------------------


def _corrupt_chunk(path: Path, index: int) -> None:
    with h5py.File(path, "r") as fh:
        info = fh["/entry/data/data"].id.get_chunk_info(index)
    with open(path, "r+b") as fh:  # keep the 12-byte header: the LZ4 blocks are garbage
        fh.seek(info.byte_offset + 12)
        fh.write(np.random.default_rng(0).integers(0, 255, info.size - 12, np.uint8).tobytes())


@pytest.mark.parametrize("frames_per_chunk, failed", [(1, [0]), (2, [0, 1])])
def test_corrupt_chunk_fails_only_its_frames(saxs_setup, frames_per_chunk, failed) -> None:
    """Frames 0..3 of one file in one task, chunk 0 corrupt: only the frames of that
    chunk fail, with its error; the others are integrated as if alone."""
    setup = saxs_setup()
    stack = np.stack(frames_of(setup.shape, 4))
    path = setup.data / "plain.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("/entry/data/data", data=stack, chunks=(frames_per_chunk, *setup.shape),
                          **hdf5plugin.Bitshuffle(cname="lz4"))
    _corrupt_chunk(path, 0)
    integ = setup.integrator()
    tasks = [FrameTask(str(path), str(setup.root / f"out_{i}"), i) for i in range(4)]
    results = process_frames("q", tasks, TaskOptions(write_chi=False), integrator=integ)
    assert [i for i, r in enumerate(results) if r.status != "ok"] == failed
    for i, r in enumerate(results):
        if i in failed:
            assert r.status == "error" and "corrupt chunk" in r.error and "frame 0" in r.error
        else:
            expected = integ.integrate(stack[i], invalid=INVALID)[0].mean
            # float32 result of the same array: 1e-6 relative
            np.testing.assert_allclose(r.curves[0].mean, expected, rtol=1e-6, equal_nan=True)


# -- 3. links out of the data root ---------------------------------------------------------


def _master_linking_to(master: Path, *targets: str, dataset: str = "/entry/data/data",
                       nimages: int | None = None) -> None:
    with h5py.File(master, "w") as fh:
        for k, target in enumerate(targets):
            fh[f"/entry/data/data_{k + 1:06d}"] = h5py.ExternalLink(target, dataset)
        if nimages is not None:
            fh["/entry/instrument/detector/detectorSpecific/nimages"] = nimages


def test_external_link_outside_the_data_root_fails_its_frames(saxs_setup, saxs_local_cluster,
                                                              tmp_path) -> None:
    """A master linking to another user's data file: its frames fail with "external link
    to … outside the data root"; with that directory allowed (``data_roots``, the
    ``--allow-data-root`` option) they are integrated."""
    setup = saxs_setup()
    other = tmp_path / "other_user"
    theirs = write_eiger_series(other, frames_of(setup.shape, 3), n_frames=3, frames_per_file=3,
                                shape=setup.shape, name="theirs")
    _master_linking_to(setup.data / "mine_master.h5", str(theirs.data_files[0]), nimages=3)
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data, pattern="*_master.h5",
                    retries=1, retry_delay=0.05) as q:
        q.readdir()
        assert q.join(60)
    failures = {f["frame"]: f["error"] for f in q.failures()}
    assert sorted(failures) == [0, 1, 2] and q.stats()["images processed"] == 0
    for error in failures.values():
        assert f"external link to {theirs.data_files[0]} outside the data root" in error
    assert all(state == "failed" for state, _ in ledger_rows(q).values())

    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data, pattern="*_master.h5",
                    zarr_path=tmp_path / "allowed.zarr", data_roots=[other]) as q:
        q.readdir()
        assert q.join(60)
    assert q.stats()["images processed"] == 3 and not q.failures()


def test_links_refused_by_the_reader(tmp_path: Path) -> None:
    """The reader's rules: a link leaving the root (absolute, ``..``, chained through a
    data file, or a VDS source) is refused before anything is read from it, ``/etc/passwd``
    and link loops too; a VDS whose source file is missing is incomplete, not fill values."""
    root, other = tmp_path / "root", tmp_path / "other"
    root.mkdir()
    outside = write_eiger_series(other, frames_of((8, 6), 2), n_frames=2, frames_per_file=2,
                                 shape=(8, 6), name="x").data_files[0]
    inside = write_eiger_series(root, frames_of((8, 6), 2), n_frames=2, frames_per_file=2,
                                shape=(8, 6), name="in").data_files[0]
    cases = {
        "absolute": str(outside),
        "dotdot": f"../other/{outside.name}",
        "passwd": "/etc/passwd",
    }
    for name, target in cases.items():  # part 1 inside, part 2 leaving
        _master_linking_to(root / f"{name}_master.h5", inside.name, target, nimages=4)
        with open_frames(root / f"{name}_master.h5", roots=[root]) as src:
            assert src.frame_count() == 4
            assert src.read(0, 2).shape == (2, 8, 6)
            with pytest.raises(ImageError, match="external link to .* outside the data root") as err:
                src.read(1, 3)
            assert "frame 2" in str(err.value) and not isinstance(err.value, FrameIncompleteError)
    _master_linking_to(root / "only_master.h5", str(outside), nimages=2)
    with pytest.raises(ImageError, match="outside the data root"):  # no part left to read
        open_frames(root / "only_master.h5", roots=[root])
    assert declared_frame_count(root / "only_master.h5") == 2  # the finder offers 2 frames
    # chained: the data file inside the root links on to one outside
    with h5py.File(root / "hop.h5", "w") as fh:
        fh["/entry/data/data"] = h5py.ExternalLink(str(outside), "/entry/data/data")
    _master_linking_to(root / "chain_master.h5", inside.name, "hop.h5", nimages=4)
    with open_frames(root / "chain_master.h5", roots=[root]) as src:
        with pytest.raises(ImageError, match=f"external link to {outside} outside"):
            src.read(2, 4)
    # a loop: the master's link leads back to itself
    _master_linking_to(root / "loop_master.h5", "loop_master.h5", dataset="/entry/data/data_000001")
    with pytest.raises(ImageError):
        open_frames(root / "loop_master.h5", roots=[root])
    # a plain file whose dataset is a VDS over a file outside, and one over a missing file
    for name, source in (("vds_out.h5", outside), ("vds_gone.h5", root / "gone.h5")):
        layout = h5py.VirtualLayout((2, 8, 6), np.uint32)
        layout[:] = h5py.VirtualSource(str(source), "/entry/data/data", shape=(2, 8, 6))
        with h5py.File(root / name, "w") as fh:
            fh.create_virtual_dataset("/entry/data/data", layout, fillvalue=0)
    with pytest.raises(ImageError, match="outside the data root"):
        open_frames(root / "vds_out.h5", roots=[root])
    with pytest.raises(FrameIncompleteError, match="gone.h5 of its virtual dataset does not exist"):
        open_frames(root / "vds_gone.h5", roots=[root])
    # inside the root: read; the default root is the opened file's directory
    _master_linking_to(root / "ok_master.h5", inside.name, nimages=2)
    with open_frames(root / "ok_master.h5") as src:
        assert src.read(0, 2).shape == (2, 8, 6)
    assert parse_args(["--allow-data-root", str(other), "--allow-data-root", "/x",
                       str(root)]).allow_data_root == (other, Path("/x"))


# -- 4. limits before memory ---------------------------------------------------------------

_SHAPE = (64, 48)
_DECLARED = 4 << 30  # what the damaged headers declare: 4 GiB
_BOMB = 256 << 20  # what the deflate bomb inflates to: 256 MiB


def _bomb_files(root: Path) -> dict[str, Path]:
    frame = np.arange(_SHAPE[0] * _SHAPE[1], dtype=np.uint32).reshape(_SHAPE)
    files = {}

    def dataset(name: str, chunks: tuple[int, ...], **filters) -> h5py.Dataset:
        fh = h5py.File(root / f"{name}.h5", "w")
        files[name] = root / f"{name}.h5"
        return fh.create_dataset("/entry/data/data", shape=(2, *_SHAPE), dtype="u4",
                                 chunks=chunks, **filters)

    def declaring(raw: bytes) -> bytes:  # the header's decoded size: 4 GiB
        return struct.pack(">Q", _DECLARED) + raw[8:]

    d = dataset("bslz4_frames", (1, *_SHAPE), **hdf5plugin.Bitshuffle(cname="lz4"))
    d.id.write_direct_chunk((0, 0, 0), declaring(compress_bslz4(frame[None])))
    d.file.close()
    d = dataset("bslz4_tiles", (1, 32, 48), **hdf5plugin.Bitshuffle(cname="lz4"))
    for r in (0, 32):
        d.id.write_direct_chunk((0, r, 0), declaring(compress_bslz4(frame[None, r : r + 32])))
    d.file.close()
    d = dataset("lz4", (1, *_SHAPE), **hdf5plugin.LZ4())
    d[0] = frame
    d.id.write_direct_chunk((0, 0, 0), declaring(d.id.read_direct_chunk((0, 0, 0))[1]))
    d.file.close()
    d = dataset("deflate_bomb", (1, *_SHAPE), compression="gzip")
    z, zeros = zlib.compressobj(1), bytes(1 << 20)
    d.id.write_direct_chunk((0, 0, 0), b"".join(z.compress(zeros) for _ in range(_BOMB >> 20)) + z.flush())
    d.file.close()
    return files


_CHILD = """
import json, re, sys
from pathlib import Path
from saxs_pipeline.frames.registry import open_frames
errors = {}
for name, path in json.loads(sys.argv[1]).items():
    try:
        with open_frames(path) as src:
            src.read(0, 1)
        errors[name] = None
    except ValueError as exc:
        errors[name] = str(exc)
# VmHWM: this process's own peak (ru_maxrss would include the parent's, inherited at exec)
peak = int(re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text())[1])
print(json.dumps({"errors": errors, "peak_mb": peak / 1024}))
"""


def test_chunks_declaring_huge_sizes_are_refused_before_decoding(tmp_path: Path) -> None:
    """Chunks whose headers declare 4 GiB (bitshuffle-LZ4 of whole frames and of tiles,
    LZ4) and a deflate chunk inflating to 256 MiB: each read is refused with the reason,
    in a child process whose peak RSS is measured. Bound: 200 MB, the interpreter with
    h5py and numpy needing about 70 MB -- a decode of any of them would pass it (the
    tiles crashed the process in the bitshuffle filter; the bomb took 256 MB more)."""
    files = _bomb_files(tmp_path)
    child = subprocess.run([sys.executable, "-c", _CHILD, json.dumps({k: str(v) for k, v in files.items()})],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr[-2000:]
    got = json.loads(child.stdout)
    errors = got["errors"]
    for name in ("bslz4_frames", "bslz4_tiles", "lz4"):
        assert f"header says {_DECLARED} bytes uncompressed" in errors[name], errors[name]
        assert "frame 0" in errors[name]
    assert "stores" in errors["deflate_bomb"] and "not read" in errors["deflate_bomb"]
    assert got["peak_mb"] < 200, f"peak RSS {got['peak_mb']:.0f} MB"


def test_deflate_is_cut_at_the_chunk_size_and_stored_size_is_bounded(tmp_path: Path) -> None:
    """A deflate chunk small enough to be read (within the stored-size limit) that
    inflates past its chunk's size is refused after the chunk's size, not inflated on;
    a bitshuffle chunk storing far more bytes than its frame is refused unread."""
    path = tmp_path / "small_bomb.h5"
    with h5py.File(path, "w") as fh:
        d = fh.create_dataset("/entry/data/data", shape=(1, *_SHAPE), dtype="u4",
                              chunks=(1, *_SHAPE), compression="gzip")
        d.id.write_direct_chunk((0, 0, 0), zlib.compress(bytes(8 << 20), 9))  # 8 MB from ~8 kB
        e = fh.create_dataset("/big", shape=(1, *_SHAPE), dtype="u4", chunks=(1, *_SHAPE),
                              **hdf5plugin.Bitshuffle(cname="lz4"))
        e.id.write_direct_chunk((0, 0, 0), compress_bslz4(np.zeros((1, *_SHAPE), np.uint32)) + bytes(1 << 20))
    with open_frames(path) as src, pytest.raises(ImageError, match="inflate to more than the chunk's 12288 bytes"):
        src.read(0, 1)
    with open_frames(path, dataset="/big") as src, pytest.raises(ImageError, match=r"stores \d+ bytes, more than"):
        src.read(0, 1)


# -- 5. chunks of many frames ---------------------------------------------------------------


def _bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_chunk_of_many_frames_is_read_once(saxs_setup) -> None:
    """A 64-frame single-chunk dataset, two tasks of 32 frames (each integrated in groups
    of 8): the chunk is read from the file once, not once per group or per task. Measured
    as the bytes the process reads (rchar): between 1 and 1.5 x the stored chunk (file
    metadata is a few kB; one read per group would be 8x, one per task 2x)."""
    setup = saxs_setup()
    path, other = setup.data / "onechunk.h5", setup.data / "warmup.h5"
    for p in (path, other):
        with h5py.File(p, "w") as fh:
            d = fh.create_dataset("/entry/data/data", data=np.stack(frames_of(setup.shape, 64)),
                                  chunks=(64, *setup.shape), **hdf5plugin.Bitshuffle(cname="lz4"))
            stored = d.id.get_chunk_info(0).size
    integ = setup.integrator()
    options = TaskOptions(write_chi=False)
    process_frames("q", [FrameTask(str(other), "x", 0)], options, integrator=integ)  # compiled
    before = _bytes_read()
    for first in (0, 32):
        results = process_frames("q", [FrameTask(str(path), "x", i) for i in range(first, first + 32)],
                                 options, integrator=integ)
        assert all(r.status == "ok" for r in results)
    read = _bytes_read() - before
    assert stored <= read < 1.5 * stored, f"{read} bytes read for a chunk of {stored}"



def test_a_slow_layout_is_reported_once(tmp_path: Path, caplog) -> None:
    """Files whose chunks hold more frames than a task takes: one warning for the run
    (the first such file), naming the chunk and task sizes; the frames are all offered."""
    from saxs_pipeline.pipeline.finder import FrameFinder
    from saxs_pipeline.pipeline.naming import OutputLayout

    for name in ("a.h5", "b.h5"):
        with h5py.File(tmp_path / name, "w") as fh:
            fh.create_dataset("/entry/data/data", data=np.zeros((40, 8, 6), np.uint16),
                              chunks=(40, 8, 6), compression="gzip")
    finder = FrameFinder(OutputLayout.make(tmp_path), "*.h5", task_frames=8)
    with caplog.at_level("WARNING", logger="saxs_pipeline.pipeline.finder"):
        found = [finder.find(str(tmp_path / name)) for name in ("a.h5", "b.h5")]
    assert [len(f.refs) for f in found] == [40, 40]
    slow = [r.getMessage() for r in caplog.records if "slow layout" in r.getMessage()]
    assert len(slow) == 1 and "a.h5" in slow[0] and "40 frames" in slow[0] and "at most 8" in slow[0]

# -- 6. non-finite pixels ------------------------------------------------------------------


def test_nonfinite_pixels_are_excluded_and_counted(saxs_setup) -> None:
    """A float32 frame with a +inf column, a -inf and a NaN pixel integrates exactly as
    the same frame with those pixels negative (excluded): the same exclusion path in the
    kernel, so the same bits (tolerance 0); the task counts them in the frame's result.
    The engine excludes them too where negatives are kept, and in the per-bin sums."""
    from saxs_pipeline.ops.integrate import integrate
    from saxs_pipeline.ops.sums import frame_sums

    setup = saxs_setup()
    base = frames_of(setup.shape, 1)[0].astype(np.float32)
    bad, marked = base.copy(), base.copy()
    bad[:, 10], bad[3, 4], bad[5, 6] = np.inf, -np.inf, np.nan
    marked[:, 10] = marked[3, 4] = marked[5, 6] = -1.0
    path = setup.data / "float.h5"
    with h5py.File(path, "w") as fh:
        fh["/entry/data/data"] = np.stack([bad, base])
    integ = setup.integrator(with_std=True)
    results = process_frames("q", [FrameTask(str(path), str(setup.root / f"f{i}"), i) for i in (0, 1)],
                             TaskOptions(write_chi=False), integrator=integ)
    assert [r.status for r in results] == ["ok", "ok"]
    assert [r.nonfinite_pixels for r in results] == [setup.shape[0] + 2, 0]
    expected = integ.integrate(marked)[0]
    got = results[0].curves[0]
    for name in ("mean", "poisson", "std"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name).astype(np.float32))
    assert np.isfinite(got.mean).any() and not np.isinf(got.mean).any()

    op = integ.operators[0]
    kept = base.copy()
    kept[:, 10] = kept[3, 4] = kept[5, 6] = np.nan  # NaN: excluded with negatives kept
    np.testing.assert_array_equal(integrate(op, bad, exclude_negative=False),
                                  integrate(op, kept, exclude_negative=False))
    s_bad, s_marked = frame_sums(op, bad), frame_sums(op, marked)
    np.testing.assert_array_equal(s_bad.signal, s_marked.signal)
    np.testing.assert_array_equal(s_bad.count, s_marked.count)
