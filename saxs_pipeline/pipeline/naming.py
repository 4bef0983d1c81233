"""Where a run's outputs go: one outputs root per run for the ``.chi`` files, the curve
stack, its ledger and lock, and the failures log.

* **root**: ``-o OUTDIR``, else ``<run directory>/<relpath>`` with relpath ``../work``: a
  ``work`` folder beside the data folder, as the original wrote. (The original resolved
  relpath against each image's own folder, so frames in sub-folders scattered their
  outputs and ``s1/x.tif`` and ``s2/x.tif`` both became ``work/x.chi``; here relpath is
  taken once, against the run's directory.)
* **the run's name** is the data folder's name (``data``), with the suffix the run's
  store gives it when ``<root>/data.zarr`` belongs to another run (another calibration
  or another data folder: ``data-1a2b3c4d``, :mod:`.store`). Every file a run writes is
  named after it, so two runs sharing a root (sibling folders ``data/`` and ``bf/``
  beside one ``work/``, two calibrations, another folder of the same name) never write
  the same file, one after the other or at the same time.
* **default names** go into ``<root>/<run name>/`` and keep the frame's sub-path below
  the run directory: ``data/s1/x.tif`` -> ``work/data/s1/x.chi``. Two frames can never
  share an output. With the root the run directory itself (``-i``) the first run's names
  sit beside the frames (``data/s1/x.chi``).
* **flat names** (``-o``, the original's rule): the frame's path relative to the *parent*
  of the run directory, separators turned into ``_``, the extension cut, ``:`` and ``.``
  removed, with the run's name for the directory's (``data/sub/buf1_00000.tif`` ->
  ``OUTDIR/data_sub_buf1_00000``). Different frames can map to one name (``a_b.tif`` and
  ``a/b.tif``); the run ledger refuses the second one with both names, so nothing is
  overwritten silently.
* frames of multi-frame files get ``_<index:06d>`` after the stem.
* the first curve writes ``<basename>.chi``, the others ``<basename>_cR1.chi``,
  ``<basename>_cS2.chi`` (``Curve.suffix``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from saxs_pipeline.pipeline.frames import FrameRef

__all__ = [
    "DEFAULT_RELPATH",
    "OutputLayout",
    "chi_path",
    "chi_paths",
    "filelist_entry",
    "flat_name",
    "inside",
]

DEFAULT_RELPATH = os.path.join("..", "work")

PathLike = str | os.PathLike[str]


def inside(path: PathLike, base: PathLike) -> bool:
    """Whether ``path`` is ``base`` or lies below it (both made absolute and normalised)."""
    p = os.path.normpath(os.path.abspath(os.fspath(path)))
    b = os.path.normpath(os.path.abspath(os.fspath(base)))
    return p == b or p.startswith(b.rstrip(os.sep) + os.sep)


def flat_name(source: str, run: str) -> str:
    """The ``-o`` file name (no extension) of the frame at ``source`` (relative to the run
    directory) in the run named ``run``: ``run/source`` flattened with ``_``, without
    extension, ``:`` or ``.``."""
    rel = f"{run}/{source}" if run else source
    stem, _ext = os.path.splitext(rel)
    return stem.replace("/", "_").replace(":", "").replace(".", "")


def _absolute(path: PathLike) -> Path:
    return Path(os.path.normpath(os.path.abspath(os.fspath(path))))


@dataclass(frozen=True)
class OutputLayout:
    """The outputs of one run (see the module doc)."""

    directory: Path
    root: Path
    flat: bool = False
    suffix: str = ""  # the run's name after the directory's (module doc), from its store

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", _absolute(self.directory))

    @classmethod
    def make(cls, directory: PathLike, out_dir: PathLike | None = None,
             relpath: str = DEFAULT_RELPATH) -> OutputLayout:
        if out_dir:
            return cls(Path(directory), _absolute(out_dir), True)
        return cls(Path(directory), _absolute(os.path.join(_absolute(directory), relpath)), False)

    @property
    def name(self) -> str:
        """The run directory's name (the default stack's)."""
        return os.path.basename(self.directory) or "frames"

    @property
    def run(self) -> str:
        """The run's name: the directory's, and the suffix its store gave it."""
        return self.name + self.suffix

    def for_run(self, suffix: str) -> OutputLayout:
        """This layout for the run its store named with ``suffix``."""
        return dataclasses.replace(self, suffix=suffix)

    def source(self, path: PathLike) -> str | None:
        """``path`` relative to the run directory (``/`` separators), None outside it."""
        # abspath normalises, and so did __post_init__ for the directory: a path below it
        # starts with it and a separator (called per frame: 1 us where relpath took 9 us)
        p = os.path.abspath(os.fspath(path))
        prefix = str(self.directory).rstrip(os.sep) + os.sep
        if not p.startswith(prefix) or len(p) == len(prefix):
            return None
        return p[len(prefix):].replace(os.sep, "/")

    def frame_path(self, ref: FrameRef) -> Path:
        return self.directory.joinpath(*ref.source.split("/"))

    def output(self, ref: FrameRef) -> str:
        """The output base name of ``ref`` relative to the root (``/`` separators)."""
        if self.flat:
            name = flat_name(ref.source, self.run)
        elif self.root == self.directory and not self.suffix:  # -i: beside the frames
            name = os.path.splitext(ref.source)[0]
        else:
            name = f"{self.run}/{os.path.splitext(ref.source)[0]}"
        return f"{name}_{ref.index:06d}" if ref.container else name

    def run_file(self, name: str) -> Path:
        """A file of the run as a whole (``live.png``), named after the run like its
        frames' outputs (module doc)."""
        if self.flat:
            return self.root / f"{self.run}_{name}"
        if self.root == self.directory and not self.suffix:
            return self.root / name
        return self.root / self.run / name

    def basename(self, ref: FrameRef) -> Path:
        """The absolute output base name of ``ref`` (without ``.chi``)."""
        return self.root.joinpath(*self.output(ref).split("/"))

    def stack(self) -> Path:
        """``<root>/<run directory name>.zarr``."""
        return self.root / f"{self.name}.zarr"

    def failures_log(self) -> Path:
        return self.root / "failures.log"

    def filelist(self, base: PathLike | None = None) -> Path:
        """The live file list: ``<parent of directory>/results/filelist_<run name>.log`` as in
        the original, or ``<directory>/results/...`` when that parent is outside ``base``
        (the server's base directory)."""
        parent = self.directory.parent
        if base is not None and not inside(parent, base):
            parent = self.directory
        return parent / "results" / f"filelist_{self.run}.log"


