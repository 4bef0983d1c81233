"""Creating a curve stack's store (layout: :mod:`saxs_pipeline.stack.layout`) and
opening and checking an existing one against the curve specs; the writer is
:mod:`saxs_pipeline.stack.writer`."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from saxs_pipeline.stack.layout import (
    CURVE_ARRAYS,
    FORMAT,
    FORMATS_READ,
    INTENSITY_UNITS,
    LONG_NAMES,
    PARAM_ARRAYS,
    SUM_ARRAYS,
    SUM_UNITS,
    TIME_UNITS,
    CurveSpec,
    StackLayoutError,
    param_units,
)

__all__ = ["CHI_ATTRS", "add_vector", "create_stack", "open_stack", "stack_compatible"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# 1-D per-frame arrays get longer chunks than the curves: a 64-row chunk of float64 is
# only 512 bytes, and 100 k frames would make thousands of tiny files per array.
VECTOR_CHUNK_BLOCKS = 16
# A cake's chunks are cut along chi to about this many bytes (a 360 x 500 cake of 64
# rows would be 46 MB a chunk).
CAKE_CHUNK_BYTES = 4 * 2**20
CHI_ATTRS = {"units": "degree", "long_name": "azimuth chi (0 deg along +x, counter-clockwise)"}


def add_vector(root: zarr.Group, name: str, dtype: Any, fill: Any, attrs: dict,
               block_rows: int) -> None:
    """An empty per-frame 1-D array."""
    root.create_array(name, shape=(0,), chunks=(block_rows * VECTOR_CHUNK_BLOCKS,),
                      dtype=dtype, fill_value=fill, dimension_names=("frame",), attributes=attrs)


def _chunks(block_rows: int, shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    if len(shape) == 1:
        return (block_rows, *shape)
    n_chi, nq = shape
    return (block_rows, max(1, min(n_chi, CAKE_CHUNK_BYTES // (block_rows * nq * itemsize))), nq)


def _curve_group(root: zarr.Group, spec: CurveSpec, block_rows: int,
                 definitions: Mapping[str, str]) -> None:
    grp = root.create_group(spec.key, attributes={
        "key": spec.key, "kind": spec.kind, "phi": spec.phi,
        "axis_name": spec.axis_name, "axis_units": spec.axis_units,
        "labels": list(spec.labels),
    })
    axis_attrs: dict[str, Any] = {"units": spec.axis_units,
                                  "long_name": spec.labels[0] if spec.labels else spec.axis_name}
    ax = grp.create_array(spec.axis_name, shape=(spec.size,), dtype="float64",
                          dimension_names=(spec.axis_name,), attributes=axis_attrs)
    ax[:] = spec.axis
    if spec.chi is not None:
        chi = grp.create_array("chi", shape=spec.chi.shape, dtype="float64",
                               dimension_names=("chi",), attributes=CHI_ATTRS)
        chi[:] = spec.chi
    dims = ("frame", *spec.dims)
    for name in CURVE_ARRAYS:
        attrs = {"units": INTENSITY_UNITS, "long_name": LONG_NAMES[name]}
        if name in definitions:
            attrs["definition"] = definitions[name]
        grp.create_array(name, shape=(0, *spec.shape), chunks=_chunks(block_rows, spec.shape, 4),
                         dtype="float32", fill_value=np.nan, dimension_names=dims, attributes=attrs)
    for power, name in enumerate(PARAM_ARRAYS):
        add_vector(grp, name, "float64", np.nan, {"units": param_units(spec.axis_units, power),
                                                   "long_name": LONG_NAMES[name]}, block_rows)
    if spec.sums:
        for name in SUM_ARRAYS:
            grp.create_array(name, shape=(0, *spec.shape), chunks=_chunks(block_rows, spec.shape, 8),
                             dtype="float64", fill_value=0.0, dimension_names=dims,
                             attributes={"units": SUM_UNITS[name], "long_name": LONG_NAMES[name]})


def create_stack(path: PathLike, calibration: dict[str, Any], specs: Sequence[CurveSpec],
                 block_rows: int, *, overwrite: bool,
                 definitions: Mapping[str, str] | None = None) -> zarr.Group:
    """A new, empty stack (0 rows) for these curve families; ``definitions`` (array name
    -> formula) become the ``definition`` attributes of I, poisson and std. Built beside
    ``path`` and renamed into place: a process killed meanwhile leaves no half stack (one
    that could not be continued), only a hidden folder the next creation removes."""
    final = Path(path)
    if final.exists() and not overwrite:
        raise FileExistsError(f"curve stack {final} exists")
    building = final.with_name(f".{final.name}.creating")
    shutil.rmtree(building, ignore_errors=True)
    root = zarr.open_group(
        building, mode="w", zarr_format=3,
        attributes={"format": FORMAT, "calibration": calibration,
                    "curve_keys": [s.key for s in specs], "n_valid": 0},
    )
    add_vector(root, "filename", str, None, {"long_name": "frame source file"}, block_rows)
    add_vector(root, "frame_index", "int64", 0, {"long_name": "frame index in its file"}, block_rows)
    for name in ("image_time", "processed_time"):
        add_vector(root, name, "float64", np.nan,
                   {"units": TIME_UNITS, "calendar": "proleptic_gregorian",
                    "long_name": name.replace("_", " ")}, block_rows)
    for spec in specs:
        _curve_group(root, spec, block_rows, definitions or {})
    if final.exists():  # overwrite
        shutil.rmtree(final)
    os.rename(building, final)
    return zarr.open_group(final, mode="r+", use_consolidated=False)


def stack_compatible(path: PathLike, curves: Sequence[CurveSpec]) -> bool:
    """Whether the curve stack at ``path`` holds exactly these curve families (keys and
    axes), so a run of this calibration may continue it."""
    try:
        root = zarr.open_group(path, mode="r", use_consolidated=False)
        attrs = root.attrs.asdict()
        if attrs.get("format") not in FORMATS_READ:
            return False
        if list(attrs.get("curve_keys", [])) != [s.key for s in curves]:
            return False
        for spec in curves:
            if not CurveSpec.from_group(spec.key, root[spec.key]).same_layout(spec):
                return False
    except (FileNotFoundError, KeyError, ValueError):
        return False
    return True


def open_stack(path: PathLike, specs: Sequence[CurveSpec], calibration: dict[str, Any],
               block_rows: int) -> zarr.Group:
    """An existing curve stack to continue: it must hold exactly these curve families
    (keys and axes), else :class:`StackLayoutError`; a format-1 stack gets its
    ``frame_index`` array."""
    root = zarr.open_group(path, mode="r+", use_consolidated=False)
    attrs = root.attrs.asdict()
    if attrs.get("format") not in FORMATS_READ:
        raise StackLayoutError(f"{path} is not a curve stack (format {attrs.get('format')!r})")
    stored_keys = list(attrs.get("curve_keys", []))
    if stored_keys != [s.key for s in specs]:
        raise StackLayoutError(
            f"curve stack {path} holds curves {stored_keys}, not {[s.key for s in specs]}")
    for spec in specs:
        if not CurveSpec.from_group(spec.key, root[spec.key]).same_layout(spec):
            raise StackLayoutError(
                f"curve stack {path}: curve {spec.key} has another {spec.axis_name} axis "
                "than the calibration (a new calibration needs a new stack)")
    if attrs.get("calibration") != calibration:
        log.warning("curve stack %s was written with another calibration; its axes agree, "
                    "so it is continued and keeps the stored calibration", path)
    if "frame_index" not in root:  # format 1: single-frame files only
        add_vector(root, "frame_index", "int64", 0, {"long_name": "frame index in its file"},
                   block_rows)
        root["frame_index"].resize((root["filename"].shape[0],))
        root.attrs["format"] = FORMAT
    return root
