"""A full output disk ends a run cleanly, with real processes on a real 20 MB tmpfs that
fills up (tests/tmpfs.py): ``saxsdog`` (readdir and watch) exits within seconds with
status 5 and "no space left on <mount>", no frame is recorded as failed for it, and
``--resume`` after freeing space gives every frame exactly once; a worker's ``.chi``
write that finds the disk full reports the full disk, not a frame failure; the server
says so in ``stat`` and keeps serving."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import tmpfs

from saxs_pipeline.cli.saxsdog_options import EXIT_NO_SPACE
from saxs_pipeline.pipeline.nospace import DiskGuard, is_no_space
from saxs_pipeline.stack.read import read_stack

from procs import BIN, wait_until

pytestmark = [pytest.mark.timeout(240)]

WHY = tmpfs.unavailable()
needs_tmpfs = pytest.mark.skipif(WHY is not None, reason=f"no private tmpfs: {WHY}")
TESTS = Path(__file__).parent
EXIT_WITHIN_S = 10.0  # the bound from the disk filling up to the process's exit


@pytest.fixture
def disk(tmp_path: Path):
    d = tmpfs.PrivateDisk(tmp_path / "disk", 20, tmp_path / "holder.log")
    yield d
    d.close()


def _counts(disk: tmpfs.PrivateDisk, stack: Path) -> dict[str, int]:
    """procs.ledger_counts, run inside the namespace (see PrivateDisk.output)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from procs import ledger_counts; "
            "from pathlib import Path; print(json.dumps(ledger_counts(Path(sys.argv[2]))))")
    return json.loads(disk.output([sys.executable, "-c", code, str(TESTS), str(stack)]))


def _committed(stack: Path) -> int:
    """The stack's committed rows (its ``n_valid``), 0 before it exists."""
    try:
        return int(json.loads((stack / "zarr.json").read_text())["attributes"]["n_valid"])
    except (OSError, ValueError, KeyError):
        return 0


def _exits_after_filling(disk: tmpfs.PrivateDisk, dog, log: Path, stack: Path) -> float:
    """Fill the disk once some rows of ``stack`` are committed; seconds until ``dog`` exits."""
    wait_until(lambda: _committed(disk.view(stack)) > 0, 120, "the first committed rows", [dog])
    disk.fill()
    filled = time.monotonic()
    try:
        dog.wait(60)
    except Exception:
        pytest.fail(f"saxsdog still runs 60 s after the disk filled up:\n{log.read_text()[-3000:]}")
    return time.monotonic() - filled


@needs_tmpfs
def test_a_full_disk_stops_saxsdog_and_resume_gives_every_frame_once(saxs_setup, disk,
                                                                        tmp_path) -> None:
    n = 300
    setup = saxs_setup(n_frames=n)
    out = disk.mount / "out"
    common = ["-c", str(setup.calibration), "-t", "1", "-S", "-o", str(out), str(setup.data)]
    args = ["--batch-size", "1", *common]  # a frame a task: the disk fills mid-run
    log = tmp_path / "full.log"
    dog = disk.run([str(BIN / "saxsdog"), *args], log)
    took = _exits_after_filling(disk, dog, log, out / "data.zarr")
    text = log.read_text()
    assert dog.returncode == EXIT_NO_SPACE, text[-3000:]
    assert took < EXIT_WITHIN_S, f"exited {took:.1f} s after the disk filled up"
    assert f"no space left on {disk.mount}" in text
    assert f"free space, then run `saxsdog --resume {' '.join(args)}`" in text
    disk.free()  # first: SQLite opens no ledger on a full disk (its WAL index is a file)
    counts = _counts(disk, out / "data.zarr")
    # the ledger is consistent: its done frames have their rows; a full disk failed no frame
    assert counts["failed"] == 0 and counts["done"] == counts["n_rows"] == counts["done_rows"]
    assert 0 < counts["done"] < n

    log = tmp_path / "resume.log"
    dog = disk.run([str(BIN / "saxsdog"), "--resume", *common], log)
    assert dog.wait(120) == 0, log.read_text()[-3000:]
    stack = disk.view(out / "data.zarr")
    st = read_stack(stack)
    assert st["n_valid"] == n == len(set(st["filename"]))
    counts = _counts(disk, out / "data.zarr")
    assert counts["done"] == n and counts["pending"] == 0 and counts["failed"] == 0
    setup.check_stack(stack, range(n))  # each curve is its frame's integration
    chi = sorted(p.name for p in disk.view(out).glob("*.chi"))
    assert chi == [f"data_frame_{i:05d}.chi" for i in range(n)]  # -o: flat names



@needs_tmpfs
def test_a_full_disk_stops_a_watching_saxsdog(saxs_setup, disk, tmp_path) -> None:
    setup = saxs_setup(n_frames=0)
    out = disk.mount / "out"
    log = tmp_path / "watch.log"
    dog = disk.run([str(BIN / "saxsdog"), "-w", "-n", "-c", str(setup.calibration), "-t", "1",
                    "-S", "-o", str(out), str(setup.data)], log)
    stack = disk.view(out / "data.zarr")
    filled = None
    for i in range(600):  # the detector goes on writing after the disk is full
        setup.write(i)
        if filled is None and _committed(stack) > 0:
            disk.fill()
            filled = time.monotonic()
        if dog.poll() is not None:
            break
        assert filled is None or time.monotonic() - filled < 30, log.read_text()[-3000:]
        time.sleep(0.02)
    assert filled is not None, "no frame was committed while the detector wrote 600"
    assert dog.wait(30) == EXIT_NO_SPACE, log.read_text()[-3000:]
    took = time.monotonic() - filled
    assert took < EXIT_WITHIN_S, f"exited {took:.1f} s after the disk filled up"
    assert f"no space left on {disk.mount}" in log.read_text()
    disk.free()
    counts = _counts(disk, out / "data.zarr")
    assert counts["failed"] == 0 and counts["done"] == counts["n_rows"] > 0


