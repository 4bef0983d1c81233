"""The on-disk operator cache: bounded, least recently used first out.

Every calibration (geometry + mask + binning) leaves a 15-30 MB ``<key>.npz`` in the
cache directory (``$SAXS_PIPELINE_CACHE``, default ``~/.cache/saxs_pipeline/operators``).
Without a bound an afternoon of recalibrating left 180 MB behind, and a beamtime more.
After each new entry the cache is cut back to ``$SAXS_PIPELINE_CACHE_SIZE`` (default
1 GiB), dropping the entries used longest ago (a load touches its entry's mtime).

Beside an entry, ``<key>.plans.json`` holds which kernel layout each CPU measured fastest
for it (:mod:`saxs_pipeline.ops.tuning`); it goes with its entry.

``saxsdog cache list`` shows the entries, ``saxsdog cache clear`` empties the cache.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CacheEntry", "cache_entries", "cache_main", "cache_size_limit", "default_cache_dir",
           "evict", "plans_file", "touch"]

log = logging.getLogger(__name__)

SIZE_ENV = "SAXS_PIPELINE_CACHE_SIZE"
DEFAULT_SIZE = 2**30


def default_cache_dir() -> Path:
    env = os.environ.get("SAXS_PIPELINE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "saxs_pipeline" / "operators"


def cache_size_limit() -> int:
    text = os.environ.get(SIZE_ENV, "").strip().upper().removesuffix("B").removesuffix("I")
    if not text:
        return DEFAULT_SIZE
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1], 1)
    return int(float(text.rstrip("KMG")) * scale)


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size: int
    last_used: float


def cache_entries(directory: Path | None = None) -> list[CacheEntry]:
    """The cache's operators, most recently used first."""
    directory = directory or default_cache_dir()
    out = []
    for p in directory.glob("*.npz") if directory.is_dir() else []:
        try:
            st = p.stat()
        except OSError:
            continue  # evicted meanwhile by another process
        out.append(CacheEntry(p, st.st_size, st.st_mtime))
    return sorted(out, key=lambda e: e.last_used, reverse=True)


def plans_file(entry: Path) -> Path:
    """The kernel plans kept beside the entry ``<key>.npz``."""
    return entry.with_name(entry.stem + ".plans.json")


def _remove(entry: Path) -> None:
    entry.unlink()
    plans_file(entry).unlink(missing_ok=True)


def touch(path: Path) -> None:
    """Mark an entry as just used."""
    try:
        os.utime(path)
    except OSError as exc:  # a read-only cache still serves loads
        log.debug("cannot touch %s: %s", path, exc)


def evict(directory: Path, limit: int | None = None, keep: Path | None = None) -> list[Path]:
    """Drop least recently used entries until the cache fits ``limit`` bytes; ``keep``
    (the entry just written) stays."""
    limit = cache_size_limit() if limit is None else limit
    entries = cache_entries(directory)
    total = sum(e.size for e in entries)
    dropped = []
    for e in reversed(entries):
        if total <= limit:
            break
        if keep is not None and e.path == keep:
            continue
        try:
            _remove(e.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("operator cache: cannot remove %s: %s", e.path, exc)
            continue
        total -= e.size
        dropped.append(e.path)
    if dropped:
        log.info("operator cache %s: %d old entr%s removed (limit %.0f MB)", directory,
                 len(dropped), "y" if len(dropped) == 1 else "ies", limit / 1e6)
    return dropped


def cache_main(argv: Sequence[str]) -> int:
    """``saxsdog cache list|clear``."""
    parser = argparse.ArgumentParser(prog="saxsdog cache",
                                     description="Show or empty the operator cache.")
    parser.add_argument("action", choices=["list", "clear"])
    parser.add_argument("--dir", type=Path, default=None,
                        help="cache directory (default: $SAXS_PIPELINE_CACHE or "
                             "~/.cache/saxs_pipeline/operators)")
    args = parser.parse_args(list(argv))
    directory = args.dir or default_cache_dir()
    entries = cache_entries(directory)
    if args.action == "list":
        total = sum(e.size for e in entries)
        print(f"{directory}: {len(entries)} operator(s), {total / 1e6:.1f} MB "
              f"(limit {cache_size_limit() / 1e6:.0f} MB, ${SIZE_ENV})")
        for e in entries:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            print(f"  {e.path.name}  {e.size / 1e6:7.1f} MB  last used {when}")
        return 0
    for e in entries:
        try:
            _remove(e.path)
        except FileNotFoundError:
            pass
    print(f"{directory}: {len(entries)} operator(s) removed")
    return 0
