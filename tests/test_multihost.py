"""A cluster of three hosts made of network namespaces (see tests/netns.py): the
scheduler and the driver (``saxsdog``) on ``s``, a ``saxs-worker`` on ``w1`` and ``w2``,
all sharing the test's data directory. Each fault test asserts every frame integrated
exactly once (``.chi`` files, stack rows, ledger), the fault told in the driver's log,
and the run completing on its own."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from hostcluster import Cluster, elsewhere
from netns import Net, unavailable
from procs import ledger_counts, wait_until

pytestmark = pytest.mark.timeout(180)

@pytest.fixture
def net():
    why = unavailable()
    if why is not None:
        print(f"multi-host tests skipped: {why}")
        pytest.skip(f"cannot make network namespaces: {why}")
    hosts = Net(["s", "w1", "w2"])
    try:
        yield hosts
    finally:
        hosts.close()


def chi_count(work: Path) -> int:
    return len(list((work / "data").glob("*.chi")))  # the run's own folder


def by_worker(log: str) -> dict[str, int]:
    m = re.search(r"frames by worker: ([^;]*);", log)
    assert m, log[-3000:]
    return {k: int(v) for k, v in (p.rsplit(" ", 1) for p in m.group(1).split(", "))}


def event(worker: str, what: str, log: str) -> bool:
    """The driver logged ``what`` about ``worker`` (as its own line, not a repeat summary)."""
    return re.search(rf"saxs_pipeline.pipeline.workers: worker {worker} \(\S+\) {what}",
                     log) is not None


def check_exactly_once(setup, n: int) -> None:
    work = setup.root / "exp" / "work"
    assert chi_count(work) == n
    setup.check_stack(work / "data.zarr", range(n), chi_dir=work / "data")
    counts = ledger_counts(work / "data.zarr")
    assert counts["done"] == n and counts["pending"] == 0 and counts["failed"] == 0
    assert counts["n_rows"] == counts["done_rows"] == n


def run_args(setup, batch: int = 4) -> list[str]:
    return ["-c", str(setup.calibration), "--batch-size", str(batch), str(setup.data)]


def watching(setup, batch: int = 2) -> list[str]:
    """A run that lasts until the test ends it (``end_watching``): what a test waits for
    after a fault then cannot be cut short by the frames running out sooner than the
    fault's consequence comes, however fast the workers are."""
    args = run_args(setup, batch)
    return [*args[:-1], "-w", args[-1]]


def end_watching(dog, log: Path, done: Callable[[str], bool], what: str) -> str:
    """Wait (bounded) until ``done(log text)``, then Ctrl-C the run; its log."""
    wait_until(lambda: done(log.read_text()), 120, what, [dog])
    for p in [psutil.Process(dog.pid), *psutil.Process(dog.pid).children(recursive=True)]:
        p.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C does
    assert dog.wait(60) == 0, log.read_text()[-4000:]
    return log.read_text()


def test_two_worker_hosts_share_a_run(net, saxs_setup, tmp_path) -> None:
    n = 400
    setup = saxs_setup(n_frames=n)
    c = Cluster(net, tmp_path)
    c.scheduler()
    c.worker("w1"), c.worker("w2")
    dog = c.saxsdog(run_args(setup), tmp_path / "dog.log")
    assert dog.wait(120) == 0, (tmp_path / "dog.log").read_text()
    log = (tmp_path / "dog.log").read_text()
    counts = by_worker(log)
    assert set(counts) == {"w1", "w2"} and sum(counts.values()) == n, counts
    check_exactly_once(setup, n)


def test_a_worker_host_lost_mid_run(net, saxs_setup, tmp_path) -> None:
    """w1's cable is pulled mid-run, then its processes are killed: the scheduler removes
    it after its ttl, its tasks run on w2; the driver logs the silence and the loss. The
    run watches until the test has seen every frame and the loss (``watching``: a walk of
    4000 frames had ended before the ttl at 320 frames/s)."""
    n = 1000
    setup = saxs_setup(n_frames=n)
    work = setup.root / "exp" / "work"
    c = Cluster(net, tmp_path)
    c.scheduler()
    c.worker("w1"), c.worker("w2")
    log_path = tmp_path / "dog.log"
    dog = c.saxsdog(watching(setup), log_path)
    wait_until(lambda: chi_count(work) >= 100, 60, "frames before the loss", [dog])
    net["w1"].link(False)
    time.sleep(0.5)
    net["w1"].kill_all()
    log = end_watching(dog, log_path, lambda text: event("w1", "left the cluster", text)
                       and chi_count(work) >= n, "the loss and every frame")
    assert event("w1", "silent for", log), log[-3000:]
    assert "workers joined 0, left 1" in log and "Traceback" not in log, log[-4000:]
    counts = by_worker(log)
    assert counts["w2"] > counts.get("w1", 0) and sum(counts.values()) >= n, counts
    check_exactly_once(setup, n)


