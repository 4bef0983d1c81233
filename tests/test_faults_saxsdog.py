"""Nothing lost, nothing overwritten, with real processes: ``saxsdog`` SIGKILLed at random
moments and resumed, two ``saxsdog`` runs on one stack, and the scheduler killed and
restarted under a running ``saxsdog``."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from saxs_pipeline.pipeline.ledger import State
from saxs_pipeline.stack.read import read_stack

from procs import free_port, ledger_counts, saxsdog, scheduler, stop, wait_until, worker

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, saxs_operator_cache):
    """A real scheduler and two saxs-worker processes; every saxsdog run connects to it."""
    tmp = tmp_path_factory.mktemp("faults")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [scheduler(port, tmp / "scheduler.log")]
    time.sleep(1.0)
    procs += [worker(address, tmp / f"worker{i}.log", f"w{i}") for i in range(2)]
    from distributed import Client

    with Client(address, timeout=30) as c:
        c.wait_for_workers(2, timeout=60)
    yield address
    stop(procs[1:])
    stop(procs[:1])


def test_sigkill_at_random_moments_then_resume_completes_the_set(saxs_setup, cluster, tmp_path) -> None:
    """500 frames; saxsdog is SIGKILLed 5 times at random points of the run and resumed
    each time: in the end 500 unique stack rows = 500 .chi files = 500 done frames in the
    ledger, and every curve equals the engine's integration of its frame."""
    n = 500
    setup = saxs_setup(n_frames=n)
    work = setup.root / "exp" / "work" / "data"  # the run's .chi folder, beside its stack
    stack = work.parent / "data.zarr"
    args = ["-c", str(setup.calibration), "--scheduler", cluster, "--batch-size", "8",
            "-S", str(setup.data)]
    rng = random.Random(20261202)
    kills = 0
    for attempt in range(5):
        log = tmp_path / f"run{attempt}.log"
        dog = saxsdog([*args, "-r"] if attempt else args, log, tmp_path)
        target = rng.randint(40, n - 60)
        try:
            wait_until(lambda t=target, d=dog: len(list(work.glob("*.chi"))) >= t or d.poll() is not None,
                       120, f"{target} .chi files")
            if dog.poll() is None:
                time.sleep(rng.random() * 0.2)
                os.kill(dog.pid, signal.SIGKILL)
                kills += 1
            dog.wait(10)
        finally:
            stop([dog])
        if len(list(work.glob("*.chi"))) >= n and dog.returncode == 0:
            break
    assert kills >= 3  # the run was really cut several times
    dog = saxsdog([*args, "-r"], tmp_path / "final.log", tmp_path)
    assert dog.wait(120) == 0, (tmp_path / "final.log").read_text()
    st = read_stack(stack)
    assert st["n_valid"] == n == len(set(st["filename"]))
    assert len(list(work.glob("*.chi"))) == n
    counts = ledger_counts(stack)
    assert counts["done"] == n and counts["pending"] == 0 and counts["failed"] == 0
    assert counts["n_rows"] == counts["done_rows"] == n
    setup.check_stack(stack, range(n), chi_dir=work)


def test_a_second_writer_is_refused_and_takes_over_when_the_first_is_gone(saxs_setup, cluster,
                                                                           tmp_path) -> None:
    n = 300
    setup = saxs_setup(n_frames=n)
    work = setup.root / "exp" / "work" / "data"  # the run's .chi folder, beside its stack
    args = ["-c", str(setup.calibration), "--scheduler", cluster, "--batch-size", "4", "-S",
            str(setup.data)]
    first = saxsdog(["-w", *args], tmp_path / "first.log", tmp_path)  # watching: keeps the stack
    try:
        wait_until(lambda: len(list(work.glob("*.chi"))) >= 20, 120, "the first run's frames",
                   [first])
        second = saxsdog(args, tmp_path / "second.log", tmp_path)
        assert second.wait(60) == 2
        err = (tmp_path / "second.log").read_text()
        assert f"pid {first.pid}" in err and "only one run may write a stack" in err
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        stop([first])
    third = saxsdog([*args, "-r"], tmp_path / "third.log", tmp_path)
    assert third.wait(120) == 0, (tmp_path / "third.log").read_text()
    st = read_stack(work.parent / "data.zarr")
    assert st["n_valid"] == n == len(set(st["filename"]))
    setup.check_stack(work.parent / "data.zarr", range(n), chi_dir=work)
    assert ledger_counts(work.parent / "data.zarr")[State.DONE.value] == n


