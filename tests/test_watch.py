"""The directory watcher: close-write and move events in batches, the stability rule,
polling."""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import pytest

from saxs_pipeline.pipeline.frames import matches
from saxs_pipeline.pipeline.watch import FrameWatcher

PAYLOAD = os.urandom(300_000)


def collect(out: queue.Queue, seconds: float) -> list[str]:
    """Everything reported within ``seconds``."""
    got, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(out.get(timeout=left))
        except queue.Empty:
            break
    return got


def wait_for(out: queue.Queue, n: int, timeout: float = 10.0) -> list[str]:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        try:
            got.append(out.get(timeout=0.1))
        except queue.Empty:
            pass
    return got


def write_in_parts(path: Path, parts: int = 4, pause: float = 0.15) -> float:
    """Write PAYLOAD through one handle in ``parts`` with pauses; returns the time of the
    last byte."""
    step = len(PAYLOAD) // parts
    with open(path, "wb") as fh:
        for k in range(parts):
            if k:
                time.sleep(pause)
            fh.write(PAYLOAD[k * step : (k + 1) * step if k < parts - 1 else None])
            fh.flush()
        return time.time()


@pytest.fixture
def watched(tmp_path: Path):
    watchers = []

    def start(**kw) -> tuple[FrameWatcher, queue.Queue]:
        out: queue.Queue = queue.Queue()
        kw.setdefault("stable_time", 0.3)
        kw.setdefault("check_interval", 0.1)
        w = FrameWatcher(tmp_path / "data", lambda paths: [out.put(p) for p in paths], **kw)
        w.start()
        watchers.append(w)
        return w, out

    (tmp_path / "data").mkdir()
    yield start
    for w in watchers:
        w.stop()


def test_pattern_any_case_and_hidden_files() -> None:
    assert matches("/a/b/x_001.tif", "*.tif")
    assert not matches("/a/b/.x_001.tif.part", "*.tif")
    assert not matches("/a/b/.x.tif", "*.tif")
    assert not matches("/a/b/x.tiff", "*.tif")
    assert matches("/a/b/x.cbf", "*.cbf")
    assert matches("/a/b/UPPER.TIF", "*.tif") and matches("/a/b/x.tif", "*.TIF")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FrameWatcher(tmp_path / "nope", print)


def test_inotify_reports_each_frame_once_when_complete(watched, tmp_path: Path) -> None:
    _, out = watched()
    data = tmp_path / "data"
    write_in_parts(data / "a.tif")
    (data / ".b.tif.part").write_bytes(PAYLOAD)  # an atomic writer's temporary name
    os.replace(data / ".b.tif.part", data / "b.tif")
    (data / "notes.txt").write_text("not a frame")
    got = wait_for(out, 2)
    assert sorted(os.path.basename(p) for p in got) == ["a.tif", "b.tif"]
    assert all(os.path.getsize(p) == len(PAYLOAD) for p in got)
    # the created events of both files pass the stability rule later: still no repeat
    assert collect(out, 0.8) == []


def test_inotify_files_renamed_in_and_new_directories(watched, tmp_path: Path) -> None:
    outside = tmp_path / "outside.tif"
    outside.write_bytes(PAYLOAD)
    old = time.time() - 60
    os.utime(outside, (old, old))
    _, out = watched()
    data = tmp_path / "data"
    os.replace(outside, data / "moved_in.tif")  # a rename: complete on arrival
    (data / "run2").mkdir()
    write_in_parts(data / "run2" / "c.tif", parts=2, pause=0.05)
    got = wait_for(out, 2)
    assert sorted(os.path.relpath(p, data) for p in got) == ["moved_in.tif", "run2/c.tif"]
    assert collect(out, 0.8) == []


