"""saxs_pipeline: real-time reduction of SAXS detector images (a rebuild of SAXSDOG).

The package namespace offers the original Saxsdog's Python API for old scripts
(``calibration``, ``slice``, ``calc_theta``, ``scalemat``, ``openmask``; see
:mod:`saxs_pipeline.legacy`). They are loaded on first use, so ``import saxs_pipeline``
stays cheap and never pulls in numpy, scipy, Dask or ZeroMQ by itself.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

try:
    __version__: str = metadata.version("saxs-pipeline")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_SEED_API = ("calibration", "slice", "calc_theta", "scalemat", "openmask")

__all__ = ["__version__", *_SEED_API]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attributes: the seed API costs its imports only when an old script uses it.
    if name in _SEED_API:
        from saxs_pipeline import legacy

        value = getattr(legacy, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'saxs_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SEED_API})
