"""The image queue on a real LocalCluster (2 worker processes x 1 thread)."""

from __future__ import annotations

import gc
import io
import json
import os
import signal
import threading
import time

import pytest

from saxs_pipeline.pipeline.queue import ImageQueue, QueueClosedError
from saxs_pipeline.plugins.stats import scheduler_stats
from saxs_pipeline.stack.read import read_stack

pytestmark = pytest.mark.timeout(180)


def test_readdir_200_frames_match_the_engine(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup(n_frames=200)
    (setup.root / "exp" / "results").mkdir()
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data)
    q.start()
    assert gc.get_freeze_count() > 0  # the driver's heap as it started: out of full collections
    q.readdir()
    assert q.join(60)
    stats = q.close()
    assert gc.get_freeze_count() == 0  # given back
    assert stats["images processed"] == 200 and stats["failed"] == 0 and stats["queue length"] == 0
    work = setup.root / "exp" / "work"
    assert len(list((work / "data").glob("*.chi"))) == 200  # the run's own folder
    assert q.zarr_path == work / "data.zarr"
    setup.check_stack(q.zarr_path, range(200), chi_dir=work / "data")
    lines = (setup.root / "exp" / "results" / "filelist_data.log").read_text().splitlines()
    assert len(lines) == 200 and sorted(lines)[0].startswith("/work/data/frame_00000.chi, ")
    assert q.closed and not q.aborted
    assert q.close()["images processed"] == 200  # closing twice is harmless
    assert q.abort()["images processed"] == 200 and not q.aborted  # so is aborting after


def test_exactly_once_redo_and_reporting(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup(n_frames=30)
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, batch_size=4)
    assert q.latest() is None
    q.start()
    paths = [str(p) for p in setup.frames]
    assert q.submit_paths(paths) == 30
    assert q.submit_paths(paths[:10] + [os.path.join(str(setup.data), ".", p.name)
                                        for p in setup.frames[:5]]) == 0
    outside = setup.root / "elsewhere.tif"
    assert q.submit_paths([str(outside), str(setup.data / "notes.txt")]) == 0
    assert q.join(30)
    chi0 = setup.root / "exp" / "work" / "data" / "frame_00000.chi"
    first_mtime = chi0.stat().st_mtime_ns
    q.readdir(wait=True)  # "Redo all images": everything again, rows updated in place
    assert q.join(30)
    assert chi0.stat().st_mtime_ns > first_mtime
    stats = q.stats()
    assert stats["images processed"] == 60 and stats["pics"] == 60 and stats["frames per sec"] > 0
    assert set(stats) == {"images processed", "queue length", "time", "start time",
                          "frames per sec", "time interval", "pics", "failed", "skipped",
                          "cluster", "workers", "workers silent", "workers joined",
                          "workers left", "worker events", "frames by worker"}
    assert sum(stats["frames by worker"].values()) == 60 and stats["workers left"] == 0
    latest = q.latest()
    assert latest["filename"].startswith(str(setup.root / "exp" / "work" / "data" / "frame_"))
    assert latest["Image"].endswith(".tif") and latest["graphs"][0]["kind"] == "Radial"
    assert len(latest["graphs"][0]["array"]) == 3 and "Integparam" in latest["graphs"][0]
    hist = q.history()
    assert len(hist["history"]) == 30  # readdir cleared the history first
    params = hist["IntegralParameters"]["R0"]
    assert len(params["file"]) == len(params["I0"]) == len(params["time"]) == 30
    files = q.fileslist()
    assert list(files) == ["Radial0"] and len(files["Radial0"]) == 30
    assert files["Radial0"] == sorted(files["Radial0"]) and files["Radial0"][0] == str(chi0)
    q.close()
    setup.check_stack(q.zarr_path, range(30))
    assert q.submit_paths(paths) == 0
    with pytest.raises(QueueClosedError):
        q.readdir()


