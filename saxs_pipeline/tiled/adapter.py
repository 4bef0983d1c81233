"""A Tiled adapter for curve stacks, so a Tiled server serves a folder of reduced runs::

    tiled serve directory WORK --public \\
        --adapter application/x-saxs-stack=saxs_pipeline.tiled.adapter:SaxsStackAdapter \\
        --mimetype-hook saxs_pipeline.tiled.adapter:detect_mimetype

and ``from_uri(url)["run1"]["run1"]["R0"].read()`` is what
:func:`saxs_pipeline.stack.read.open_dataset` returns locally: dims (frame, q), q in 1/nm,
the frames in acquisition order with their source file, frame index, row and times
(datetime64) as coordinates, the stack's attributes (the calibration among them).

Each request builds its children from the store as it is then: ``n_valid`` is read first
and every per-frame array sliced to it, so a stack still being written shows its committed
rows and grows without being registered again (do not use ``--watch`` for stacks being
written: it re-registers the whole tree on every change, and readers get 404s meanwhile).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.container import ContainerAdapter
from tiled.iterviews import ItemsView, KeysView, ValuesView
from tiled.structures.container import ContainerStructure
from tiled.structures.core import Spec
from tiled.utils import path_from_uri

from saxs_pipeline.stack.layout import FORMATS_READ, FRAME_ARRAYS, TIME_UNITS
from saxs_pipeline.stack.read import frame_order

__all__ = ["MIMETYPE", "SaxsStackAdapter", "detect_mimetype"]

MIMETYPE = "application/x-saxs-stack"


def detect_mimetype(path: Any, mimetype: str | None) -> str | None:
    """``--mimetype-hook``: a directory whose ``zarr.json`` says it is a curve stack."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return mimetype
    try:
        fmt = json.loads(meta.read_text()).get("attributes", {}).get("format")
    except (OSError, ValueError, AttributeError):
        return mimetype
    return MIMETYPE if fmt in FORMATS_READ else mimetype


class _Live(ContainerAdapter):
    """A container whose children are made when they are asked for."""

    def __init__(self, children: dict[str, Callable[[], Any]], *, metadata: Any = None,
                 specs: list[Spec] | None = None) -> None:
        self._children = children
        super().__init__(ContainerStructure(keys=list(children)), metadata=metadata,
                         specs=specs)

    def __getitem__(self, key: str) -> Any:
        return self._children[key]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._children)

    def __len__(self) -> int:
        return len(self._children)

    def keys(self) -> KeysView:  # type: ignore[override]
        return KeysView(lambda: len(self), self._keys_slice)

    def values(self) -> ValuesView:  # type: ignore[override]
        return ValuesView(lambda: len(self), self._items_slice)

    def items(self) -> ItemsView:  # type: ignore[override]
        return ItemsView(lambda: len(self), self._items_slice)

    def _keys_slice(self, start: int, stop: int, direction: int, page_size: int | None = None
                    ) -> list[str]:
        return list(self._children)[::direction][start:stop]

    def _items_slice(self, start: int, stop: int, direction: int,
                     page_size: int | None = None) -> list[tuple[str, Any]]:
        return [(k, self[k]) for k in self._keys_slice(start, stop, direction)]

    def inlined_contents_enabled(self, depth: int) -> bool:
        return False

    def search(self, query: Any) -> Any:
        raise NotImplementedError("curve stacks are not searched")

    def read(self, fields: Any = None) -> _Live:
        return self


def _attrs(arr: Any) -> dict[str, Any]:
    return {k: v for k, v in arr.attrs.asdict().items() if k != "_ARRAY_DIMENSIONS"}


def _frames(arr: Any, n: int, order: np.ndarray, dims: tuple[str, ...], spec: str) -> ArrayAdapter:
    """The first ``n`` rows of a per-frame array in acquisition ``order`` (read lazily)."""
    import dask.array

    attrs = _attrs(arr)
    if arr.dtype.kind in "OUT" or "str" in str(arr.dtype).lower():
        data: Any = np.array([str(x) for x in arr[:n]], dtype=str)[order] if n else np.zeros(0, "<U1")
    else:
        data = dask.array.from_zarr(arr)[:n][order] if n else np.zeros((0, *arr.shape[1:]), arr.dtype)
    if attrs.get("units") == TIME_UNITS:  # as xarray decodes them: datetime64
        data = (np.asarray(data) * 1e9).astype("datetime64[ns]")
        attrs.pop("units")
    return ArrayAdapter.from_array(data, dims=dims, specs=[Spec(spec)], metadata={"attrs": attrs})


def _curves(root: Any, key: str) -> _Live:
    attrs = root.attrs.asdict()
    n = int(attrs["n_valid"])  # first: the arrays read after it are at least this long
    grp = root[key]
    order = frame_order(np.array(root["filename"][:n].tolist(), dtype=str),
                        root["frame_index"][:n] if "frame_index" in root else np.zeros(n, int))
    children: dict[str, Callable[[], Any]] = {}
    for name in grp.array_keys():
        arr = grp[name]
        dims = tuple(arr.metadata.dimension_names or ())
        if dims and dims[0] == "frame":
            children[name] = lambda a=arr, d=dims: _frames(a, n, order, d, "xarray_data_var")
        else:
            children[name] = lambda a=arr, d=dims: ArrayAdapter.from_array(
                a[:], dims=d, specs=[Spec("xarray_coord")], metadata={"attrs": _attrs(a)})
    for name in FRAME_ARRAYS:
        if name in root:
            children[name] = lambda a=root[name]: _frames(a, n, order, ("frame",), "xarray_coord")
    children["row"] = lambda: ArrayAdapter.from_array(
        order, dims=("frame",), specs=[Spec("xarray_coord")],
        metadata={"attrs": {"long_name": "row in the stack (completion order)"}})
    return _Live(children, specs=[Spec("xarray_dataset")],
                 metadata={"attrs": {**grp.attrs.asdict(), **attrs}})


class _Stack(_Live):
    def __init__(self, path: Path, specs: list[Spec] | None = None) -> None:
        root = zarr.open_group(path, mode="r", use_consolidated=False)
        attrs = root.attrs.asdict()
        keys = list(attrs.get("curve_keys", []))
        super().__init__({k: (lambda k=k: _curves(zarr.open_group(path, mode="r",
                                                                  use_consolidated=False), k))
                          for k in keys},
                         metadata={"format": attrs.get("format"),
                                   "calibration": attrs.get("calibration"), "curve_keys": keys},
                         specs=specs or [Spec("saxs_curve_stack")])


class SaxsStackAdapter:
    """What ``--adapter`` names: Tiled calls :meth:`from_uris` when it registers a stack
    and :meth:`from_catalog` for each request that reaches it."""

    @classmethod
    def from_uris(cls, data_uri: str, **kwargs: Any) -> _Live:
        return _Stack(path_from_uri(data_uri))

    @classmethod
    def from_catalog(cls, data_source: Any, node: Any, /, **kwargs: Any) -> _Live:
        return _Stack(path_from_uri(data_source.assets[0].data_uri), specs=node.specs)
