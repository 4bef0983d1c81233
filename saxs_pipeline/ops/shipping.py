"""Operators built once, in the driver, and shipped to the workers that lack them.

The driver builds every operator of a calibration before a run (for its q grids and to
fail fast), which leaves them in its disk cache. Without a cache shared by the hosts,
every worker host would build them again (N + 1 builds of ~1-10 s on a cluster of N).
:class:`~saxs_pipeline.plugins.worker.IntegratorPlugin` therefore carries the driver's cache
files (:func:`pack`, when it is pickled to go to the scheduler); a worker writes the
ones its own cache lacks (:func:`unpack`) and then builds its integrator, which loads
them. The cache stays the fast path: a worker whose cache has them ignores the bytes.

The operator keys are those :class:`~saxs_pipeline.integrator.Integrator` computes
(:func:`operator_keys` follows its choice of mask and polarization); a key that did not
match would only mean a worker builds the operator itself -- a cache file is named by
the content hash of its inputs, so a wrong operator is never loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.config.calibration import Calibration
from saxs_pipeline.config.darkflat import CorrectionImages
from saxs_pipeline.config.masks import load_mask
from saxs_pipeline.ops import cache
from saxs_pipeline.ops.operator import operator_key

__all__ = ["SHIP_ENV", "SHIP_LIMIT", "missing", "operator_keys", "pack", "shipping_enabled",
           "unpack"]

log = logging.getLogger(__name__)

# Beyond this the operators stay home (each worker builds): the scheduler keeps the
# plugin, and every worker that joins gets it, bytes included.
SHIP_LIMIT = 512 * 2**20
SHIP_ENV = "SAXS_PIPELINE_SHIP_OPERATORS"  # "0": never ship (each worker builds)


def shipping_enabled() -> bool:
    return os.environ.get(SHIP_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


def _dir(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir else cache.default_cache_dir()


def operator_keys(cal: Calibration, attachments: Sequence[Mapping[str, Any] | None] | None,
                  images: CorrectionImages | None = None) -> list[str]:
    """The cache keys of the calibration's radial/phi operators (as the Integrator
    computes them: the dark's non-finite pixels masked, the polarization in the weights
    only with the original intensity definition, GISAXSmode without the first mask)."""
    atts = list(attachments or [])
    pol = None if cal.summed_normalisation else cal.polarization
    keys = []
    for i, mc in enumerate(cal.masks):
        if i == 0 and cal.gisaxs_mode:
            continue
        valid = load_mask(cal, mc, atts[i] if i < len(atts) else None)
        if images is not None and images.dark is not None:
            valid = valid & np.isfinite(images.dark)
        keys.append(operator_key(cal.geometry, mc, pol, valid))
    return keys


def missing(keys: Sequence[str], cache_dir: str | Path | None = None) -> list[str]:
    """The keys whose operator is not in the cache."""
    d = _dir(cache_dir)
    return [k for k in keys if not (d / f"{k}.npz").exists()]


def pack(keys: Sequence[str], cache_dir: str | Path | None = None,
         limit: int = SHIP_LIMIT) -> dict[str, bytes]:
    """The cache files of ``keys`` (those there), or nothing when they exceed ``limit``."""
    d = _dir(cache_dir)
    out: dict[str, bytes] = {}
    for k in keys:
        try:
            out[k] = (d / f"{k}.npz").read_bytes()
        except OSError:
            continue  # not built here (GISAXS, a cache that is off): the worker builds it
    total = sum(len(b) for b in out.values())
    if total > limit:
        log.warning("operators of %.0f MB not shipped (limit %.0f MB): each worker builds them",
                    total / 1e6, limit / 1e6)
        return {}
    return out


def unpack(shipped: Mapping[str, bytes], cache_dir: str | Path | None = None) -> list[str]:
    """Write the shipped operators the cache lacks (atomically); returns their keys."""
    d = _dir(cache_dir)
    written = []
    for k, data in shipped.items():
        path = d / f"{k}.npz"
        if path.exists():
            continue
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.shipped")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:  # a read-only or full cache: the worker builds instead
            log.warning("cannot write shipped operator %s: %s", path, exc)
            continue
        written.append(k)
    if written:
        cache.evict(d, keep=d / f"{written[-1]}.npz")
    return written