def test_a_worker_host_joining_later_gets_the_plugin_and_takes_work(net, saxs_setup,
                                                                     tmp_path) -> None:
    n = 800
    setup = saxs_setup(n_frames=n)
    work = setup.root / "exp" / "work"
    c = Cluster(net, tmp_path)
    c.scheduler()
    c.worker("w1")
    dog = c.saxsdog(run_args(setup, 2), tmp_path / "dog.log")
    wait_until(lambda: chi_count(work) >= 100, 60, "frames before w2 joins", [dog])
    c.worker("w2")
    assert dog.wait(120) == 0, (tmp_path / "dog.log").read_text()
    log = (tmp_path / "dog.log").read_text()
    assert event("w2", "joined the cluster", log), log[-3000:]
    counts = by_worker(log)
    assert counts["w2"] > 0 and sum(counts.values()) == n, counts
    assert "workers joined 1, left 0" in log and "Traceback" not in log, log[-4000:]
    check_exactly_once(setup, n)


def test_a_partition_between_the_worker_hosts_and_the_scheduler(net, saxs_setup,
                                                                 tmp_path) -> None:
    """Both worker hosts lose the network for 5 s (less than the scheduler's 10 s ttl):
    the driver says they are silent, then heard from again; every frame is integrated
    once. The run watches until the test has seen both (``watching``)."""
    n = 1500
    setup = saxs_setup(n_frames=n)
    work = setup.root / "exp" / "work"
    c = Cluster(net, tmp_path, ttl="10s")
    c.scheduler()
    c.worker("w1"), c.worker("w2")
    log_path = tmp_path / "dog.log"
    dog = c.saxsdog(watching(setup), log_path)
    wait_until(lambda: chi_count(work) >= 100, 60, "frames before the partition", [dog])
    for w in ("w1", "w2"):
        net[w].link(False)
    time.sleep(5.0)
    for w in ("w1", "w2"):
        net[w].link(True)
    log = end_watching(dog, log_path, lambda text: chi_count(work) >= n and all(
        event(w, "heard from again", text) for w in ("w1", "w2")),
        "every frame and both hosts heard from again")
    for w in ("w1", "w2"):
        assert event(w, "silent for", log) and event(w, "heard from again", log), log[-3000:]
    assert "Traceback" not in log, log[-4000:]
    counts = by_worker(log)
    assert sum(counts.values()) >= n, counts
    check_exactly_once(setup, n)


def test_worker_hosts_see_the_data_under_another_path(net, saxs_setup, tmp_path) -> None:
    """The workers see ``<tmp>/exp`` only as ``<tmp>/wview`` (the driver's path is an
    empty directory for them): with ``--path-map`` they read the frames and write the
    .chi files there; the driver's stack, ledger and file list keep the driver's paths."""
    n = 200
    setup = saxs_setup(n_frames=n)
    real, seen = setup.root / "exp", tmp_path / "wview"
    probe = net["w1"].run(elsewhere((real, seen), ["ls", "-A", str(real)]), tmp_path / "probe.log")
    assert probe.wait(20) == 0, (tmp_path / "probe.log").read_text()
    assert (tmp_path / "probe.log").read_text().strip() == ""  # hidden from the workers
    c = Cluster(net, tmp_path)
    c.scheduler()
    c.worker("w1", view=(real, seen)), c.worker("w2", view=(real, seen))
    dog = c.saxsdog([*run_args(setup), "--path-map", f"{real}={seen}"], tmp_path / "dog.log")
    assert dog.wait(120) == 0, (tmp_path / "dog.log").read_text()
    log = (tmp_path / "dog.log").read_text()
    assert set(by_worker(log)) == {"w1", "w2"}
    check_exactly_once(setup, n)
    listed = "".join(p.read_text() for p in (real / "results").glob("*") if p.is_file())
    assert listed.count(".chi") == n and str(seen) not in listed, listed[:500]


READY = re.compile(r"^(\S+ \S+) - saxs_pipeline.plugins.worker - INFO - saxs-integrator \S+ ready on \S+ in "
                   r"([\d.]+) s: operators: (\d+) from the local cache, (\d+) shipped from the "
                   r"driver \(([\d.]+) MB\), (\d+) built here", re.M)


