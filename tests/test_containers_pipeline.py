"""Multi-frame HDF5 files and CBF/EDF through the pipeline, on a real LocalCluster and as
real saxsdog processes: every (file, frame) once, each curve equal to integrating that
frame's array directly, in readdir, in watch (files appearing while the run is live) and
after a SIGKILL of the driver and a resume."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from saxs_pipeline.demo.eiger import write_eiger_series
from saxs_pipeline.pipeline.queue import ImageQueue
from saxs_pipeline.stack.read import read_stack

from procs import saxsdog, stop, wait_until

pytestmark = pytest.mark.timeout(240)

INVALID = 2**32 - 1
# Tolerance: the stack stores float32 curves; integrating the same uint32 array directly
# differs only by that rounding (1e-7 relative), well inside 1e-6.
RTOL = 1e-6


def frames_of(setup, n: int, offset: int = 0) -> list[np.ndarray]:
    out = []
    for i in range(offset, offset + n):
        img = np.random.default_rng([11, i]).poisson(30 + i % 40, setup.shape).astype(np.uint32)
        img[5, 7] = img[9, 2] = INVALID  # the detector's own bad pixels
        out.append(img)
    return out


def write_series(setup, directory: Path, n_per_file: int, files: int = 2, name: str = "run"):
    frames = frames_of(setup, n_per_file * files)
    series = write_eiger_series(directory, frames, n_frames=len(frames),
                                frames_per_file=n_per_file, shape=setup.shape, name=name)
    return series, frames


def check(setup, stack_path: Path, source: str, frames: list[np.ndarray]) -> None:
    stack = read_stack(stack_path)
    pairs = list(zip(stack["filename"], stack["frame_index"], strict=True))
    assert len(pairs) == len(set(pairs)) == len(frames)
    assert {s for s, _ in pairs} == {source}
    engine = setup.integrator()
    r0 = stack["curves"]["R0"]
    for row, (_, i) in enumerate(pairs):
        expected = engine.integrate(frames[i], invalid=INVALID)[0]
        np.testing.assert_allclose(r0["I"][row], expected.mean, rtol=RTOL, equal_nan=True)
        np.testing.assert_allclose(r0["poisson"][row], expected.poisson, rtol=RTOL, equal_nan=True)


def test_readdir_of_a_master_with_two_data_files(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup()
    series, frames = write_series(setup, setup.data, 500)
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, pattern="*.h5",
                   batch_size=32, write_chi=False)
    with q:
        q.readdir()
        assert q.join(120)
    stats = q.stats()
    assert stats["images processed"] == 1000 and stats["failed"] == 0
    check(setup, q.zarr_path, "run_master.h5", frames)
    assert not list((setup.root / "exp" / "work").rglob("*.chi"))  # --no-chi


def test_chi_names_carry_the_frame_index(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup()
    write_series(setup, setup.data, 3, files=1)
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data, pattern="*.h5") as q:
        q.readdir()
        assert q.join(60)
    names = sorted(p.name for p in (setup.root / "exp" / "work" / "data").glob("*.chi"))
    assert names == ["run_master_000000.chi", "run_master_000001.chi", "run_master_000002.chi"]


def test_watch_takes_data_files_as_they_are_closed(saxs_setup, saxs_local_cluster, tmp_path) -> None:
    setup = saxs_setup()
    staged = tmp_path / "staged"
    series, frames = write_series(setup, staged, 40)
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, pattern="*.h5",
                   watch=True, retries=2, retry_delay=0.1, write_chi=False)
    q.start()
    try:
        # as the DECTRIS file writer: the master, then each data file once it is closed
        # (moved in); the second part arrives after its frames already failed as
        # incomplete, and is taken again when it comes
        shutil.move(series.master, setup.data / series.master.name)
        shutil.move(series.data_files[0], setup.data / series.data_files[0].name)
        wait_until(lambda: q.progress()["processed"] >= 40, 60, "the first part")
        wait_until(lambda: q.stats()["failed"] == 40, 60, "the missing part failing")
        shutil.move(series.data_files[1], setup.data / series.data_files[1].name)
        wait_until(lambda: q.progress()["processed"] >= 80, 60, "the second part")
        assert q.stats()["failed"] == 0  # they failed while missing, then succeeded
    finally:
        q.close()
    check(setup, q.zarr_path, "run_master.h5", frames)


def test_sigkill_of_the_driver_then_resume(saxs_setup, tmp_path) -> None:
    setup = saxs_setup()
    series, frames = write_series(setup, setup.data, 500)
    stack = setup.root / "exp" / "work" / "data.zarr"
    args = ["-c", str(setup.calibration), "-t", "2", "--pattern", "*.h5", "--no-chi", "-S",
            "--batch-size", "8", str(setup.data)]
    dog = saxsdog(args, tmp_path / "first.log", tmp_path)
    try:
        def committed() -> int:
            try:
                return read_stack(stack)["n_valid"]
            except (FileNotFoundError, KeyError):
                return 0

        wait_until(lambda: committed() >= 200 or dog.poll() is not None, 120, "200 rows")
        os.kill(dog.pid, signal.SIGKILL)
        dog.wait(10)
    finally:
        stop([dog])
    assert committed() < 1000
    time.sleep(1.0)  # the killed driver's worker processes notice and go
    again = saxsdog([*args[:-1], "-r", str(setup.data)], tmp_path / "again.log", tmp_path)
    assert again.wait(180) == 0, (tmp_path / "again.log").read_text()
    check(setup, stack, "run_master.h5", frames)


def test_cbf_and_edf_integrate_like_the_same_array_as_tiff(saxs_setup, saxs_local_cluster) -> None:
    import fabio

    setup = saxs_setup(n_frames=1)
    image = setup.image(0)
    fabio.cbfimage.CbfImage(data=image).write(str(setup.data / "frame.cbf"))
    fabio.edfimage.EdfImage(data=image).write(str(setup.data / "frame.edf"))
    for pattern, name in (("*.cbf", "frame.cbf"), ("*.edf", "frame.edf")):
        q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, pattern=pattern,
                       zarr_path=setup.root / f"{name}.zarr")
        with q:
            q.readdir()
            assert q.join(30)
        got = read_stack(q.zarr_path)["curves"]["R0"]["I"][0]
        tiff = setup.integrator().integrate(image)[0].mean
        np.testing.assert_array_equal(got, tiff.astype(np.float32))  # the same array: exact


def test_bad_containers_are_reported_and_the_rest_goes_on(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup()
    series, frames = write_series(setup, setup.data, 5, files=1)
    (setup.data / "wrong.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # no HDF5 inside
    other = setup.data / "sub"
    small = [np.zeros((10, 10), np.uint32)] * 2
    write_eiger_series(other, small, n_frames=2, frames_per_file=2, shape=(10, 10),
                       name="small")  # another detector's shape
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data, pattern="*.h5",
                    retries=1, retry_delay=0.05) as q:
        q.readdir()
        assert q.join(60)
    failures = {(f["file"].split("/")[-1], f["frame"]): f["error"] for f in q.failures()}
    assert any(k[0] == "wrong.h5" for k in failures)
    shape_errors = [e for k, e in failures.items() if k[0] == "small_master.h5"]
    assert len(shape_errors) == 2 and all("small_master.h5" in e for e in shape_errors)
    assert q.stats()["images processed"] == 5
