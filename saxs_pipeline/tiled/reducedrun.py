"""A reduced run in Tiled, written with Tiled's own client from a curve stack's rows.

Layout (beside the raw run, at the top of the catalogue)::

    saxs-<raw uid>             container; metadata:
                                 start   {uid, raw_uid, scan_id, plan_name "saxs_reduction",
                                          saxs_calibration, calibration, stack, curve_keys}
                                 summary {n_committed}   rows published, all complete
                                 stop    {exit_status, reason, num_frames} at the end
      R0, R1, ...              one per curve, spec xarray_dataset:
        q                      (q,) xarray_coord, units 1/nm (the stack's axis)
        frame_index, image_time
                               (frame,) xarray_coord
        I, poisson             (frame, q) xarray_data_var, units counts/pixel
        I0, I1, I2             (frame,) xarray_data_var

Row ``r`` in Tiled is row ``r`` of the local stack (the order frames were committed;
``frame_index`` gives acquisition order). Rows are appended with ``patch(offset,
extend=True)``; writing the same rows at the same offset again changes nothing, so a
publisher that was interrupted re-sends from ``n_committed`` on. A gap would read as
zeros: ``n_committed`` (raised after the rows are written) is what a reader can trust.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from saxs_pipeline.stack.layout import FORMATS_READ, TIME_UNITS, StackLayoutError

__all__ = ["PLAN_NAME", "ReducedRun", "StackRows", "read_rows", "reduced_key"]

PLAN_NAME = "saxs_reduction"
FRAME_COORDS = ("frame_index", "image_time")
CURVE_VARS = ("I", "poisson", "I0", "I1", "I2")
_NAMESPACE = uuid.UUID("0f9b8d3c-5a7e-4c61-9a1e-6d2b3c4d5e6f")


def reduced_key(raw_uid: str) -> str:
    return f"saxs-{raw_uid}"


@dataclass
class StackRows:
    """Rows ``[start, stop)`` of a stack: per curve key its axis and arrays, and the
    per-frame coordinates."""

    start: int
    stop: int
    axes: dict[str, tuple[str, str, np.ndarray]]  # key -> (axis name, units, values)
    curves: dict[str, dict[str, tuple[tuple[str, ...], dict[str, Any], np.ndarray]]]
    frames: dict[str, tuple[dict[str, Any], np.ndarray]]
    calibration: Any
    groups: dict[str, dict[str, Any]]  # key -> the curve group's attributes


def _attrs(arr: Any) -> dict[str, Any]:
    return {k: v for k, v in arr.attrs.asdict().items() if isinstance(v, str | int | float)}


def read_rows(stack: Path, start: int, limit: int) -> StackRows:
    """At most ``limit`` committed rows of ``stack`` from ``start`` (``n_valid`` read
    first: rows below it are complete)."""
    root = zarr.open_group(stack, mode="r", use_consolidated=False)
    attrs = root.attrs.asdict()
    if attrs.get("format") not in FORMATS_READ:
        raise StackLayoutError(f"{stack} is not a curve stack")
    stop = min(int(attrs["n_valid"]), start + limit)
    rows = slice(start, max(start, stop))
    axes, curves, groups = {}, {}, {}
    for key in attrs.get("curve_keys", []):
        grp = root[key]
        ga = groups[key] = grp.attrs.asdict()
        axes[key] = (ga["axis_name"], ga["axis_units"], grp[ga["axis_name"]][:])
        curves[key] = {}
        for name in CURVE_VARS:
            arr = grp[name]
            dims = tuple(arr.metadata.dimension_names or ("frame", ga["axis_name"]))
            curves[key][name] = (dims, _attrs(arr), arr[rows])
    frames = {name: (_attrs(root[name]), root[name][rows]) for name in FRAME_COORDS}
    frames["image_time"][0].setdefault("units", TIME_UNITS)
    return StackRows(start, max(start, stop), axes, curves, frames, attrs.get("calibration"),
                     groups)


class ReducedRun:
    """The reduced run of ``raw_uid`` under ``client`` (a Tiled container client)."""

    def __init__(self, client: Any, raw_uid: str) -> None:
        self.client, self.raw_uid, self.key = client, raw_uid, reduced_key(raw_uid)
        self.node: Any = self.client[self.key] if self.key in self.client else None
        self._datasets: dict[str, Any] = {}
        self._arrays: dict[tuple[str, str], Any] = {}

    @property
    def n_committed(self) -> int:
        if self.node is None:
            return 0
        return int((self.node.metadata.get("summary") or {}).get("n_committed", 0))

    def create(self, start: Mapping[str, Any], rows: StackRows) -> None:
        """The run's container and its curves' axes (before any row: a notebook finds the
        run as soon as it starts)."""
        from tiled.structures.core import Spec

        meta = {"start": {"uid": str(uuid.uuid5(_NAMESPACE, self.raw_uid)),
                          "raw_uid": self.raw_uid, "plan_name": PLAN_NAME,
                          "calibration": rows.calibration, "curve_keys": list(rows.curves),
                          **start},
                "summary": {"n_committed": 0}, "stop": None}
        self.node = self.client.create_container(key=self.key, metadata=meta)
        for key, (axis, units, values) in rows.axes.items():
            ds = self._datasets[key] = self.node.create_container(
                key, specs=[Spec("xarray_dataset")],
                metadata={"attrs": {**rows.groups[key], "raw_uid": self.raw_uid}})
            ds.write_array(values, key=axis, dims=[axis], specs=[Spec("xarray_coord")],
                           metadata={"attrs": {"units": units}})

    def append(self, start: Mapping[str, Any], rows: StackRows) -> int:
        """Write ``rows`` (idempotent per offset) and raise ``n_committed``; returns it.
        The arrays are sent side by side: each request waits mostly on the server."""
        from concurrent.futures import ThreadPoolExecutor

        from tiled.structures.core import Spec

        if rows.stop <= rows.start:
            return self.n_committed
        if self.node is None:
            self.create(start, rows)
        puts = []
        for key, arrays in rows.curves.items():
            puts += [(key, name, values, dims, attrs, Spec("xarray_data_var"))
                     for name, (dims, attrs, values) in arrays.items()]
            puts += [(key, name, values, ("frame",), attrs, Spec("xarray_coord"))
                     for name, (attrs, values) in rows.frames.items()]
        with ThreadPoolExecutor(4) as pool:
            for done in [pool.submit(self._put, *put, rows.start) for put in puts]:
                done.result()
        self.node.update_metadata({"summary": {"n_committed": rows.stop}}, drop_revision=True)
        return rows.stop

    def _array(self, key: str, name: str) -> Any:
        """The array client of ``key/name`` (looked up once), None when there is none."""
        if (key, name) not in self._arrays:
            ds = self._datasets.get(key) or self._datasets.setdefault(key, self.node[key])
            self._arrays[key, name] = ds[name] if name in ds else None
        return self._arrays[key, name]

    def _put(self, key: str, name: str, values: np.ndarray, dims: tuple[str, ...],
             attrs: dict[str, Any], spec: Any, offset: int) -> None:
        array = self._array(key, name)
        if array is not None:
            array.patch(values, offset=(offset,) + (0,) * (values.ndim - 1), extend=True)
        elif offset == 0:  # Tiled cannot extend an array created empty: made with the first rows
            self._arrays[key, name] = self._datasets[key].write_array(
                values, key=name, dims=list(dims), specs=[spec], metadata={"attrs": attrs})
        else:
            raise StackLayoutError(f"{self.key}/{key}: {name} is missing but rows from "
                                   f"{offset} on are to be appended")

    def finish(self, stop: Mapping[str, Any]) -> None:
        if self.node is not None:
            self.node.update_metadata({"stop": dict(stop)}, drop_revision=True)