def test_a_file_moved_in_is_reported_at_once_and_a_burst_in_few_batches(tmp_path: Path) -> None:
    """A rename from outside the tree is complete when it arrives: no stability wait, also
    for a file whose mtime is new; a burst of them comes in batches, not one call each."""
    stage, data = tmp_path / "stage", tmp_path / "data"
    stage.mkdir()
    data.mkdir()
    for i in range(200):
        (stage / f"f{i:03d}.tif").write_bytes(b"x")
    batches: queue.Queue = queue.Queue()
    w = FrameWatcher(data, batches.put, stable_time=30.0)
    w.start()
    try:
        t0 = time.monotonic()
        for i in range(200):
            os.rename(stage / f"f{i:03d}.tif", data / f"f{i:03d}.tif")
        calls, paths = 0, []
        while len(paths) < 200 and time.monotonic() - t0 < 10:
            try:
                paths += batches.get(timeout=0.5)
                calls += 1
            except queue.Empty:
                pass
        assert sorted(os.path.basename(p) for p in paths) == [f"f{i:03d}.tif" for i in range(200)]
        assert time.monotonic() - t0 < 10  # far below the 30 s stability time
        assert calls < 200
    finally:
        w.stop()


def test_an_overflowed_event_queue_looks_at_the_tree_again(watched, tmp_path: Path) -> None:
    """Events the kernel dropped (queue overflow) are not frames lost: the tree is looked
    at again through the stability rule."""
    from inotify_simple import Event, flags

    w, out = watched()
    data = tmp_path / "data"
    (data / "sub").mkdir()
    (data / "sub" / "lost.tif").write_bytes(PAYLOAD)
    assert [os.path.basename(p) for p in wait_for(out, 1)] == ["lost.tif"]
    old = time.time() - 60
    (data / "unseen.tif").write_bytes(PAYLOAD)
    os.utime(data / "unseen.tif", (old, old))
    # its close-write is reported first; then it is forgotten, as if that event had been
    # dropped (popped only after the report: before it, the reader would remember it again)
    assert [os.path.basename(p) for p in wait_for(out, 1)] == ["unseen.tif"]
    w._reported.pop(str(data / "unseen.tif"), None)
    assert collect(out, 0.3) == []
    overflow = Event(-1, flags.Q_OVERFLOW, 0, "")
    w._handle([overflow])  # the reader thread is idle: the tracked set is ours now
    got = wait_for(out, 1, timeout=5)
    assert [os.path.basename(p) for p in got] == ["unseen.tif"]
    assert collect(out, 0.6) == []  # lost.tif was reported and is unchanged


def test_a_directory_moved_in_is_scanned(watched, tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    for i in range(3):
        (batch / f"f{i}.tif").write_bytes(PAYLOAD)
    _, out = watched()
    os.replace(batch, tmp_path / "data" / "batch")
    got = wait_for(out, 3)
    assert sorted(os.path.basename(p) for p in got) == ["f0.tif", "f1.tif", "f2.tif"]


def test_polling_waits_for_a_stable_file(watched, tmp_path: Path) -> None:
    _, out = watched(poll=True, poll_interval=0.1, stable_time=0.5)
    path = tmp_path / "data" / "slow.tif"
    last_byte = write_in_parts(path, parts=4, pause=0.3)  # pauses shorter than the rule
    got = wait_for(out, 1, timeout=10)
    assert got == [str(path)]
    assert time.time() - last_byte >= 0.45  # not before the file settled
    assert collect(out, 1.0) == []


def test_unchanged_repeats_are_suppressed_and_rewrites_reported_again(watched, tmp_path: Path) -> None:
    """A close-write of a file that changed since it was reported comes again (a writer
    that stalled and finished later, a file rewritten under the same name); an event for
    an unchanged file does not."""
    _, out = watched()
    path = tmp_path / "data" / "x.tif"
    path.write_bytes(PAYLOAD[:1000])
    assert wait_for(out, 1) == [str(path)]
    with open(path, "ab"):
        pass  # opened for writing and closed, nothing changed: a close-write, not news
    assert collect(out, 0.8) == []
    path.write_bytes(PAYLOAD[:2000])
    assert wait_for(out, 1) == [str(path)]