def test_frames_that_never_complete_fail_after_their_retries(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup(n_frames=4)
    whole = setup.frame_bytes(4)
    (setup.data / setup.name(4)).write_bytes(whole[: len(whole) // 3])  # never completed
    (setup.data / "broken.tif").write_bytes(b"not a TIFF file")
    late = setup.data / setup.name(5)
    late.write_bytes(setup.frame_bytes(5)[:200])  # completed while the queue retries it
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, retries=3, retry_delay=0.1)
    q.start()
    q.readdir()
    time.sleep(0.3)
    late.write_bytes(setup.frame_bytes(5))
    assert q.join(30)
    stats = q.close()
    assert stats["images processed"] == 5 and stats["failed"] == 2
    failures = {os.path.basename(f["file"]): f for f in q.failures()}
    assert failures[setup.name(4)]["attempts"] == 4 and "incomplete" in failures[setup.name(4)]["error"]
    assert failures["broken.tif"]["attempts"] == 1
    logged = [json.loads(line) for line in q.failures_log.read_text().splitlines()]
    assert sorted(os.path.basename(r["file"]) for r in logged) == ["broken.tif", setup.name(4)]
    assert all(r["queue"] == q.queue_id and r["time"] > 0 for r in logged)
    setup.check_stack(q.zarr_path, [0, 1, 2, 3, 5])
    deadline = time.monotonic() + 5
    while scheduler_stats(saxs_local_cluster, q.queue_id)["queues"][q.queue_id]["failed"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_slow_writer_is_waited_for_while_the_file_grows(saxs_setup, saxs_local_cluster) -> None:
    """A detector that takes longer than the whole retry budget, but keeps writing."""
    setup = saxs_setup(n_frames=0)
    data = setup.frame_bytes(0)
    path = setup.data / setup.name(0)
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, retries=3, retry_delay=0.1)
    q.start()
    parts = 8  # 8 x 0.25 s = 2 s of writing; without growth 0.1 + 0.2 + 0.4 s would fail it
    with open(path, "wb") as fh:
        for k in range(parts):
            fh.write(data[k * len(data) // parts : (k + 1) * len(data) // parts])
            fh.flush()
            if k == 0:
                assert q.submit_paths([path]) == 1  # an early event: the file is incomplete
            time.sleep(0.25)
    assert q.join(30)
    stats = q.close()
    assert stats["failed"] == 0 and stats["images processed"] == 1
    setup.check_stack(q.zarr_path, [0])


def test_resume_goes_by_the_ledger_and_overwrite_false_keeps_chi_files(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup(n_frames=12)
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data) as q:
        q.readdir()
        assert q.join(30)
    work = setup.root / "exp" / "work" / "data"
    chi = work / "frame_00003.chi"
    mtime = chi.stat().st_mtime_ns
    (work / "frame_00004.chi").unlink()  # a .chi file says nothing: the ledger does
    setup.write(5)  # rewritten: resume takes it again
    setup.write(12)  # new
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, resume=True)
    with q:
        q.readdir()
        assert q.join(30)
    stats = q.stats()
    assert stats["images processed"] == 2 and stats["skipped"] == 11
    assert chi.stat().st_mtime_ns == mtime and not (work / "frame_00004.chi").exists()
    setup.check_stack(q.zarr_path, range(13))  # the stack was continued, not doubled
    cal = json.loads(setup.calibration.read_text())
    cal["OverwriteFiles"] = False  # another calibration: its own stack and .chi folder
    with ImageQueue(saxs_local_cluster, cal, setup.data, attachments=q.attachments) as q3:
        q3.readdir()
        assert q3.join(30)
    assert q3.zarr_path != q.zarr_path and q3.zarr_path.name.startswith("data-")
    assert chi.stat().st_mtime_ns == mtime
    assert len(list((work.parent / q3.zarr_path.stem).glob("*.chi"))) == 13
    assert read_stack(q3.zarr_path)["n_valid"] == 13


def test_outdir_and_zarr_path(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup(n_frames=3)
    sub = setup.data / "run2"
    sub.mkdir()
    setup.write(3, sub)
    out = setup.root / "out.d"
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data, out_dir=out) as q:
        q.readdir()
        assert q.join(30)
    assert sorted(p.name for p in out.iterdir()) == [
        "data.ledger", "data.zarr", "data.zarr.lock", "data_frame_00000.chi",
        "data_frame_00001.chi", "data_frame_00002.chi", "data_run2_frame_00003.chi"]
    assert "run2/frame_00003.tif" in list(read_stack(out / "data.zarr")["filename"])


def test_abort_cancels_queued_work(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup(n_frames=150)
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, batch_size=2, max_in_flight=4,
                   write_svg=True)  # svg plots make each task slow enough to abort mid-run
    q.start()
    q.readdir()
    while q.progress()["done"] < 4:
        time.sleep(0.01)
    stats = q.abort()
    assert q.aborted and q.closed
    assert stats["images processed"] < 150 and stats["queue length"] == 0
    assert q.submit_paths([str(p) for p in setup.frames]) == 0
    stack = read_stack(q.zarr_path)
    assert stack["n_valid"] == stats["images processed"] == len(set(stack["filename"]))


def test_watch_with_partial_writes_and_a_killed_worker(saxs_setup, saxs_local_cluster) -> None:
    """A detector thread writes frames in parts; one worker process is SIGKILLed mid-run:
    every frame ends up integrated from its complete data, exactly once."""
    setup = saxs_setup(n_frames=0)
    n = 60
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, watch=True, batch_size=4,
                   stable_time=0.5)
    q.start()

    def detector() -> None:
        for i in range(n):
            data = setup.frame_bytes(i)
            with open(setup.data / setup.name(i), "wb") as fh:
                for k in range(3):
                    fh.write(data[k * len(data) // 3 : (k + 1) * len(data) // 3])
                    fh.flush()
                    time.sleep(0.01)

    writer = threading.Thread(target=detector)
    writer.start()
    pids = saxs_local_cluster.run(os.getpid)
    while q.progress()["done"] < 15:
        time.sleep(0.01)
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    writer.join()
    deadline = time.monotonic() + 60
    while q.progress()["done"] < n and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = q.close()
    assert stats["images processed"] == n and stats["failed"] == 0
    setup.check_stack(q.zarr_path, range(n))
    assert scheduler_stats(saxs_local_cluster, q.queue_id)["queues"][q.queue_id]["processed"] == n


def test_polling_watch_for_network_file_systems(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup(n_frames=0)
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, watch=True, poll=True,
                   stable_time=0.3)
    q.start()
    for i in range(5):
        setup.write(i)
    deadline = time.monotonic() + 30
    while q.progress()["done"] < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert q.close()["images processed"] == 5
    setup.check_stack(q.zarr_path, range(5))


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# Driver memory bound for 20,000 frames: what is done lives in the ledger (SQLite, on
# disk), so the per-frame state the driver keeps is only the bounded history (20,000
# entries x 5 fields); everything else is bounded by the in-flight work. The bound leaves
# room for allocator noise and SQLite's page cache.
MEMORY_BOUND_MB = 64.0


@pytest.mark.scale
@pytest.mark.timeout(240)
def test_readdir_20000_frames_memory_stays_flat(saxs_setup, saxs_local_cluster) -> None:
    from saxs_pipeline.cli.progress import show_progress

    n = 20_000
    setup = saxs_setup(n_frames=0, shape=(16, 16))
    templates = [setup.frame_bytes(i) for i in range(32)]
    for i in range(n):
        (setup.data / setup.name(i)).write_bytes(templates[i % 32])
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, batch_size=64)
    q.start()
    q.submit_paths(str(setup.data / setup.name(i)) for i in range(256))  # warm-up
    assert q.join(30)
    base, peak = rss_mb(), [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    bar = io.StringIO()
    try:
        q.readdir()
        show_progress(q, file=bar)
    finally:
        stop.set()
        sampler.join()
    stats = q.close()
    growth = peak[0] - base
    print(f"driver RSS {base:.0f} MB -> peak {peak[0]:.0f} MB (+{growth:.1f} MB) for {n} frames")
    assert stats["failed"] == 0 and stats["images processed"] == n + 256
    assert f"{n + 256}/{n + 256}" in bar.getvalue()  # the progress bar reached the end
    assert growth < MEMORY_BOUND_MB
    stack = read_stack(q.zarr_path)
    assert stack["n_valid"] == n == len(set(stack["filename"]))
