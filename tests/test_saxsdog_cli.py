"""``saxsdog``: options, start-up errors, a batch run, and a watch run with a writer
process, a frame that never completes and a SIGKILLed worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from saxs_pipeline.cli.saxsdog import main, parse_args
from saxs_pipeline.stack.read import read_stack

pytestmark = pytest.mark.timeout(180)

SAXSDOG = str(Path(sys.executable).parent / "saxsdog")


def test_options() -> None:
    o = parse_args(["-c", "c.json", "-t", "3", "-w", "-r", "-o", "out", "-s", "-p", "-S", "-n",
                    "-D", "--scheduler", "tcp://h:1", "--zarr", "z.zarr", "--pattern", "*.cbf",
                    "--poll", "dir"])
    assert (o.directory, o.calibration, o.threads, o.out_dir, o.zarr) == (
        Path("dir"), Path("c.json"), 3, Path("out"), Path("z.zarr"))
    assert o.watch and o.resume and o.svg and o.png and o.silent and o.no_walk and o.walk_thread
    assert o.poll and o.pattern == "*.cbf" and o.scheduler == "tcp://h:1"
    assert parse_args(["-i", "d"]).relpath == "."
    assert parse_args(["d"]).relpath == os.path.join("..", "work")
    # a stream's directory is its outputs folder; -R and -i still choose (issue 21)
    assert parse_args(["--stream", "tcp://h:1", "d"]).relpath == "."
    assert parse_args(["--stream", "tcp://h:1", "-R", "../out", "d"]).relpath == "../out"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_startup_errors(saxs_setup, tmp_path: Path, capsys) -> None:
    setup = saxs_setup()
    assert main(["-c", str(setup.calibration), str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    cal = json.loads(setup.calibration.read_text())
    cal["Geometry"]["Imagesize"] = "big"
    bad.write_text(json.dumps(cal))
    assert main(["-c", str(bad), str(setup.data)]) == 2
    err = capsys.readouterr().err
    assert "bad calibration" in err and "bad.json" in err and "$.Geometry.Imagesize" in err
    t = time.monotonic()
    assert main(["-c", str(setup.calibration), "--scheduler", f"tcp://127.0.0.1:{free_port()}",
                 "--connect-timeout", "1", str(setup.data)]) == 3
    assert "cannot reach tcp://127.0.0.1:" in capsys.readouterr().err
    assert time.monotonic() - t < 20


def test_cheap_checks_come_before_any_cluster(saxs_setup, tmp_path: Path, capsys) -> None:
    import h5py
    import numpy as np

    from saxs_pipeline.pipeline.lock import StackLock

    setup = saxs_setup(n_frames=1)
    # An unreachable scheduler: a check made after the cluster would end in exit status 3
    # ("cannot reach") after the connect timeout; made before, it is status 2 and its reason.
    nowhere = ["--scheduler", f"tcp://127.0.0.1:{free_port()}", "--connect-timeout", "5"]

    def refused(*args: str, cal: dict | None = None) -> str:
        path = setup.calibration
        if cal is not None:
            path = tmp_path / "cal-variant.json"
            path.write_text(json.dumps(cal))
        assert main(["-c", str(path), *nowhere, *args]) == 2
        return capsys.readouterr().err

    cal = json.loads(setup.calibration.read_text())
    gone = dict(cal, Masks=[dict(cal["Masks"][0], MaskFile="gone.npy")])
    assert "gone.npy" in refused(str(setup.data), cal=gone)
    np.save(tmp_path / "small.npy", np.zeros((10, 10), bool))
    small = dict(cal, Masks=[dict(cal["Masks"][0], MaskFile=str(tmp_path / "small.npy"))])
    err = refused(str(setup.data), cal=small)
    assert "small.npy" in err and "(10, 10)" in err
    (tmp_path / "a-file").write_text("")
    err = refused("-o", str(tmp_path / "a-file" / "out"), str(setup.data))
    assert f"the outputs folder {tmp_path / 'a-file' / 'out'} cannot be written" in err
    with StackLock(setup.root / "exp" / "work" / "data.zarr"):  # another run writes it
        err = refused(str(setup.data))
    assert "data.zarr is being written by pid" in err
    with h5py.File(setup.data / "plain.h5", "w") as f:
        f["entry/data/data"] = np.zeros((2, 64, 48), np.int32)
    err = refused("--pattern", "*.h5", "--h5-path", "/entry/nothing", str(setup.data))
    assert f"{setup.data / 'plain.h5'}: dataset /entry/nothing does not exist" in err


def saxsdog(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([SAXSDOG, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, **kw)


def test_batch_run_with_pictures_live_plot_profile_and_resume(saxs_setup, tmp_path: Path) -> None:
    setup = saxs_setup(n_frames=24)
    r = saxsdog(["-c", str(setup.calibration), "-t", "2", "-s", "-m", "-P", str(setup.data)],
                tmp_path)
    assert r.returncode == 0, r.stderr
    assert "24/24" in r.stderr and "100%" in r.stderr  # the progress bar
    assert "24 frames in" in r.stderr
    stack = setup.root / "exp" / "work" / "data.zarr"
    work = setup.root / "exp" / "work" / "data"  # the run's own folder beside its stack
    assert len(list(work.glob("*.chi"))) == 24 and len(list(work.glob("*.svg"))) == 24
    assert (work / "live.png").stat().st_size > 0  # -m without a display
    assert (tmp_path / "prof").stat().st_size > 0  # -P
    setup.check_stack(stack, range(24), chi_dir=work)
    mtime = (work / "frame_00005.chi").stat().st_mtime_ns
    r = saxsdog(["-c", str(setup.calibration), "-t", "1", "-r", "-S", str(setup.data)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # -S: silent
    assert (work / "frame_00005.chi").stat().st_mtime_ns == mtime


WRITER = textwrap.dedent("""
    import os, sys, time
    staged, target, parts, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    names = sorted(os.listdir(staged))
    for name in names:
        data = open(os.path.join(staged, name), "rb").read()
        if name.startswith("never"):
            data = data[: len(data) // 2]  # a frame that is never completed
        step = len(data) // parts + 1
        with open(os.path.join(target, name), "wb") as fh:  # one open: one close event
            for k in range(0, len(data), step):
                fh.write(data[k : k + step])
                fh.flush()
                time.sleep(pause)
""")


def worker_children(pid: int) -> list[psutil.Process]:
    kids = psutil.Process(pid).children()
    return [k for k in kids if "spawn_main" in " ".join(k.cmdline())]


def test_watch_partial_writes_never_complete_and_sigkill(saxs_setup, tmp_path: Path) -> None:
    setup = saxs_setup(n_frames=0)
    n = 30
    staged = tmp_path / "staged"
    staged.mkdir()
    for i in range(n):
        setup.write(i, staged)
    (staged / "never_00000.tif").write_bytes(setup.frame_bytes(999))
    zarr_path = tmp_path / "live.zarr"
    log = tmp_path / "saxsdog.log"
    with open(log, "w") as fh:
        dog = subprocess.Popen(
            [SAXSDOG, "-w", "-n", "-t", "2", "--retries", "3", "-c", str(setup.calibration),
             "--zarr", str(zarr_path), str(setup.data)],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=fh)
    writer = None
    try:
        deadline = time.monotonic() + 60
        while "watching" not in log.read_text():
            assert dog.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(staged), str(setup.data), "4",
                                   "0.03"])
        work = setup.root / "exp" / "work" / "data"
        killed = False
        while len(list(work.glob("frame_*.chi"))) < n:
            if not killed and len(list(work.glob("frame_*.chi"))) >= n // 3:
                victims = worker_children(dog.pid)
                assert len(victims) == 2
                os.kill(victims[0].pid, signal.SIGKILL)
                killed = True
            assert dog.poll() is None and time.monotonic() < deadline + 60
            time.sleep(0.05)
        assert writer.wait(30) == 0
        failures = work.parent / "failures.log"
        while not failures.exists():
            assert time.monotonic() < deadline + 90
            time.sleep(0.1)
        dog.send_signal(signal.SIGINT)
        dog.wait(60)
        err = log.read_text()
    finally:
        for p in (dog, writer):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
    assert killed
    assert dog.returncode == 1, err  # a frame failed
    assert f"{n} frames in" in err and "1 failed" in err
    assert "1 frame(s) failed (first: " in err  # the reason on the console, not only the log
    record = json.loads(failures.read_text())
    assert record["file"].endswith("never_00000.tif") and record["attempts"] == 4
    setup.check_stack(zarr_path, range(n), chi_dir=work)
    assert len(read_stack(zarr_path)["filename"]) == n


def test_demo_subcommand(tmp_path: Path, saxs_operator_cache: Path) -> None:
    r = saxsdog(["demo", str(tmp_path / "d"), "-N", "3", "-t", "1"], tmp_path)
    assert r.returncode == 0, r.stderr
    work = tmp_path / "d" / "demo" / "work"
    assert sorted(p.name for p in (work / "data").glob("*.chi")) == [
        "sample_00000.chi", "sample_00001.chi", "sample_00002.chi"]
    assert read_stack(work / "data.zarr")["n_valid"] == 3


WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def test_workflows_reprocess_and_explore(saxs_setup, tmp_path: Path) -> None:
    setup = saxs_setup(n_frames=12)
    r = subprocess.run([sys.executable, str(WORKFLOWS / "reprocess_beamtime.py"), "-c",
                        str(setup.calibration), "-q", str(setup.data)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["frames"] == 12 and summary["failed"] == 0
    stack = Path(summary["queues"][0]["curve_stack"])
    assert (stack.parent / "reprocess-summary.json").exists()
    r = subprocess.run([sys.executable, str(WORKFLOWS / "explore_zarr.py"), str(stack), "--out",
                        str(tmp_path / "figs")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "R0_I0_over_time.png", "R0_iq_over_frames.png"]


def test_linger_keeps_the_live_page_up(saxs_setup, tmp_path: Path) -> None:
    """``--linger``: after the run the cluster stays up (the page answers), then saxsdog
    ends by itself with the run's exit status."""
    import re
    import threading
    import urllib.request

    pytest.importorskip("bokeh")
    setup = saxs_setup(3)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "saxs_pipeline.cli.saxsdog", "-c",
                             str(setup.calibration), "-t", "1", "--linger", "6", str(setup.data)],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines: list[str] = []
    lingering = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "keeping the cluster up" in line:
                lingering.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert lingering.wait(90), "".join(lines)
        url = re.search(r"live page (http://\S+)", "".join(lines)).group(1)
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and b"SAXS live" in page.read()
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(5)
    assert time.monotonic() - t0 >= 6
    assert any("3 frames in" in line for line in lines), "".join(lines)
