"""The data directory as the workers see it: a path map between driver and worker hosts.

On a facility cluster the driver (``saxsdog``, ``saxsdogserver``) and the worker hosts
often mount the same file system under different prefixes (``/data/visitor`` on the
beamline computer, ``/gpfs/beamline/visitor`` on the nodes). The tasks get file paths:
the frame to read and the output base name the worker writes its ``.chi`` files to. A
:class:`PathMap` rewrites both on the way out (driver prefix -> worker prefix) and the
``.chi`` paths the task reports on the way back, so that the driver's own outputs (the
curve stack, the ledger, the live file list) keep the driver's paths.

Prefixes match whole path components (``/data`` maps ``/data/x``, never ``/database``);
the longest matching prefix wins. With no pairs the map changes nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the link imports this module; the task module pulls in numpy & co
    from saxs_pipeline.pipeline.tasktypes import FrameResult, FrameTask

__all__ = ["PathMap", "PathMapError"]


class PathMapError(ValueError):
    """A ``DRIVER=WORKER`` spec that cannot be used."""


def _prefix(p: str) -> str:
    return posixpath.normpath(p) if p not in ("", "/") else "/"


def _swap(path: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for src, dst in pairs:
        if path == src:
            return dst
        if src == "/" or path.startswith(src + "/"):
            rest = path[len(src):].lstrip("/")
            return posixpath.join(dst, rest) if rest else dst
    return path


@dataclass(frozen=True)
class PathMap:
    """``pairs``: (driver prefix, worker prefix), longest driver prefix first."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: Iterable[str] | None) -> PathMap:
        """From ``DRIVER_PREFIX=WORKER_PREFIX`` strings (absolute paths)."""
        pairs = []
        for spec in specs or ():
            src, sep, dst = spec.partition("=")
            if not sep or not src or not dst:
                raise PathMapError(f"path map {spec!r}: expected DRIVER_PREFIX=WORKER_PREFIX")
            if not (posixpath.isabs(src) and posixpath.isabs(dst)):
                raise PathMapError(f"path map {spec!r}: both prefixes must be absolute paths")
            pairs.append((_prefix(src), _prefix(dst)))
        if len({s for s, _ in pairs}) != len(pairs):
            raise PathMapError("path map: a driver prefix is given twice")
        return cls(tuple(sorted(pairs, key=lambda p: len(p[0]), reverse=True)))

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def to_worker(self, path: str) -> str:
        return _swap(path, self.pairs) if self.pairs else path

    def to_driver(self, path: str) -> str:
        if not self.pairs:
            return path
        back = tuple(sorted(((d, s) for s, d in self.pairs), key=lambda p: len(p[0]),
                            reverse=True))
        return _swap(path, back)

    def task(self, t: FrameTask) -> FrameTask:
        """The task as a worker must get it. Stream frames (no file) are left alone."""
        if not self.pairs:
            return t
        return replace(t, path=self.to_worker(t.path) if t.path else t.path,
                       output=self.to_worker(t.output))

    def result(self, r: FrameResult) -> FrameResult:
        """A task's result with the driver's paths (in place)."""
        if self.pairs and r.chi:
            r.chi = [self.to_driver(c) for c in r.chi]
        return r

    def describe(self) -> str:
        return ", ".join(f"{s} -> {d}" for s, d in self.pairs) or "none"
