"""Where HDF5 links may lead: the data roots of a run.

A master's external links (``/entry/data/data_000001`` -> ``x_data_000001.h5``), external
links met on the way to a named dataset and the source files of a virtual dataset (VDS)
are followed only to files inside the data roots: the run's directory and those given with
``--allow-data-root`` (compared as real paths, so a symbolic link out of a root leads
outside). A link elsewhere would put frames of a file the run was never pointed at --
another user's -- into its stack; its frames fail with "external link to … outside the
data root" instead. Without roots given, the root is the directory of the file opened.

A VDS whose source file does not exist reads as fill values in HDF5, without an error;
its frames are incomplete (most likely still being written) instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import h5py

from saxs_pipeline.frames.source import FrameIncompleteError, ImageError, PathLike

__all__ = ["check_dataset", "data_roots", "link_target", "outside_roots"]


def data_roots(roots: Iterable[PathLike] | None, path: PathLike) -> tuple[str, ...]:
    """The real paths of ``roots``; None: the directory of the file ``path``."""
    given = [os.path.dirname(os.path.abspath(path))] if roots is None else roots
    return tuple(os.path.realpath(r) for r in given)


def link_target(holder: str, name: str) -> str:
    """The file an external link or VDS source named ``name`` in the file ``holder``
    leads to: an absolute name as given, a relative one in ``holder``'s directory."""
    return name if os.path.isabs(name) else os.path.join(os.path.dirname(holder), name)


def outside_roots(file: str, roots: tuple[str, ...]) -> str | None:
    """Why ``file`` may not be read ("external link to … outside the data root"), or None
    when it lies inside one of ``roots``."""
    real = os.path.realpath(file)
    if any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
        return None
    where = roots[0] if len(roots) == 1 else ", ".join(roots)
    return f"external link to {file} outside the data root ({where})"


def check_dataset(dset: h5py.Dataset, roots: tuple[str, ...], where: str) -> None:
    """Raise ImageError when ``dset`` lives in a file outside ``roots`` (reached through
    an external link) or is a VDS reading from one; FrameIncompleteError when a VDS
    source file does not exist."""
    holder = dset.file.filename
    reason = outside_roots(holder, roots)
    if reason is not None:
        raise ImageError(f"{where}: {reason}")
    if not dset.is_virtual:
        return
    for source in dset.virtual_sources():
        if source.file_name == ".":
            continue
        file = link_target(holder, source.file_name)
        reason = outside_roots(file, roots)
        if reason is not None:
            raise ImageError(f"{where}: {reason}")
        if not os.path.exists(file):
            raise FrameIncompleteError(where, f"the source file {file} of its virtual dataset "
                                       "does not exist yet")