def chi_path(basename: PathLike, suffix: str = "") -> Path:
    return Path(f"{os.fspath(basename)}{suffix}.chi")


def chi_paths(basename: PathLike, suffixes: Iterable[str]) -> list[Path]:
    """The ``.chi`` files of one frame, for the calibration's ``output_suffixes()``."""
    return [chi_path(basename, s) for s in suffixes]


@lru_cache(maxsize=64)
def _below(directory: str) -> str:
    # "<parent of directory>/": one line per frame, so the parent is worked out once
    parent = os.path.dirname(os.path.normpath(os.path.abspath(directory)))
    return parent.rstrip(os.sep) + os.sep


def filelist_entry(chi: PathLike, directory: PathLike, params: dict[str, float]) -> str:
    """One live file-list line ``"<path>, I0, I1, I2"``.

    The path is the ``.chi`` path relative to the parent of ``directory`` with a leading
    separator (``/work/data/buf1_00000.chi``), as the original wrote it; computed from paths
    rather than by splitting on a directory *name*, which broke when the name repeated in
    the path or was empty. Files outside that parent keep their absolute path.
    """
    directory = os.fspath(directory)
    # cached only for absolute paths: a relative one depends on the working directory
    prefix = _below(directory) if os.path.isabs(directory) else _below.__wrapped__(directory)
    path = os.path.normpath(os.path.abspath(os.fspath(chi)))
    if path.startswith(prefix):
        path = os.sep + path[len(prefix):]
    i0, i1, i2 = (float(params.get(k, 0.0)) for k in ("I0", "I1", "I2"))
    return f"{path}, {i0!r}, {i1!r}, {i2!r}"