def test_scheduler_killed_and_restarted_on_the_same_port(saxs_setup, tmp_path, saxs_operator_cache) -> None:
    """The scheduler (and with it the workers, which exit when they lose it: under systemd
    they are restarted, here by the test) dies mid-run; saxsdog says so, waits, reconnects
    to the new scheduler on the same port, registers its plugins there and resubmits what
    was not committed: every frame is integrated exactly once. Then every process stops
    within 10 s of SIGTERM."""
    n = 400
    setup = saxs_setup(n_frames=n)
    work = setup.root / "exp" / "work" / "data"  # the run's .chi folder, beside its stack
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"

    def start_cluster(tag: str) -> list:
        procs = [scheduler(port, tmp_path / f"scheduler-{tag}.log")]
        time.sleep(1.0)
        return procs + [worker(address, tmp_path / f"worker-{tag}{i}.log", f"w{tag}{i}")
                        for i in range(2)]

    procs = start_cluster("a")
    dog = None
    try:
        time.sleep(2.0)
        dog = saxsdog(["-c", str(setup.calibration), "--scheduler", address, "--batch-size", "4",
                       "--reconnect-timeout", "60", "-S", str(setup.data)],
                      tmp_path / "saxsdog.log", tmp_path)
        wait_until(lambda: len(list(work.glob("*.chi"))) >= 60, 120, "frames before the kill",
                   [dog])
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)  # the scheduler host goes down
        for p in procs:
            p.wait(10)
        wait_until(lambda: "lost the Dask scheduler" in (tmp_path / "saxsdog.log").read_text(),
                   30, "saxsdog noticing the loss", [dog])
        time.sleep(2.0)
        procs = start_cluster("b")
        assert dog.wait(180) == 0, (tmp_path / "saxsdog.log").read_text()
        log = (tmp_path / "saxsdog.log").read_text()
        assert "is back" in log and "Traceback" not in log
    finally:
        t = time.monotonic()
        stop([p for p in [dog] if p is not None] + procs[1:], grace=10)
        stop(procs[:1], grace=10)
        assert time.monotonic() - t < 25
    st = read_stack(work.parent / "data.zarr")
    assert st["n_valid"] == n == len(set(st["filename"]))
    setup.check_stack(work.parent / "data.zarr", range(n), chi_dir=work)


def test_scheduler_gone_for_good_exits_4_and_resume_completes(saxs_setup, tmp_path,
                                                            saxs_operator_cache) -> None:
    n = 600
    setup = saxs_setup(n_frames=n)
    work = setup.root / "exp" / "work" / "data"  # the run's .chi folder, beside its stack
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [scheduler(port, tmp_path / "s.log")]
    time.sleep(1.0)
    procs.append(worker(address, tmp_path / "w.log", "w0"))
    args = ["-c", str(setup.calibration), "--scheduler", address, "--batch-size", "2", "-S",
            str(setup.data)]
    try:
        time.sleep(2.0)
        dog = saxsdog([*args, "--reconnect-timeout", "3"], tmp_path / "dog.log", tmp_path)
        wait_until(lambda: len(list(work.glob("*.chi"))) >= 20, 120, "frames", [dog])
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
        t = time.monotonic()
        assert dog.wait(60) == 4
        assert time.monotonic() - t < 30
        err = (tmp_path / "dog.log").read_text()
        assert "rerun with --resume" in err and "Traceback" not in err
        procs = [scheduler(port, tmp_path / "s2.log")]
        time.sleep(1.0)
        procs.append(worker(address, tmp_path / "w2.log", "w1"))
        time.sleep(2.0)
        again = saxsdog([*args, "-r"], tmp_path / "again.log", tmp_path)
        assert again.wait(120) == 0, (tmp_path / "again.log").read_text()
    finally:
        stop(procs, grace=10)
    setup.check_stack(work.parent / "data.zarr", range(n), chi_dir=work)
