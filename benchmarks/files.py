"""Frames on disk for the benchmarks (the real one from ../shared, else a generated one),
and the file system's state before a timed case."""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pilatus1m"


@dataclass
class Source:
    calibration: Path
    frame: Path
    description: str


def find_source(workdir: Path) -> Source:
    frame = DATA / "buf1_00000.tif"
    if frame.is_file() and (DATA / "cal_flat.json").is_file():
        return Source(DATA / "cal_flat.json", frame, "real Pilatus 1M frame buf1_00000.tif")
    from saxs_pipeline.demo.beamtime import generate_demo

    demo = generate_demo(workdir / "demo-source", n_frames=1)
    return Source(demo.calibration, demo.frames[0], "generated demo frame (no real data found)")


def copy_frames(src: Path, directory: Path, n: int, prefix: str = "frame") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{prefix}_{i:05d}.tif" for i in range(n)]
    for p in paths:
        shutil.copyfile(src, p)
    os.sync()  # no writeback of the copies during a timed case
    return paths


FAST_CREATE_US = 100.0  # a new 1 kB file takes 30-60 us here when no inode is skipped
SETTLE_WAIT = 420.0  # seconds; a benchmark's --settle-wait sets it (0 on a busy machine)


@dataclass
class Settled:
    create_us: float  # creating, writing (1 kB) and closing a new file, per file
    waited: float  # seconds waited for that to be fast


def create_cost(directory: Path, n: int) -> float:
    """Microseconds per new file, as a frame's ``.chi`` is made, over the last tenth of
    ``n`` new files: every new inode is searched for from the start of its block group,
    so the last ones pay for every recently deleted inode on the way. The files are kept:
    deleting them would add to what this measures."""
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"{time.monotonic_ns():x}"
    n = max(n, 1)
    tail = max(1, n // 10)
    for i in range(n):
        if i == n - tail:
            t0 = time.perf_counter()
        with open(directory / f"{tag}-{i}", "xb") as fh:
            fh.write(bytes(1024))
    return 1e6 * (time.perf_counter() - t0) / tail


def settle_file_system(probe: Path | None = None, files: int = 0,
                       max_wait: float | None = None) -> Settled | None:
    """Write back what earlier cases wrote (no write-back during a timed case); then, with
    a ``probe`` directory beside the case's outputs, wait (at most ``max_wait`` s) until
    ``files`` new files, as many as the case makes, are cheap again.

    ext4 without a journal (this VM's root) will not reuse an inode deleted less than
    60 s ago, or 360 s while its inode-table block is dirty (Linux >= 5.7), and checks
    such inodes one by one on every allocation: after a few thousand deletions (an
    earlier run's, or the test suite's clean-up) a new file took 0.1-0.7 ms instead of
    30-60 us, and a readdir of 600 frames ran at 361-384 frames/s instead of 473-495.
    Only our side creates files, so that would time the file system's bookkeeping
    against pyFAI's loop, not the pipeline."""
    os.sync()
    if probe is None:
        return None
    max_wait = SETTLE_WAIT if max_wait is None else max_wait
    start = time.monotonic()
    while (cost := create_cost(probe, files)) > FAST_CREATE_US:
        if time.monotonic() - start >= max_wait:
            print(f"the file system did not settle in {max_wait:.0f} s: a new file takes "
                  f"{cost:.0f} us", file=sys.stderr, flush=True)
            break
        print(f"waiting for the file system: a new file takes {cost:.0f} us (recently "
              f"deleted inodes are skipped; {time.monotonic() - start:.0f} s so far)",
              file=sys.stderr, flush=True)
        os.sync()
        time.sleep(15)
    os.sync()  # the probe's own files
    return Settled(cost, time.monotonic() - start)


def fs_note(settled: Settled | None) -> str:
    if settled is None:
        return ""
    waited = f", after {settled.waited:.0f} s" if settled.waited >= 1 else ""
    slow = " (not settled)" if settled.create_us > FAST_CREATE_US else ""
    return f"new file {settled.create_us:.0f} us{slow}{waited}"


def warm_cache(paths: list[Path]) -> None:
    """Read every frame once, so each timed case starts from a hot page cache, as frames a
    detector just wrote are (this VM pages out files left idle for a minute, which made
    whichever case came later read from disk)."""
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 22):
                pass