@needs_tmpfs
def test_a_chi_write_on_a_full_disk_reports_the_disk_not_a_frame_failure(saxs_setup, disk) -> None:
    """The worker task itself (in a process inside the namespace): ENOSPC is "nospace"."""
    setup = saxs_setup(n_frames=2)
    disk.fill()
    code = ("import sys, json; from saxs_pipeline.integrator import Integrator; "
            "from saxs_pipeline.pipeline.task import process_frames; "
            "from saxs_pipeline.pipeline.tasktypes import FrameTask, TaskOptions; "
            "tasks = [FrameTask(p, f'{sys.argv[2]}/f{i}') for i, p in enumerate(sys.argv[3:])]; "
            "res = process_frames('q', tasks, TaskOptions(), Integrator(sys.argv[1])); "
            "print(json.dumps([(r.status, r.error) for r in res]))")
    got = json.loads(disk.output([sys.executable, "-c", code, str(setup.calibration),
                                  str(disk.mount / "out"), *map(str, setup.frames)]))
    assert [s for s, _ in got] == ["nospace", "nospace"]
    assert all("No space left on device" in e for _, e in got)


def test_what_counts_as_a_full_disk(tmp_path) -> None:
    """ENOSPC/EDQUOT, SQLite's "database or disk is full", also wrapped or grouped; other
    errors do not stop a run; the guard stops it once and names the mount point."""
    import errno
    import sqlite3

    full = OSError(errno.ENOSPC, "No space left on device")
    assert is_no_space(full) and is_no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_no_space(OSError(errno.EACCES, "Permission denied"))
    assert not is_no_space(ValueError("bad frame"))
    try:
        raise RuntimeError("flush failed") from full
    except RuntimeError as wrapped:
        assert is_no_space(wrapped)
    assert is_no_space(ExceptionGroup("writes", [ValueError("x"), full]))
    db = sqlite3.connect(tmp_path / "l.db")
    db.execute("CREATE TABLE t (x)")
    db.execute("PRAGMA max_page_count = 2")  # a database that cannot grow: SQLITE_FULL
    with pytest.raises(sqlite3.OperationalError) as info:
        db.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4096,)] * 10)
    assert is_no_space(info.value)
    db.close()
    stops = []
    guard = DiskGuard(tmp_path / "out", tmp_path / "out" / "x.zarr", lambda: stops.append(1), "q")
    assert not guard.check(ValueError("x")) and guard.message is None
    assert guard.check(full) and guard.check(full)
    guard.join(10)
    assert stops == [1]  # once
    assert guard.message.startswith("no space left on /") and "No space left" in guard.message
    # the disk named is the one of the file that failed (here /proc, a mount of its own)
    guard = DiskGuard(tmp_path, tmp_path, lambda: None, "q")
    guard.check(OSError(errno.ENOSPC, "No space left on device", "/proc/self/x"), stop=False)
    assert guard.message.startswith("no space left on /proc (")


@needs_tmpfs
def test_a_full_disk_stops_the_servers_queue_and_the_server_keeps_serving(disk, tmp_path) -> None:
    from test_control_e2e import PY, Env, Proc, wait_ready
    from test_server import SECRET, calibration, write_frames

    from saxs_pipeline.config.masks import encode_attachment
    from saxs_pipeline.control.client import LeashClient

    env = Env(tmp_path)
    data = env.base / "data"
    data.mkdir()
    out = disk.mount / "out"
    ready = tmp_path / "server.ready"
    server = Proc(["nsenter", "-t", str(disk.holder.pid), "-m", "--", PY, "-m",
                   "saxs_pipeline.cli.server", "--config", env.env["SAXSDOG_NETWORK"], "-p", "0",
                   "-t", "1", "-w", "-o", str(out), "--ready-file", str(ready), str(env.base)],
                  tmp_path / "server.log", env.env)
    try:
        url = wait_ready(ready, server)
        with LeashClient(url, SECRET, timeout=60, retries=1) as leash:
            att = encode_attachment(env.mask, filename=env.mask.name)
            assert leash.request("new", {"calibration": calibration(["data"]), "data": {}},
                                 [att])["result"] == "new queue"
            stack = disk.view(out / "data.zarr")
            filled, stat = None, {}
            for i in range(600):
                write_frames(data, 1, start=i)
                if filled is None and _committed(stack) > 0:
                    disk.fill()
                    filled = time.monotonic()
                if filled is not None:
                    stat = leash.request("stat")["data"]["stat"]
                    if "stopped" in stat:
                        break
                    assert time.monotonic() - filled < EXIT_WITHIN_S, server.text()[-3000:]
                time.sleep(0.02)
            assert stat.get("stopped", "").startswith(f"no space left on {disk.mount}"), stat
            # the server goes on answering; the queue is gone, its ledger failed no frame
            assert leash.request("get")["result"] == "cal"
            assert "Start Queue first" in leash.request("readdir")["data"]["Error"]
        assert "no space left on" in server.text()
    finally:
        assert server.stop() == 0, server.text()[-3000:]
    disk.free()
    counts = _counts(disk, out / "data.zarr")
    assert counts["failed"] == 0 and counts["done"] == counts["n_rows"] > 0
