"""The feeder channel: completeness rules of the watcher, publisher/subscriber over real
sockets, the saxsfeeder process, and the server's subscription."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from test_server import SECRET, FakeQueue, make_server, wait_until, write_frames

from saxs_pipeline.control.client import LeashClient
from saxs_pipeline.control.feeder import (
    FeederPublisher,
    FeederSubscriber,
    FileWatcher,
    decode_event,
    encode_event,
    replay,
)
from saxs_pipeline.frames.tiff import write_pilatus_tiff


def test_event_format_is_the_originals():
    assert encode_event("/d/x.tif") == b'{"command": "new file", "argument": "/d/x.tif"}'
    assert decode_event(encode_event("/d/x.tif")) == "/d/x.tif"
    assert decode_event(b'{"argument": "rel/x.tif"}') == "rel/x.tif"  # command not required
    for bad in (b"\xff", b"[1]", b'{"command": "other", "argument": "x"}', b'{"argument": 3}'):
        assert decode_event(bad) is None


def _tiff_bytes(tmp_path: Path, seed: int = 0) -> bytes:
    path = tmp_path / f"src{seed}.tif"
    write_pilatus_tiff(path, np.random.default_rng(seed).poisson(50, (64, 48)).astype(np.int32))
    return path.read_bytes()


def _write_slowly(path: Path, data: bytes, parts: int = 3, pause: float = 0.3) -> None:
    step = -(-len(data) // parts)
    with open(path, "wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i:i + step])
            fh.flush()
            time.sleep(pause)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, path: str) -> None:
        with self.lock:
            self.events.append((path, os.path.getsize(path)))

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.events]


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
def test_watcher_announces_each_complete_file_once(tmp_path, poll):
    watched = tmp_path / "watched"
    (watched / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    data = _tiff_bytes(tmp_path)
    rec = Recorder()
    watcher = FileWatcher(watched, rec, poll=poll, interval=0.1, settle=0.5)
    watcher.start()
    try:
        time.sleep(0.2)
        _write_slowly(watched / "slow.tif", data)                      # written in parts
        (watched / "part.tmp").write_bytes(data)
        os.rename(watched / "part.tmp", watched / "sub" / "renamed.tif")  # atomic rename inside
        (outside / "moved.tif").write_bytes(data)
        os.rename(outside / "moved.tif", watched / "moved.tif")         # moved in: created only
        (watched / "notes.txt").write_text("not a frame")
        want = {str(watched / n) for n in ("slow.tif", "sub/renamed.tif", "moved.tif")}
        assert wait_until(lambda: set(rec.paths()) >= want, timeout=10)
        time.sleep(1.0)
        assert sorted(rec.paths()) == sorted(want)                        # once each
        assert all(size == len(data) for _, size in rec.events)           # never partial
        # A rewrite of the same file is a new complete file: announced again.
        time.sleep(0.05)
        (watched / "moved.tif").write_bytes(_tiff_bytes(tmp_path, 1))
        assert wait_until(lambda: rec.paths().count(str(watched / "moved.tif")) == 2, timeout=10)
    finally:
        watcher.stop()


def test_poll_watcher_waits_for_a_truncated_tiff(tmp_path):
    data = _tiff_bytes(tmp_path)
    rec = Recorder()
    watcher = FileWatcher(tmp_path / "w", rec, poll=True, interval=0.1, settle=0.2)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "cut.tif").write_bytes(data[: len(data) // 2])  # stable but incomplete
    watcher.start()
    try:
        time.sleep(1.0)
        assert rec.paths() == []
        with open(tmp_path / "w" / "cut.tif", "ab") as fh:
            fh.write(data[len(data) // 2:])
        assert wait_until(lambda: rec.paths() == [str(tmp_path / "w" / "cut.tif")], timeout=5)
    finally:
        watcher.stop()


def _pub_sub(tmp_path):
    pub = FeederPublisher("tcp://127.0.0.1:*")
    got: list[str] = []
    sub = FeederSubscriber(pub.endpoint, got.extend, poll_ms=50)
    stop = threading.Event()
    runner = threading.Thread(target=pub.run, args=(stop,), daemon=True)
    runner.start()
    sub.start()
    assert wait_until(lambda: pub.subscribers == 1, timeout=5)
    return pub, sub, got, stop, runner


def test_publisher_to_subscriber(tmp_path):
    pub, sub, got, stop, runner = _pub_sub(tmp_path)
    try:
        for i in range(50):
            pub.publish(f"/data/f{i}.tif")
        assert wait_until(lambda: len(got) == 50, timeout=5)
        assert got == [f"/data/f{i}.tif" for i in range(50)]
    finally:
        pub.stop()
        runner.join(5)
        sub.stop()
        pub.close()


def test_replay_publishes_existing_files_at_an_interval(tmp_path):
    write_frames(tmp_path / "d", 3)
    pub, sub, got, stop, runner = _pub_sub(tmp_path)
    try:
        t0 = time.monotonic()
        replay(pub, tmp_path / "d", interval=0.1, cycles=2)
        assert wait_until(lambda: len(got) == 6, timeout=5)
        assert time.monotonic() - t0 >= 0.5
        assert got[:3] == got[3:] == [str(tmp_path / "d" / f"frame_{i:05d}.tif") for i in range(3)]
    finally:
        stop.set()
        runner.join(5)
        sub.stop()
        pub.close()


def _reader(stream, lines: list[str]) -> threading.Thread:
    def run():
        for line in iter(stream.readline, ""):
            lines.append(line)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_saxsfeeder_process_publishes_complete_frames(tmp_path):
    watched = tmp_path / "det"
    watched.mkdir()
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "saxs_pipeline.cli.feeder", str(watched), "-p", "0",
         "--bind", "127.0.0.1", "--ready-file", str(ready), "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, SAXSDOG_NETWORK=str(tmp_path / "no-config")),
    )
    err: list[str] = []
    _reader(proc.stderr, err)
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        assert wait_until(ready.exists, timeout=20), "".join(err)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(ready.read_text().strip())
        assert wait_until(lambda: any("subscriber joined" in line for line in err), timeout=10)
        data = _tiff_bytes(tmp_path)
        for i in range(5):
            _write_slowly(watched / f"f{i}.tif", data, parts=2, pause=0.05)
        got = []
        end = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < end:
            if sock.poll(200):
                got.append(decode_event(sock.recv()))
        assert got == [str(watched / f"f{i}.tif") for i in range(5)]
        time.sleep(0.5)
        assert not sock.poll(200)  # nothing announced twice
    finally:
        sock.close()
        proc.terminate()
        assert proc.wait(10) == 0


def test_server_hands_feeder_paths_to_the_queue(tmp_path):
    base = tmp_path / "base"
    (base / "data").mkdir(parents=True)
    pub = FeederPublisher("tcp://127.0.0.1:*")
    stop = threading.Event()
    runner = threading.Thread(target=pub.run, args=(stop,), daemon=True)
    runner.start()
    st = make_server(base, feeder_url=pub.endpoint)
    FakeQueue.instances.clear()
    try:
        assert wait_until(lambda: pub.subscribers == 1, timeout=5)
        from test_server import new_queue

        with LeashClient(st.url, SECRET, timeout=10, retries=1) as leash:
            new_queue(leash, tmp_path)
            frames = write_frames(base / "data", 10)
            for f in frames:
                pub.publish(str(f))
                pub.publish(os.path.relpath(f, base))  # relative to basedir, as the original
            pub.publish(str(tmp_path / "elsewhere.tif"))
            assert wait_until(lambda: leash.request("stat")["data"]["stat"]["images processed"] == 10)
            time.sleep(0.3)
            assert leash.request("stat")["data"]["stat"]["images processed"] == 10
            leash.request("close")
            pub.publish(str(write_frames(base / "data", 1, start=50)[0]))
            time.sleep(0.3)
            assert leash.request("stat")["data"]["stat"]["images processed"] == 10
    finally:
        st.stop()
        stop.set()
        runner.join(5)
        pub.close()
        for q in FakeQueue.instances:
            q.abort()
