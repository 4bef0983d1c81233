"""The operator cache is bounded (least recently used out) and listed/cleared by
``saxsdog cache``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from saxs_pipeline.cli.saxsdog import main
from saxs_pipeline.ops.cache import cache_entries, evict, touch


def fill(directory: Path, n: int, size: int = 1000) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = directory / f"op{i}.npz"
        p.write_bytes(b"x" * size)
        os.utime(p, (time.time() - 100 + i, time.time() - 100 + i))  # op0 oldest
        paths.append(p)
    return paths


def test_least_recently_used_entries_go_first(tmp_path: Path) -> None:
    paths = fill(tmp_path, 5)
    touch(paths[0])  # just used: now the newest
    dropped = evict(tmp_path, limit=2500, keep=paths[4])
    assert dropped == [paths[1], paths[2], paths[3]]
    assert sorted(e.path.name for e in cache_entries(tmp_path)) == ["op0.npz", "op4.npz"]


def test_cache_list_and_clear(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SAXS_PIPELINE_CACHE", str(tmp_path))
    fill(tmp_path, 3, size=2_000_000)
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "3 operator(s), 6.0 MB" in out and "op2.npz" in out
    assert main(["cache", "clear"]) == 0
    assert cache_entries(tmp_path) == []


def test_a_build_evicts_beyond_the_limit(tmp_path: Path, monkeypatch, saxs_setup) -> None:
    monkeypatch.setenv("SAXS_PIPELINE_CACHE_SIZE", "1K")
    cache = tmp_path / "cache"
    fill(cache, 3)
    setup = saxs_setup()
    setup.integrator(cache_dir=cache)
    names = [e.path.name for e in cache_entries(cache)]
    assert len(names) == 1 and not names[0].startswith("op")  # only the new operator stays
