"""saxs_pipeline: real-time reduction of SAXS detector images (a rebuild of SAXSDOG).

The package namespace offers the entry points users import: the original Saxsdog's
Python API for old scripts (``calibration``, ``slice``, ``calc_theta``, ``scalemat``,
``openmask``; see :mod:`saxs_pipeline.legacy`), the run queue
(:class:`~saxs_pipeline.pipeline.queue.ImageQueue`) and the curve-stack reader
(:func:`~saxs_pipeline.stack.read.open_dataset`). They are loaded on first use, so
``import saxs_pipeline`` stays cheap and never pulls in numpy, scipy, Dask or ZeroMQ by
itself. Where each lives is in ``docs/architecture.md``.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import Any

try:
    __version__: str = metadata.version("saxs-pipeline")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# name -> the module that defines it
_ENTRY_POINTS = {
    **dict.fromkeys(("calibration", "slice", "calc_theta", "scalemat", "openmask"),
                    "saxs_pipeline.legacy"),
    "ImageQueue": "saxs_pipeline.pipeline.queue",
    "open_dataset": "saxs_pipeline.stack.read",
}

__all__ = ["__version__", *_ENTRY_POINTS]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attributes: an entry point costs its imports only when it is used.
    if name in _ENTRY_POINTS:
        value = getattr(import_module(_ENTRY_POINTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'saxs_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_ENTRY_POINTS})
