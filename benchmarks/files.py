"""Frames on disk for the benchmarks, and the file system's state before a timed case."""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def copy_frames(src: Path, directory: Path, n: int, prefix: str = "frame") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{prefix}_{i:05d}.tif" for i in range(n)]
    for p in paths:
        shutil.copyfile(src, p)
    os.sync()  # no writeback of the copies during a timed case
    return paths


FAST_CREATE_US = 100.0  # a new 1 kB file here takes 30-60 us when no inode is skipped


@dataclass
class Settled:
    create_us: float  # creating, writing (1 kB) and closing a new file, per file
    waited: float  # seconds waited for that to be fast


def create_cost(directory: Path, n: int = 200) -> float:
    """Microseconds per new file, as a frame's ``.chi`` is made. The files are kept:
    deleting them would add to what this measures."""
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"{time.monotonic_ns():x}"
    t0 = time.perf_counter()
    for i in range(n):
        with open(directory / f"{tag}-{i}", "xb") as fh:
            fh.write(bytes(1024))
    return 1e6 * (time.perf_counter() - t0) / n


def settle_file_system(probe: Path | None = None, files: int = 200, wait: float = 6.0,
                       max_wait: float = 420.0) -> Settled | None:
    """Write back what earlier cases wrote; then, with a ``probe`` directory beside the
    case's outputs, wait (at most ``max_wait`` s) until ``files`` new files (as many as
    the case makes: fewer would not reach every inode it will) are cheap again.

    ext4 without a journal (this VM's root) will not reuse an inode deleted less than
    60 s ago, or 360 s while its inode-table block is dirty (Linux >= 5.7), and skips
    such inodes one by one on every allocation: after a few thousand deletions (an
    earlier run's, or the test suite's clean-up) a new file took 0.2-0.7 ms instead of
    ~60 us, and a readdir of 600 frames ran at 361-384 frames/s instead of 473-495.
    Only our side creates files, so that would time the file system's bookkeeping
    against pyFAI's loop, not the pipeline."""
    os.sync()
    time.sleep(wait)
    if probe is None:
        return None
    start = time.monotonic()
    while (cost := create_cost(probe, files)) > FAST_CREATE_US and time.monotonic() - start < max_wait:
        print(f"waiting for the file system: a new file takes {cost:.0f} us (recently "
              f"deleted inodes are skipped; {time.monotonic() - start:.0f} s so far)",
              file=sys.stderr, flush=True)
        os.sync()
        time.sleep(15)
    return Settled(cost, time.monotonic() - start)


def fs_note(settled: Settled | None) -> str:
    if settled is None:
        return ""
    waited = f", after {settled.waited:.0f} s" if settled.waited >= 1 else ""
    return f"new file {settled.create_us:.0f} us{waited}"


def warm_cache(paths: list[Path]) -> None:
    """Read every frame once, so each timed case starts from a hot page cache, as frames a
    detector just wrote are (this VM pages out files left idle for a minute, which made
    whichever case came later read from disk)."""
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 22):
                pass
