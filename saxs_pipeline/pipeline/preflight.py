"""What a run checks before any cluster starts (:meth:`ImageQueue.prepare
<saxs_pipeline.pipeline.queue.ImageQueue.prepare>`): a mistake is told in a second, on the
console, rather than after the workers came up and then only per frame in
``failures.log``. The calibration, its masks and the stack's lock are checked there too,
by the parts that own them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from saxs_pipeline.frames.source import ImageError, ImageIncompleteError
from saxs_pipeline.pipeline.frames import matches
from saxs_pipeline.pipeline.naming import OutputLayout
from saxs_pipeline.pipeline.sources import walk_files

__all__ = ["check_dataset", "check_outputs", "check_run"]


def check_outputs(root: Path) -> None:
    """The outputs folder ``root`` exists (made if needed) and takes new files: a hidden
    file is made and removed (``os.access`` says yes to root and on some network mounts)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".saxs-write-test-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(exc.errno, f"the outputs folder {root} cannot be written "
                      f"({exc.strerror or exc})", str(root)) from None


def check_dataset(directory: Path, pattern: str, dataset: str | None,
                  skip: Path | None = None) -> None:
    """With ``dataset`` (the 3-D dataset of plain HDF5 files, ``--h5-path``): it is a
    dataset of frames in the first file the run's walk finds, else :class:`ImageError`
    naming the dataset and the file. A first file still being written is left to the run."""
    if dataset is None:
        return
    first = next((path for path, name in walk_files(directory, skip) if matches(name, pattern)),
                 None)
    if first is None:
        return
    from saxs_pipeline.frames.registry import frame_count

    try:
        frame_count(first, dataset=dataset)
    except ImageIncompleteError:
        return
    except (ImageError, OSError) as exc:
        raise ImageError(f"the frames' dataset {dataset} (--h5-path) cannot be read in the "
                         f"first file: {exc}") from None


def check_run(layout: OutputLayout, pattern: str, dataset: str | None) -> None:
    """:func:`check_outputs` of the run's outputs root, then :func:`check_dataset`."""
    check_outputs(layout.root)
    check_dataset(layout.directory, pattern, dataset,
                  layout.root if layout.root != layout.directory else None)
