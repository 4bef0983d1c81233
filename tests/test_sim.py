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
