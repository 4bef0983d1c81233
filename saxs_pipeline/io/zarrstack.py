"""The zarr v3 curve stack of one queue: every integrated curve of every frame, one row per
frame, readable live from a notebook while the queue runs.

One store per queue and exactly **one writer** (the driver process): zarr has no locking, a
partial-chunk write is a read-modify-write and ``append`` writes the new shape from the
writer's cached metadata, so two writers lose rows. The driver buffers the curves the
workers return and writes them in chunk-aligned blocks of ``block_rows`` rows (per-row
appends measured 66 rows/s, 64-row blocks 3,675 rows/s), and at the latest every
``flush_interval`` seconds so the store is never far behind the detector.

Layout (zarr format 3, no consolidated metadata, since it would go stale on a live store)::

    <path>/                          group, attributes:
        format      "saxs_pipeline.curves/1"
        calibration the calibration (parsed JSON)
        curve_keys  ["R0", "R1", "S2", ...]
        n_valid     rows that are completely written; written LAST after every flush
      filename        (frame,)        str      frame file name (the row key)
      image_time      (frame,)        float64  "seconds since 1970-01-01" (detector date)
      processed_time  (frame,)        float64  "seconds since 1970-01-01"
      R0/                            one group per curve (Curve.key), attributes:
                                     key, kind, phi, axis_name, axis_units, labels
        q             (q,)            float64  radial axis ("q", "phi", "q_h" or "q_v")
        I             (frame, q)      float32  mean intensity, NaN fill
        poisson       (frame, q)      float32  Poisson error
        std           (frame, q)      float32  standard deviation (NaN when not computed)
        I0, I1, I2    (frame,)        float64  integral parameters

Every array carries ``dimension_names`` and every numeric one a ``units`` attribute, so
``xarray.open_zarr(path, group="R0", consolidated=False)`` gives a Dataset with dims
``("frame", "q")`` and the root gives the per-frame arrays with the times decoded to
datetime64. :func:`open_dataset` combines both, sliced to ``n_valid``.

Readers must slice ``[:n_valid]``: growing an array writes its new shape before the data,
so rows past ``n_valid`` can briefly be NaN. A frame that is processed again updates its
existing row in place instead of adding one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import zarr

if TYPE_CHECKING:
    import xarray

    from saxs_pipeline.integrator import Curve

__all__ = [
    "FORMAT",
    "TIME_UNITS",
    "CurveSpec",
    "CurveStackWriter",
    "StackLayoutError",
    "open_dataset",
    "read_stack",
]

log = logging.getLogger(__name__)

FORMAT = "saxs_pipeline.curves/1"
TIME_UNITS = "seconds since 1970-01-01"
INTENSITY_UNITS = "counts/pixel"
CURVE_ARRAYS = ("I", "poisson", "std")
PARAM_ARRAYS = ("I0", "I1", "I2")
FRAME_ARRAYS = ("filename", "image_time", "processed_time")
# 1-D per-frame arrays get longer chunks than the curves: a 64-row chunk of float64 is
# only 512 bytes, and 100 k frames would make thousands of tiny files per array.
_VECTOR_CHUNK_BLOCKS = 16

_WRITE_THREADS = 4

PathLike = str | os.PathLike[str]


class StackLayoutError(ValueError):
    """An existing store that is not a curve stack or does not match the curve specs."""


@dataclass(frozen=True, eq=False)
class CurveSpec:
    """One curve family of a stack: its key (``Curve.key``: "R0", "S2"), kind ("Radial"
    or "Slice"), radial axis values and the axis name and units."""

    key: str
    kind: str
    axis: np.ndarray
    axis_name: str = "q"
    axis_units: str = "1/nm"
    labels: tuple[str, ...] = ()
    phi: bool = False

    def __post_init__(self) -> None:
        axis = np.array(self.axis, dtype=np.float64)
        if axis.ndim != 1 or axis.size == 0:
            raise ValueError(f"curve {self.key}: axis must be a non-empty 1-D array")
        axis.flags.writeable = False
        object.__setattr__(self, "axis", axis)
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.axis_name == "frame":
            raise ValueError(f"curve {self.key}: the axis cannot be called 'frame'")

    @property
    def size(self) -> int:
        return int(self.axis.size)

    @classmethod
    def from_curve(cls, curve: Curve) -> CurveSpec:
        """The spec of ``curve``'s family: axis "q" (1/nm) for radial curves, "phi" (rad)
        for phi-mode curves, "q_h"/"q_v" (1/nm) for slices (from the column label)."""
        if curve.kind == "Slice":
            vertical = bool(curve.labels) and "q_{v}" in curve.labels[0]
            name, units = ("q_v" if vertical else "q_h"), "1/nm"
        elif curve.phi:
            name, units = "phi", "rad"
        else:
            name, units = "q", "1/nm"
        return cls(curve.key, curve.kind, np.asarray(curve.radial), name, units,
                   tuple(curve.labels), bool(curve.phi))

    @classmethod
    def from_curves(cls, curves: Sequence[Curve]) -> list[CurveSpec]:
        """Specs of every curve of one frame (what ``Integrator.integrate`` returns)."""
        return [cls.from_curve(c) for c in curves]

    def same_layout(self, other: CurveSpec) -> bool:
        return (
            self.key == other.key
            and self.axis_name == other.axis_name
            and self.axis.shape == other.axis.shape
            and bool(np.array_equal(self.axis, other.axis))
        )


@dataclass
class _Row:
    filename: str
    image_time: float
    processed_time: float
    # key -> (mean, poisson, std or None, (I0, I1, I2))
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[float, ...]]] = (
        field(default_factory=dict)
    )


def _param_units(axis_units: str, power: int) -> str:
    # I_n = sum I * axis^n * d(axis): the axis units enter n + 1 times.
    axis = axis_units if power == 0 else f"({axis_units})^{power + 1}"
    return f"{INTENSITY_UNITS} * {axis}"


class CurveStackWriter:
    """The single writer of one queue's curve stack (see the module doc for the layout).

    ``mode``: ``"w-"`` creates a new store and fails if ``path`` exists, ``"w"`` replaces
    an existing one, ``"a"`` continues an existing stack (see :meth:`open_or_create`).
    All methods are thread-safe, so a timer thread may call :meth:`maybe_flush` while the
    driver loop calls :meth:`add`.
    """

    def __init__(
        self,
        path: PathLike,
        calibration_json: str | Mapping[str, Any],
        curves: Sequence[CurveSpec],
        *,
        block_rows: int = 64,
        flush_interval: float = 1.0,
        mode: Literal["w-", "w", "a"] = "w-",
    ) -> None:
        if block_rows < 1:
            raise ValueError("block_rows must be at least 1")
        if mode not in ("w-", "w", "a"):
            raise ValueError(f"mode must be 'w-', 'w' or 'a', not {mode!r}")
        self.path = Path(path)
        self.flush_interval = float(flush_interval)
        self.block_rows = int(block_rows)
        self.specs: dict[str, CurveSpec] = {}
        for spec in curves:
            if spec.key in self.specs:
                raise ValueError(f"curve key {spec.key!r} given twice")
            self.specs[spec.key] = spec
        if not self.specs:
            raise ValueError("a curve stack needs at least one curve spec")
        calibration = (
            json.loads(calibration_json) if isinstance(calibration_json, str)
            else dict(calibration_json)
        )
        self._lock = threading.RLock()
        self._rows: dict[str, int] = {}
        self._new: list[_Row] = []  # rows not yet in the store, in row order
        self._updates: dict[int, _Row] = {}  # rows already in the store, changed
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=_WRITE_THREADS, thread_name_prefix="zarrstack")
        if mode == "a" and self.path.exists():
            self._open_existing(calibration)
        else:
            if mode == "w-" and self.path.exists():
                raise FileExistsError(f"curve stack {self.path} exists (use mode='a' or 'w')")
            self._create(calibration, overwrite=mode == "w")
        self._last_flush = time.monotonic()

    @classmethod
    def open_or_create(
        cls,
        path: PathLike,
        calibration_json: str | Mapping[str, Any],
        curves: Sequence[CurveSpec],
        *,
        block_rows: int = 64,
        flush_interval: float = 1.0,
    ) -> CurveStackWriter:
        """Continue the stack at ``path`` (a resumed queue) or create it.

        An existing stack must have the same curve keys and axes, else
        :class:`StackLayoutError`; its block size wins over ``block_rows``.
        """
        return cls(path, calibration_json, curves, block_rows=block_rows,
                   flush_interval=flush_interval, mode="a")

    # -- store set-up ---------------------------------------------------------------------

    def _create(self, calibration: dict[str, Any], *, overwrite: bool) -> None:
        root = zarr.open_group(
            self.path, mode="w" if overwrite else "w-", zarr_format=3,
            attributes={"format": FORMAT, "calibration": calibration,
                        "curve_keys": list(self.specs), "n_valid": 0},
        )
        vec = self.block_rows * _VECTOR_CHUNK_BLOCKS
        root.create_array("filename", shape=(0,), chunks=(vec,), dtype=str,
                          dimension_names=("frame",),
                          attributes={"long_name": "frame file name"})
        for name in ("image_time", "processed_time"):
            root.create_array(name, shape=(0,), chunks=(vec,), dtype="float64",
                              fill_value=np.nan, dimension_names=("frame",),
                              attributes={"units": TIME_UNITS, "calendar": "proleptic_gregorian",
                                          "long_name": name.replace("_", " ")})
        for spec in self.specs.values():
            grp = root.create_group(spec.key, attributes={
                "key": spec.key, "kind": spec.kind, "phi": spec.phi,
                "axis_name": spec.axis_name, "axis_units": spec.axis_units,
                "labels": list(spec.labels),
            })
            axis_attrs: dict[str, Any] = {"units": spec.axis_units}
            if spec.labels:
                axis_attrs["long_name"] = spec.labels[0]
            ax = grp.create_array(spec.axis_name, shape=(spec.size,), dtype="float64",
                                  dimension_names=(spec.axis_name,), attributes=axis_attrs)
            ax[:] = spec.axis
            for name in CURVE_ARRAYS:
                attrs = {"units": INTENSITY_UNITS}
                if name == "I" and len(spec.labels) > 1:
                    attrs["long_name"] = spec.labels[1]
                grp.create_array(name, shape=(0, spec.size), chunks=(self.block_rows, spec.size),
                                 dtype="float32", fill_value=np.nan,
                                 dimension_names=("frame", spec.axis_name), attributes=attrs)
            for power, name in enumerate(PARAM_ARRAYS):
                grp.create_array(name, shape=(0,), chunks=(vec,), dtype="float64",
                                 fill_value=np.nan, dimension_names=("frame",),
                                 attributes={"units": _param_units(spec.axis_units, power)})
        self._root = root
        self._n = 0
        self._bind_arrays()
        log.info("created curve stack %s (%s)", self.path, ", ".join(self.specs))

    def _open_existing(self, calibration: dict[str, Any]) -> None:
        root = zarr.open_group(self.path, mode="r+", use_consolidated=False)
        attrs = root.attrs.asdict()
        if attrs.get("format") != FORMAT:
            raise StackLayoutError(f"{self.path} is not a curve stack (format {attrs.get('format')!r})")
        stored_keys = list(attrs.get("curve_keys", []))
        if stored_keys != list(self.specs):
            raise StackLayoutError(
                f"curve stack {self.path} holds curves {stored_keys}, not {list(self.specs)}"
            )
        for spec in self.specs.values():
            grp = root[spec.key]
            stored = CurveSpec(spec.key, str(grp.attrs["kind"]), grp[grp.attrs["axis_name"]][:],
                               str(grp.attrs["axis_name"]), str(grp.attrs["axis_units"]))
            if not stored.same_layout(spec):
                raise StackLayoutError(
                    f"curve stack {self.path}: curve {spec.key} has another {spec.axis_name} axis "
                    "than the calibration (a new calibration needs a new stack)"
                )
        if attrs.get("calibration") != calibration:
            log.warning("curve stack %s was written with another calibration; its axes agree, "
                        "so it is continued and keeps the stored calibration", self.path)
        self._root = root
        self._n = int(attrs.get("n_valid", 0))
        self._bind_arrays()
        chunk_rows = self._curve_arrays[0].chunks[0]
        if chunk_rows != self.block_rows:
            log.info("curve stack %s uses blocks of %d rows, not %d", self.path, chunk_rows,
                     self.block_rows)
            self.block_rows = chunk_rows
        # A writer that died mid-flush leaves arrays longer than n_valid; those rows were
        # never committed, so drop them (the next flush writes them again).
        for arr in self._all_frame_arrays():
            if arr.shape[0] != self._n:
                arr.resize((self._n, *arr.shape[1:]))
        names = self._root["filename"][: self._n]
        self._rows = {str(name): i for i, name in enumerate(names)}
        log.info("continuing curve stack %s at %d rows", self.path, self._n)

    def _bind_arrays(self) -> None:
        # Array handles are kept open: re-opening one reads its zarr.json every time.
        self._frame_arrays = {name: self._root[name] for name in FRAME_ARRAYS}
        self._group_arrays = {
            key: {name: self._root[key][name] for name in CURVE_ARRAYS + PARAM_ARRAYS}
            for key in self.specs
        }
        self._curve_arrays = [g["I"] for g in self._group_arrays.values()]

    def _all_frame_arrays(self) -> list[zarr.Array]:
        arrays = list(self._frame_arrays.values())
        for group in self._group_arrays.values():
            arrays.extend(group.values())
        return arrays

    # -- writing --------------------------------------------------------------------------

    @property
    def n_valid(self) -> int:
        """Rows committed to the store."""
        return self._n

    @property
    def n_rows(self) -> int:
        """Rows including those still buffered."""
        return self._n + len(self._new)

    def row_of(self, filename: str) -> int | None:
        """The row of ``filename`` (committed or buffered), None if it has none."""
        return self._rows.get(filename)

    def add(
        self,
        filename: str,
        curves: Sequence[Curve],
        image_time: float | None,
        processed_time: float,
    ) -> int:
        """Buffer the curves of one frame and return its row.

        A filename already in the stack updates its row. The buffer is written when it
        reaches the next block boundary or ``flush_interval`` seconds after the last flush.
        """
        row = self._make_row(filename, curves, image_time, processed_time)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"curve stack {self.path} is closed")
            index = self._rows.get(filename)
            if index is None:
                index = self._n + len(self._new)
                self._rows[filename] = index
                self._new.append(row)
            elif index >= self._n:
                self._new[index - self._n] = row
            else:
                self._updates[index] = row
            at_boundary = bool(self._new) and (self._n + len(self._new)) % self.block_rows == 0
            if at_boundary or len(self._updates) >= self.block_rows:
                self._flush_locked()
            else:
                self._flush_if_due()
            return index

    def _make_row(
        self, filename: str, curves: Sequence[Curve], image_time: float | None,
        processed_time: float,
    ) -> _Row:
        row = _Row(str(filename), math.nan if image_time is None else float(image_time),
                   float(processed_time))
        for c in curves:
            spec = self.specs.get(c.key)
            if spec is None:
                raise ValueError(f"{filename}: curve {c.key} is not in the stack ({list(self.specs)})")
            arrays = [c.mean, c.poisson] + ([c.std] if c.std is not None else [])
            if any(np.shape(a) != (spec.size,) for a in arrays):
                raise ValueError(
                    f"{filename}: curve {c.key} has {np.size(c.mean)} points, the stack {spec.size}"
                )
            params = tuple(float(c.integparams.get(k, math.nan)) for k in PARAM_ARRAYS)
            row.curves[c.key] = (np.asarray(c.mean), np.asarray(c.poisson),
                                 None if c.std is None else np.asarray(c.std), params)
        return row

    def maybe_flush(self) -> int:
        """Flush when ``flush_interval`` seconds passed since the last flush (for a driver
        timer); returns the rows written or updated."""
        with self._lock:
            return self._flush_if_due()

    def _flush_if_due(self) -> int:
        if (self._new or self._updates) and (
            time.monotonic() - self._last_flush >= self.flush_interval
        ):
            return self._flush_locked()
        return 0

    def flush(self) -> int:
        """Write everything buffered (also a partial block); returns the rows written or
        updated."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        new, updates = self._new, self._updates
        if not new and not updates:
            self._last_flush = time.monotonic()
            return 0
        t0 = time.perf_counter()
        old_n = self._n
        new_n = old_n + len(new)
        if new:
            self._write_new(old_n, new_n, new)
        if updates:
            self._write_updates(updates)
        # n_valid last: only now are all rows below it complete in every array.
        self._root.attrs["n_valid"] = new_n
        self._n = new_n
        self._new, self._updates = [], {}
        self._last_flush = time.monotonic()
        log.debug("curve stack %s: %d new rows, %d updated, n_valid %d (%.1f ms)", self.path,
                  len(new), len(updates), new_n, 1e3 * (time.perf_counter() - t0))
        return len(new) + len(updates)

    def _columns(self, rows: Sequence[_Row]) -> dict[tuple[str | None, str], np.ndarray]:
        """The values of ``rows`` per (group, array); group None is the root."""
        out: dict[tuple[str | None, str], np.ndarray] = {
            (None, "filename"): np.array([r.filename for r in rows], dtype=object),
            (None, "image_time"): np.array([r.image_time for r in rows], dtype=np.float64),
            (None, "processed_time"): np.array([r.processed_time for r in rows], dtype=np.float64),
        }
        for key, spec in self.specs.items():
            cols = {name: np.full((len(rows), spec.size), np.nan, dtype=np.float32)
                    for name in CURVE_ARRAYS}
            params = np.full((len(rows), 3), np.nan, dtype=np.float64)
            for i, r in enumerate(rows):
                entry = r.curves.get(key)
                if entry is None:
                    continue
                for name, values in zip(CURVE_ARRAYS, entry[:3], strict=True):
                    if values is not None:
                        cols[name][i] = values
                params[i] = entry[3]
            for name in CURVE_ARRAYS:
                out[key, name] = cols[name]
            for j, name in enumerate(PARAM_ARRAYS):
                out[key, name] = params[:, j]
        return out

    def _array(self, group: str | None, name: str) -> zarr.Array:
        return self._frame_arrays[name] if group is None else self._group_arrays[group][name]

    def _write_new(self, old_n: int, new_n: int, rows: Sequence[_Row]) -> None:
        def write(item: tuple[tuple[str | None, str], np.ndarray]) -> None:
            (group, name), values = item
            arr = self._array(group, name)
            arr.resize((new_n, *arr.shape[1:]))
            # A block that starts inside a chunk (after a partial flush) makes zarr read,
            # merge and rewrite that chunk; with a single writer that is safe.
            arr[old_n:new_n] = values

        self._run_all(write, self._columns(rows).items())

    def _write_updates(self, updates: Mapping[int, _Row]) -> None:
        indices = np.array(sorted(updates))
        rows = [updates[i] for i in indices]

        def write(item: tuple[tuple[str | None, str], np.ndarray]) -> None:
            (group, name), values = item
            arr = self._array(group, name)
            chunk = arr.chunks[0]
            # One read-modify-write per touched chunk rather than one per row.
            for c in np.unique(indices // chunk):
                lo, hi = int(c) * chunk, min((int(c) + 1) * chunk, arr.shape[0])
                sel = (indices >= lo) & (indices < hi)
                block = arr[lo:hi]
                block[indices[sel] - lo] = values[sel]
                arr[lo:hi] = block

        # the row key itself does not change
        items = [(k, v) for k, v in self._columns(rows).items() if k[1] != "filename"]
        self._run_all(write, items)

    def _run_all(self, fn: Any, items: Any) -> None:
        # Each array is its own set of files, so they are written side by side: a flush
        # is mostly waiting on small file writes and compression, not on Python.
        for future in [self._pool.submit(fn, item) for item in items]:
            future.result()

    def close(self) -> None:
        """Write everything buffered; the writer cannot be used afterwards."""
        with self._lock:
            if self._closed:
                return
            try:
                self._flush_locked()
            finally:
                self._closed = True
                self._pool.shutdown()
            log.info("closed curve stack %s at %d rows", self.path, self._n)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Flush also on an error: the rows buffered so far are valid results.
        self.close()


# -- reading --------------------------------------------------------------------------


def read_stack(path: PathLike) -> dict[str, Any]:
    """A snapshot of the stack at ``path``, every per-frame array sliced to ``n_valid``.

    Safe while the writer runs. Returns ``{"n_valid", "calibration", "filename",
    "image_time", "processed_time", "curves"}`` where ``curves`` maps each key to
    ``{"kind", "axis_name", "axis_units", "axis", "I", "poisson", "std", "I0", "I1",
    "I2"}`` (numpy arrays; times as float seconds since 1970, NaN when unknown).
    """
    # n_valid first: array shapes read afterwards are at least as long.
    root = zarr.open_group(path, mode="r", use_consolidated=False)
    attrs = root.attrs.asdict()
    if attrs.get("format") != FORMAT:
        raise StackLayoutError(f"{path} is not a curve stack (format {attrs.get('format')!r})")
    n = int(attrs["n_valid"])
    out: dict[str, Any] = {"n_valid": n, "calibration": attrs.get("calibration")}
    out["filename"] = np.array(root["filename"][:n].tolist(), dtype=str)
    for name in ("image_time", "processed_time"):
        out[name] = root[name][:n]
    curves: dict[str, dict[str, Any]] = {}
    for key in attrs.get("curve_keys", []):
        grp = root[key]
        gattrs = grp.attrs.asdict()
        entry: dict[str, Any] = {
            "kind": gattrs["kind"], "axis_name": gattrs["axis_name"],
            "axis_units": gattrs["axis_units"], "axis": grp[gattrs["axis_name"]][:],
        }
        for name in CURVE_ARRAYS + PARAM_ARRAYS:
            entry[name] = grp[name][:n]
        curves[key] = entry
    out["curves"] = curves
    return out


def open_dataset(path: PathLike, key: str = "R0") -> xarray.Dataset:
    """The curves of ``key`` as an xarray Dataset sliced to ``n_valid``, with the frame
    file names and times (datetime64) as ``frame`` coordinates. Needs xarray."""
    import xarray as xr  # optional dependency, only for notebooks

    n = int(zarr.open_group(path, mode="r", use_consolidated=False).attrs["n_valid"])
    curves = xr.open_zarr(path, group=key, consolidated=False)
    frames = xr.open_zarr(path, consolidated=False)
    ds = curves.isel(frame=slice(0, n)).assign_coords(
        {name: frames[name].isel(frame=slice(0, n)) for name in FRAME_ARRAYS}
    )
    ds.attrs.update(frames.attrs)
    return ds
