"""Reading a curve stack (layout: :mod:`saxs_pipeline.stack.layout`), also while its
writer is running: readers slice every per-frame array to ``n_valid``, which the writer
raises only after the rows below it are complete and committed to the run ledger."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from saxs_pipeline.pipeline.frames import FrameRef
from saxs_pipeline.stack.layout import (
    CURVE_ARRAYS,
    FORMATS_READ,
    FRAME_ARRAYS,
    PARAM_ARRAYS,
    SUM_ARRAYS,
    StackLayoutError,
)

if TYPE_CHECKING:
    import xarray

__all__ = ["frame_names", "frame_order", "open_dataset", "read_frames", "read_stack"]

PathLike = str | os.PathLike[str]

_DIGITS = re.compile(r"(\d+)")


def _natural(name: str) -> tuple[Any, ...]:
    # "x_9" before "x_10": numbers compare as numbers
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(name))


def frame_order(filenames: Any, frame_index: Any) -> np.ndarray:
    """Row indices that put frames in acquisition order: by source file name (numbers in
    names compared as numbers), then frame index -- whatever order they completed in."""
    names = [str(n) for n in filenames]
    index = [int(i) for i in frame_index]
    return np.array(sorted(range(len(names)), key=lambda r: (_natural(names[r]), index[r])),
                    dtype=np.int64)


def frame_names(filenames: Any, frame_index: Any) -> list[str]:
    """The name of each frame, what selections match: its source file relative to the run's
    directory, ``file#index`` for frames of multi-frame files (``run_master.h5#3``)."""
    return [str(FrameRef.of(str(f), int(i))) for f, i in zip(filenames, frame_index, strict=True)]


def _open(path: PathLike) -> tuple[zarr.Group, dict[str, Any]]:
    root = zarr.open_group(path, mode="r", use_consolidated=False)
    attrs = root.attrs.asdict()
    if attrs.get("format") not in FORMATS_READ:
        raise StackLayoutError(f"{path} is not a curve stack (format {attrs.get('format')!r})")
    return root, attrs


def read_frames(path: PathLike) -> list[tuple[str, int]]:
    """(source file, frame index) of every committed row, in storage order."""
    root, attrs = _open(path)
    n = int(attrs["n_valid"])
    names = root["filename"][:n].tolist()
    index = root["frame_index"][:n].tolist() if "frame_index" in root else [0] * n
    return [(str(a), int(b)) for a, b in zip(names, index, strict=True)]


def read_stack(path: PathLike) -> dict[str, Any]:
    """A snapshot of the stack at ``path``, every per-frame array sliced to ``n_valid``,
    rows in storage (completion) order.

    Returns ``{"n_valid", "calibration", "filename", "frame_index", "image_time",
    "processed_time", "order", "curves"}``: ``order`` the rows in acquisition order (see
    :func:`frame_order`); ``curves`` maps each key to ``{"kind", "axis_name",
    "axis_units", "axis", "I", "poisson", "std", "I0", "I1", "I2"}`` plus ``"chi"`` for
    cakes and the sum arrays where stored (numpy arrays; times
    as float seconds since 1970, NaN when unknown).
    """
    root, attrs = _open(path)  # n_valid first: arrays read afterwards are at least as long
    n = int(attrs["n_valid"])
    out: dict[str, Any] = {"n_valid": n, "calibration": attrs.get("calibration")}
    out["filename"] = np.array(root["filename"][:n].tolist(), dtype=str)
    out["frame_index"] = (root["frame_index"][:n] if "frame_index" in root
                          else np.zeros(n, dtype=np.int64))
    for name in ("image_time", "processed_time"):
        out[name] = root[name][:n]
    out["order"] = frame_order(out["filename"], out["frame_index"])
    curves: dict[str, dict[str, Any]] = {}
    for key in attrs.get("curve_keys", []):
        grp = root[key]
        gattrs = grp.attrs.asdict()
        entry: dict[str, Any] = {
            "kind": gattrs["kind"], "axis_name": gattrs["axis_name"],
            "axis_units": gattrs["axis_units"], "axis": grp[gattrs["axis_name"]][:],
        }
        if "chi" in grp:  # a cake: I, poisson, std are (frame, chi, q)
            entry["chi"] = grp["chi"][:]
        for name in CURVE_ARRAYS + PARAM_ARRAYS:
            entry[name] = grp[name][:n]
        for name in SUM_ARRAYS:  # opt-in (StoreSums)
            if name in grp:
                entry[name] = grp[name][:n]
        curves[key] = entry
    out["curves"] = curves
    return out


def open_dataset(path: PathLike, key: str = "R0") -> xarray.Dataset:
    """The curves of ``key`` as an xarray Dataset of the committed rows in acquisition
    order (:func:`frame_order`), with the frame's source file, frame index, name
    (:func:`frame_names`), stack row and times (datetime64) as ``frame`` coordinates.
    Positions along ``frame`` are what ``--frames`` selects. Needs xarray."""
    import xarray as xr  # optional dependency, only for notebooks

    root, attrs = _open(path)
    n = int(attrs["n_valid"])
    curves = xr.open_zarr(path, group=key, consolidated=False).isel(frame=slice(0, n))
    frames = xr.open_zarr(path, consolidated=False).isel(frame=slice(0, n))
    coords = {name: frames[name] for name in FRAME_ARRAYS if name in frames}
    index = coords["frame_index"].values if "frame_index" in coords else np.zeros(n, np.int64)
    order = frame_order(coords["filename"].values, index)
    ds = curves.assign_coords(coords).isel(frame=order)
    names = frame_names(coords["filename"].values[order], index[order])
    ds = ds.assign_coords(row=("frame", order), name=("frame", names))
    ds["row"].attrs["long_name"] = "row in the stack (completion order)"
    ds["name"].attrs["long_name"] = "frame name (what --names and selections match)"
    ds.attrs.update(frames.attrs)
    return ds
