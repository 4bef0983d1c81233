"""Keeping the server's clients inside its base directory; where the server keeps its
own state."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from saxs_pipeline.pipeline.naming import DEFAULT_RELPATH, inside

__all__ = ["confine", "confined_relpath", "state_file"]

STATE_DIR = ".saxsdogserver"


def state_file(basedir: Path, name: str, suffix: str) -> Path:
    """``<basedir>/.saxsdogserver/<name><suffix>``: what server ``name`` keeps across its
    restarts (its queue ``.json``, its replay cache ``.replay``)."""
    return basedir / STATE_DIR / f"{name}{suffix}"


def confine(basedir: str | os.PathLike[str], components: Sequence[str] | str | None) -> Path:
    """The real path of ``basedir``/``components``; PermissionError unless it lies inside
    the real path of ``basedir`` (``..``, absolute parts and symlinks may not leave it)."""
    base = Path(os.path.realpath(basedir))
    if components is None:
        parts: list[str] = []
    elif isinstance(components, str):
        parts = [components]
    else:
        parts = list(components)
    if not all(isinstance(p, str) for p in parts):
        raise PermissionError("directory components must be strings")
    shown = os.path.join(*parts) if parts else "."
    if any("\x00" in p for p in parts):
        raise PermissionError(f"directory {shown!r} is not a valid path")
    real = Path(os.path.realpath(base.joinpath(*parts)))
    if real != base and base not in real.parents:
        raise PermissionError(f"directory {shown!r} is outside the server's base directory")
    return real


def confined_relpath(basedir: str | os.PathLike[str], directory: Path, relpath: str) -> str:
    """``relpath`` (the outputs folder relative to a queue's directory), or ``work``
    inside the directory when ``relpath`` would leave the base directory (a queue on the
    base directory itself has its default ``../work`` outside it)."""
    if inside(os.path.normpath(directory / relpath), os.path.realpath(basedir)):
        return relpath
    return "work" if relpath == DEFAULT_RELPATH else os.path.join(
        "work", os.path.basename(os.path.normpath(relpath)) or "work")
