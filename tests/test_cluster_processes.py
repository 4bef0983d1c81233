"""A real cluster of processes on 127.0.0.1: ``dask scheduler --preload saxs_pipeline.plugins.stats``
plus two ``saxs-worker`` processes (the console script with ``--calibration``, and ``dask
saxs-worker`` without), ephemeral ports through a scheduler file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client

from saxs_pipeline.pipeline.queue import ImageQueue
from saxs_pipeline.plugins.stats import scheduler_stats
from saxs_pipeline.plugins.worker import IntegratorPlugin

pytestmark = pytest.mark.timeout(180)

BIN = Path(sys.executable).parent


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL after a bounded wait. ``procs[0]`` is the scheduler: it goes
    last, since workers that lose their scheduler first wait for it to come back."""
    for group in (procs[1:], procs[:1]):
        for p in group:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in group:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def wait_for_file(path: Path, procs: list[subprocess.Popen], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for p in procs:
            assert p.poll() is None, f"{p.args} exited with {p.returncode}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process's life
    return subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def process_cluster(tmp_path_factory, saxs_setup_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    setup = saxs_setup_factory(tmp)
    sched_file = tmp / "scheduler.json"
    procs: list[subprocess.Popen] = []
    client = None
    try:
        procs.append(spawn([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                            "--no-dashboard", "--scheduler-file", str(sched_file),
                            "--preload", "saxs_pipeline.stats"], tmp / "scheduler.log"))
        wait_for_file(sched_file, procs)
        common = ["--scheduler-file", str(sched_file), "--nthreads", "1", "--host", "127.0.0.1",
                  "--no-dashboard"]
        procs.append(spawn([str(BIN / "saxs-worker"), "--calibration", str(setup.calibration),
                            *common, "--name", "w-console"], tmp / "worker1.log"))
        procs.append(spawn([str(BIN / "dask"), "saxs-worker", *common, "--name", "w-dask-cli"],
                           tmp / "worker2.log"))
        client = Client(scheduler_file=str(sched_file), timeout=30)
        client.wait_for_workers(2, timeout=60)
        yield client, setup, sched_file, tmp
    finally:
        if client is not None:
            client.close()
        stop(procs)


def test_200_frames_on_scheduler_and_two_saxs_workers(process_cluster) -> None:
    client, setup, _, tmp = process_cluster
    for i in range(200):
        setup.write(i)
    names = sorted(client.run(lambda dask_worker: dask_worker.name).values())
    assert names == ["w-console", "w-dask-cli"]
    # the worker started with --calibration built its integrator at start-up
    built = client.run(lambda dask_worker: sorted(
        k for p in dask_worker.plugins.values() if isinstance(p, IntegratorPlugin)
        for k in p.integrators))
    assert sorted(built.values()) == [[], ["default"]]
    # Dask's profiler is off in our workers (its call trees grow the worker's memory)
    profiling = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    assert not any(profiling.values()), profiling
    with ImageQueue(client, setup.calibration, setup.data) as q:
        q.readdir()
        assert q.join(60)
    work = setup.root / "exp" / "work" / "data"
    assert len(list(work.glob("frame_*.chi"))) == 200
    setup.check_stack(q.zarr_path, range(200), chi_dir=work)
    snap = scheduler_stats(client, q.queue_id)  # the preloaded SaxsStats
    assert snap["queues"][q.queue_id]["processed"] == 200 and snap["queue_length"] == 0


def test_sigkill_of_a_worker_process_mid_run(process_cluster) -> None:
    client, setup, _, tmp = process_cluster
    n = 400
    data = setup.root / "killrun"
    data.mkdir()
    for i in range(n):
        setup.write(i, data)
    pids = client.run(os.getpid)
    q = ImageQueue(client, setup.calibration, data, batch_size=4, max_in_flight=6,
                   zarr_path=tmp / "killrun.zarr")
    q.start()
    q.readdir()
    victim = max(pids, key=pids.get)
    while q.progress()["done"] < 60 or not client.processing([victim])[victim]:
        time.sleep(0.002)
    os.kill(pids[victim], signal.SIGKILL)  # the worker process, not its nanny, mid-task
    assert q.join(90)
    stats = q.close()
    assert stats["images processed"] == n and stats["failed"] == 0
    setup.check_stack(q.zarr_path, range(n))
    assert len(list((setup.root / "work" / "killrun").glob("frame_*.chi"))) == n
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def test_a_worker_joining_later_gets_the_plugin(process_cluster) -> None:
    client, setup, sched_file, tmp = process_cluster
    q = ImageQueue(client, setup.calibration, setup.data)
    q.start()
    late = spawn([sys.executable, "-m", "saxs_pipeline.plugins.worker", "--scheduler-file", str(sched_file),
                  "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--name", "w-late"],
                 tmp / "late.log")
    try:
        client.wait_for_workers(3, timeout=60)
        addr = next(a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
                    if w["name"] == "w-late")
        has = client.run(lambda dask_worker, qid=q.queue_id: any(
            qid in p.integrators for p in dask_worker.plugins.values()
            if isinstance(p, IntegratorPlugin)), workers=[addr])
        assert has == {addr: True}
    finally:
        q.close()
        stop([late])


def test_saxs_worker_class_fails_fast_on_a_bad_calibration(process_cluster) -> None:
    _, _, sched_file, tmp = process_cluster
    bad = tmp / "bad.json"
    bad.write_text(json.dumps({"Geometry": {}, "Wavelength": 1.54, "Masks": []}))
    env = dict(os.environ, DASK_SAXS__CALIBRATION=str(bad))
    r = subprocess.run([str(BIN / "dask"), "worker", "--scheduler-file", str(sched_file),
                        "--worker-class", "saxs_pipeline.plugins.worker.SaxsWorker", "--no-nanny",
                        "--host", "127.0.0.1", "--no-dashboard"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "bad.json" in r.stderr