def _stamp(text: str) -> float:
    from datetime import datetime

    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _ready(log: Path, scheduler_log: Path) -> dict[str, float]:
    """The worker's set-up of the plugin (time, operators from where), and the time from
    the scheduler registering the plugin to the worker ready (transfer included)."""
    m = READY.findall(log.read_text())
    assert m, log.read_text()[-2000:]
    when, secs, cached, shipped, mb, built = m[-1]
    reg = re.findall(r"^(\S+ \S+) - distributed.scheduler - INFO - Registering Worker plugin "
                     r"saxs-integrator", scheduler_log.read_text(), re.M)
    return {"setup_s": float(secs), "cached": int(cached), "shipped": int(shipped),
            "mb": float(mb), "built": int(built),
            "end_to_end_s": _stamp(when) - _stamp(reg[-1])}


def test_operator_built_once_in_the_driver_and_shipped(net, saxs_setup, tmp_path) -> None:
    """A Pilatus 1M calibration; worker hosts with empty caches of their own. With
    shipping the driver's build is the only one; without (SAXS_PIPELINE_SHIP_OPERATORS=0)
    every worker builds. Prints both per worker."""
    n = 6
    ov = int(os.environ.get("SAXS_TEST_SHIP_OVERSAMPLING", "2"))  # 2 here; more to measure
    setup = saxs_setup(n_frames=n, shape=(1043, 981), Masks=[
        {"MaskFile": "mask.npy", "Oversampling": ov, "PixelPerRadialElement": 1,
         "qStart": 0.1, "qStop": 3.0}])
    work = setup.root / "exp" / "work"
    driver_env = {"SAXS_PIPELINE_CACHE": str(tmp_path / "cache-driver")}
    figures = {}
    for phase, ship in (("ship", "1"), ("build", "0")):
        c = Cluster(net, tmp_path)
        if phase == "ship":
            c.scheduler()
        for w in ("w1", "w2"):
            for f in (tmp_path / f"cache-{w}").glob("*.npz"):
                f.unlink()  # a host without the operator
            c.worker(w)
        dog = c.saxsdog(run_args(setup, 2), tmp_path / f"dog-{phase}.log",
                        driver_env | {"SAXS_PIPELINE_SHIP_OPERATORS": ship})
        assert dog.wait(150) == 0, (tmp_path / f"dog-{phase}.log").read_text()[-3000:]
        figures[phase] = {w: _ready(tmp_path / f"{w}.log", tmp_path / "scheduler.log")
                          for w in ("w1", "w2")}
        for w in ("w1", "w2"):
            for p in net[w].procs:
                p.terminate()
            for p in net[w].procs:
                p.wait(15)
            net[w].procs.clear()
            (tmp_path / f"{w}.log").rename(tmp_path / f"{w}-{phase}.log")
        for f in work.glob("data*"):  # the next phase integrates the frames again
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    print(f"\noperator per worker host (Pilatus 1M, 1043 x 981, oversampling {ov}):")
    for phase, per in figures.items():
        for w, r in per.items():
            print(f"  {phase:5s} {w}: set-up {r['setup_s']:.2f} s, registered -> ready "
                  f"{r['end_to_end_s']:.2f} s, shipped {r['shipped']} ({r['mb']:.1f} MB), "
                  f"built {r['built']}")
    for w in ("w1", "w2"):
        assert figures["ship"][w]["shipped"] == 1 and figures["ship"][w]["built"] == 0
        assert figures["build"][w]["shipped"] == 0 and figures["build"][w]["built"] == 1


def test_a_partition_between_the_driver_and_the_scheduler(saxs_setup, tmp_path) -> None:
    """The driver on a host of its own (``d``) loses the network for 5 s: it says the
    scheduler does not answer, then that it answers again; the run completes."""
    why = unavailable()
    if why is not None:
        pytest.skip(f"cannot make network namespaces: {why}")
    net = Net(["s", "w1", "w2", "d"])
    try:
        n = 600
        setup = saxs_setup(n_frames=n)
        work = setup.root / "exp" / "work"
        c = Cluster(net, tmp_path, ttl="10s")
        c.scheduler()
        c.worker("w1"), c.worker("w2")
        log_path = tmp_path / "dog.log"
        dog = c.saxsdog(watching(setup), log_path, host="d")
        wait_until(lambda: chi_count(work) >= 100, 60, "frames before the partition", [dog])
        net["d"].link(False)
        time.sleep(5.0)
        net["d"].link(True)
        log = end_watching(dog, log_path, lambda text: chi_count(work) >= n
                           and "the scheduler answers again after" in text,
                           "every frame and the scheduler answering again")
    finally:
        net.close()
    assert "the scheduler has not answered for" in log, log[-3000:]
    assert "the scheduler answers again after" in log and "Traceback" not in log, log[-4000:]
    check_exactly_once(setup, n)
