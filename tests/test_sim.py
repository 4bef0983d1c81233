"""The simulator: replays files through the frame-source interface, and its console entry
point as a real process (python -m) talking to a receiver on 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from saxs_pipeline.demo.eiger import write_eiger_series
from saxs_pipeline.stream.messages import ImageMessage
from saxs_pipeline.stream.receiver import StreamReceiver
from saxs_pipeline.stream.sim import StreamSimulator, file_frames, main


def test_replay_of_a_master_file(tmp_path: Path) -> None:
    stack = np.random.default_rng(8).poisson(11, (5, 16, 12)).astype(np.uint16)
    series = write_eiger_series(tmp_path, iter(stack), n_frames=5, frames_per_file=2, shape=(16, 12), dtype="u2")
    np.testing.assert_array_equal(np.stack(list(file_frames([series.master]))), stack)
    with StreamSimulator(send_timeout=5.0) as sim, StreamReceiver(sim.endpoint) as rx:
        thread = threading.Thread(target=sim.send_series, args=(file_frames([series.master]), 5), daemon=True)
        thread.start()
        images = [m for m in rx.series(idle_timeout=5.0) if isinstance(m, ImageMessage)]
        thread.join(10)
    np.testing.assert_array_equal(np.stack([m.array for m in images]), stack)


def test_send_without_receiver_times_out() -> None:
    with StreamSimulator(send_timeout=0.2) as sim:
        with pytest.raises(TimeoutError, match="is a receiver connected"):
            sim.send_series(iter(np.zeros((2, 4, 4), np.uint32)), 2)


def test_console_script_as_a_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "saxs_pipeline.stream.sim", "--bind", "tcp://127.0.0.1:*", "--demo", "3",
         "--shape", "64", "48", "--drop", "1", "--send-timeout", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        endpoint = re.search(r"PUSH (\S+)", line)[1]
        with StreamReceiver(endpoint) as rx:
            images = [m for m in rx.series(idle_timeout=20.0) if isinstance(m, ImageMessage)]
            assert [m.image_number for m in images] == [0, 2]
            assert images[0].array.shape == (64, 48) and images[0].array.dtype == np.uint32
            assert rx.tracker.missing() == [(1, 2)]
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_error_for_missing_file(tmp_path: Path, capsys) -> None:
    assert main(["--files", str(tmp_path / "nope.h5")]) == 1
    assert "does not exist" in capsys.readouterr().err


def _sim_process(*args: str) -> tuple[subprocess.Popen, str]:
    """``saxs-stream-sim`` as a process on a free loopback port, and its endpoint."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / "saxs-stream-sim"), "--bind",
                             "tcp://127.0.0.1:*", "--send-timeout", "60", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, re.search(r"PUSH (\S+)", proc.stdout.readline())[1]


def _pull(endpoint: str, *, every: float = 0.0, hwm: int = 1000) -> list[float]:
    """Receive one series on a PULL socket, taking a message every ``every`` s; the
    arrival times of its image messages."""
    import time

    import zmq

    from saxs_pipeline.stream.codec import peek

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.RCVTIMEO, 90_000)
    sock.connect(endpoint)
    times: list[float] = []
    try:
        while True:
            kind = peek(sock.recv()).type
            if kind == "end":
                return times
            if kind != "image":
                continue
            times.append(time.monotonic())
            if every:
                time.sleep(every)
    finally:
        sock.close(linger=0)
        ctx.term()


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    return out, err


@pytest.mark.timeout(180)
def test_demo_4mpx_frames_go_at_the_rate_asked() -> None:
    """Issue 21: 4 Mpx demo frames (0.3 s each to generate) are prepared before the clock,
    then sent at 50/s; the report says the rate sent. Tolerance: the arrivals span at
    least 90 % of the 0.38 s the 20 images take at 50/s (never faster than asked), and
    the rate reported is above 25/s (half: room for a loaded 2-core machine; sending them
    as they were generated gave 5/s)."""
    proc, endpoint = _sim_process("--demo", "20", "--rate", "50")
    times = _pull(endpoint)
    _out, err = _finish(proc)
    assert len(times) == 20
    assert times[-1] - times[0] >= 0.9 * 19 / 50
    m = re.search(r"20 images sent at ([\d.]+) images/s \(asked 50\), prepared in", err)
    assert m is not None, err
    assert 25 < float(m.group(1)) <= 1.1 * 50, err
    if float(m.group(1)) >= 45:
        assert "warning" not in err


@pytest.mark.timeout(180)
def test_a_rate_not_reached_is_said() -> None:
    """A receiver taking one 4 MB image every 0.1 s (10/s) cannot be given the 50/s asked:
    the send queue (a few messages, and the socket buffers) fills, the sending slows, and
    the simulator warns with the rate it reached."""
    proc, endpoint = _sim_process("--demo", "30", "--shape", "1024", "1024", "--compression",
                                  "none", "--rate", "50")
    times = _pull(endpoint, every=0.1, hwm=1)
    _out, err = _finish(proc)
    assert len(times) == 30
    assert "warning: sent" in err and "short of the 50 asked" in err, err


def test_a_series_too_large_for_memory_is_refused_before_it_is_prepared() -> None:
    from saxs_pipeline.stream.sim import prepare_series

    frames = (np.zeros((64, 64), np.uint32) for _ in range(1000))
    with pytest.raises(MemoryError, match="cannot prepare 1000 images"):
        prepare_series(frames, 1000, compression="none", budget=1_000_000)
