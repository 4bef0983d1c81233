"""Where the outputs of a frame go: the original's naming rules, as pure functions.

* ``-o OUTDIR``: the frame path is flattened into one file name inside ``OUTDIR``: the path
  relative to the *parent* of the queue directory (so ``saxsdog -o out data`` turns
  ``data/sub/buf1_00000.tif`` into ``out/data_sub_buf1_00000``), separators become ``_``,
  the extension is cut and every ``:`` and ``.`` is removed from the flattened name. The
  original stripped ``.`` from OUTDIR too (``./out`` became ``/out``); here OUTDIR is kept
  as given. Relative to the queue directory rather than to the process's working
  directory, so workers on other nodes and the control server agree on the name.
* default: ``<image folder>/<relpath>/<stem>`` with relpath ``../work``: a ``work`` folder
  beside the image folder.
* the first curve writes ``<basename>.chi``, the others ``<basename>_cR1.chi``,
  ``<basename>_cS2.chi`` (``Curve.suffix``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "DEFAULT_RELPATH",
    "chi_path",
    "chi_paths",
    "failures_log_path",
    "filelist_entry",
    "filelist_path",
    "flat_name",
    "output_basename",
    "outputs_dir",
    "relative_frame",
    "zarr_default_path",
]

DEFAULT_RELPATH = os.path.join("..", "work")

PathLike = str | os.PathLike[str]


def relative_frame(frame: PathLike, directory: PathLike) -> str:
    """``frame`` relative to the queue ``directory``, with ``/`` separators: the row key of
    the curve stack (unique within a queue, unlike the bare file name)."""
    rel = os.path.relpath(os.fspath(frame), os.fspath(directory))
    return rel.replace(os.sep, "/")


def flat_name(frame: PathLike, directory: PathLike) -> str:
    """The ``-o`` file name of ``frame`` (no extension): its path relative to the parent of
    ``directory``, flattened with ``_``, without extension, ``:`` or ``.``."""
    directory = os.path.normpath(os.fspath(directory))
    rel = os.path.relpath(os.fspath(frame), os.path.dirname(directory) or os.curdir)
    stem, _ext = os.path.splitext(rel)
    flat = stem.replace(os.sep, "_").replace("/", "_")
    return flat.replace(":", "").replace(".", "")


def output_basename(
    frame: PathLike,
    directory: PathLike,
    out_dir: PathLike | None = None,
    relpath: str = DEFAULT_RELPATH,
) -> Path:
    """The output base name of ``frame`` (without ``.chi``), see the module doc."""
    if out_dir:
        return Path(out_dir) / flat_name(frame, directory)
    frame = os.fspath(frame)
    folder = os.path.normpath(os.path.join(os.path.dirname(frame), relpath))
    return Path(folder) / os.path.splitext(os.path.basename(frame))[0]


def chi_path(basename: PathLike, suffix: str = "") -> Path:
    return Path(f"{os.fspath(basename)}{suffix}.chi")


def chi_paths(basename: PathLike, suffixes: Iterable[str]) -> list[Path]:
    """The ``.chi`` files of one frame, for the calibration's ``output_suffixes()``."""
    return [chi_path(basename, s) for s in suffixes]


def outputs_dir(directory: PathLike, out_dir: PathLike | None = None,
                relpath: str = DEFAULT_RELPATH) -> Path:
    """Where the outputs of frames at the top of ``directory`` go: ``out_dir``, else
    ``directory/relpath``. The queue's failures log and curve stack live here."""
    if out_dir:
        return Path(out_dir)
    return Path(os.path.normpath(os.path.join(os.fspath(directory), relpath)))


def zarr_default_path(directory: PathLike, out_dir: PathLike | None = None,
                      relpath: str = DEFAULT_RELPATH) -> Path:
    """``<outputs dir>/<name of the queue directory>.zarr``."""
    name = os.path.basename(os.path.normpath(os.fspath(directory))) or "frames"
    return outputs_dir(directory, out_dir, relpath) / f"{name}.zarr"


def failures_log_path(directory: PathLike, out_dir: PathLike | None = None,
                      relpath: str = DEFAULT_RELPATH) -> Path:
    return outputs_dir(directory, out_dir, relpath) / "failures.log"


def filelist_path(directory: PathLike) -> Path:
    """The live file list: ``<parent of directory>/results/filelist_<directory name>.log``
    (written only when that ``results`` folder exists, as in the original)."""
    directory = os.path.normpath(os.path.abspath(os.fspath(directory)))
    parent, name = os.path.split(directory)
    return Path(parent) / "results" / f"filelist_{name}.log"


def filelist_entry(chi: PathLike, directory: PathLike, params: dict[str, float]) -> str:
    """One live file-list line ``"<path>, I0, I1, I2"``.

    The path is the ``.chi`` path relative to the parent of ``directory`` with a leading
    separator (``/work/buf1_00000.chi``), as the original wrote it; computed from paths
    rather than by splitting on a directory *name*, which broke when the name repeated in
    the path or was empty. Files outside that parent keep their absolute path.
    """
    parent = os.path.dirname(os.path.normpath(os.path.abspath(os.fspath(directory))))
    path = os.path.normpath(os.path.abspath(os.fspath(chi)))
    if path == parent or path.startswith(parent.rstrip(os.sep) + os.sep):
        path = os.sep + os.path.relpath(path, parent)
    i0, i1, i2 = (float(params.get(k, 0.0)) for k in ("I0", "I1", "I2"))
    return f"{path}, {i0!r}, {i1!r}, {i2!r}"
