"""The single writer of a run's curve stack (layout: :mod:`saxs_pipeline.stack.layout`).

Exactly **one writer** per store (the driver process; the run's
:class:`~saxs_pipeline.pipeline.lock.StackLock` enforces it): zarr has no locking, a
partial-chunk write is a read-modify-write and ``append`` writes the new shape from the
writer's cached metadata, so two writers lose rows. The writer buffers the curves the
workers return and writes them in chunk-aligned blocks of ``block_rows`` rows (per-row
appends measured 66 rows/s, 64-row blocks 3,675 rows/s), and at the latest every
``flush_interval`` seconds so the store is never far behind the detector.

A flush writes the rows beyond the committed length, then calls ``on_commit`` with the
``(token, row)`` of every row written (the run ledger commits them there), and only then
raises the ``n_valid`` attribute that readers slice to. Row numbers are assigned by
:meth:`CurveStackWriter.add`; a frame processed again passes its old row and is updated in
place.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import zarr

from saxs_pipeline.stack.create import create_stack, open_stack, stack_compatible
from saxs_pipeline.stack.layout import (
    CURVE_ARRAYS,
    FRAME_ARRAYS,
    PARAM_ARRAYS,
    SUM_ARRAYS,
    CurveSpec,
    StackLayoutError,
)
from saxs_pipeline.stack.rows import StackRow, columns, make_row

if TYPE_CHECKING:
    from saxs_pipeline.integrator import Curve

__all__ = ["CommitHook", "CurveSpec", "CurveStackWriter", "stack_compatible"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
CommitHook = Callable[[list[tuple[Any, int]], int], None]


class CurveStackWriter:
    """The single writer of one run's curve stack (see the module doc).

    ``mode``: ``"w-"`` creates a new store and fails if ``path`` exists, ``"w"`` replaces
    an existing one, ``"a"`` continues an existing stack or creates it. When continuing,
    ``n_valid`` (the run ledger's committed row count) cuts the stack back to the rows the
    ledger knows; without it the stack's own ``n_valid`` is kept. Thread-safe.
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
        n_valid: int | None = None,
        on_commit: CommitHook | None = None,
        definitions: Mapping[str, str] | None = None,
    ) -> None:
        if block_rows < 1:
            raise ValueError("block_rows must be at least 1")
        if mode not in ("w-", "w", "a"):
            raise ValueError(f"mode must be 'w-', 'w' or 'a', not {mode!r}")
        self.path = Path(path)
        self.flush_interval = float(flush_interval)
        self.block_rows = int(block_rows)
        self.on_commit = on_commit
        # Array name -> definition text (Integrator.definitions()), stored as attributes.
        self.definitions = dict(definitions or {})
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
        self._new: list[StackRow] = []  # rows not yet in the store, in row order
        self._updates: dict[int, StackRow] = {}  # rows already in the store, changed
        self._closed = False
        if mode == "a" and self.path.exists():
            self._open_existing(calibration, n_valid)
        else:
            if mode == "w-" and self.path.exists():
                raise FileExistsError(f"curve stack {self.path} exists (use mode='a' or 'w')")
            if n_valid:
                raise StackLayoutError(f"curve stack {self.path} is missing but its ledger "
                                       f"counts {n_valid} committed rows")
            self._create(calibration, overwrite=mode == "w")
        self._last_flush = time.monotonic()

    @classmethod
    def open_or_create(cls, path: PathLike, calibration_json: str | Mapping[str, Any],
                       curves: Sequence[CurveSpec], **kwargs: Any) -> CurveStackWriter:
        """Continue the stack at ``path`` or create it (``mode="a"``). An existing stack
        must have the same curve keys and axes, else :class:`StackLayoutError`; its block
        size wins over ``block_rows``."""
        return cls(path, calibration_json, curves, mode="a", **kwargs)

    # -- store set-up ---------------------------------------------------------------------

    def _create(self, calibration: dict[str, Any], *, overwrite: bool) -> None:
        self._root = create_stack(self.path, calibration, list(self.specs.values()),
                                  self.block_rows, overwrite=overwrite,
                                  definitions=self.definitions)
        self._n = 0
        self._bind_arrays()
        log.info("created curve stack %s (%s)", self.path, ", ".join(self.specs))

    def _open_existing(self, calibration: dict[str, Any], n_valid: int | None) -> None:
        root = open_stack(self.path, list(self.specs.values()), calibration, self.block_rows)
        stored_n = int(root.attrs.get("n_valid", 0))
        self._n = stored_n if n_valid is None else int(n_valid)
        if self._n > root["filename"].shape[0]:
            raise StackLayoutError(f"curve stack {self.path} has {root['filename'].shape[0]} "
                                   f"rows but its ledger counts {self._n} committed ones")
        self._root = root
        self._bind_arrays()
        chunk_rows = self._curve_arrays[0].chunks[0]
        if chunk_rows != self.block_rows:
            log.info("curve stack %s uses blocks of %d rows, not %d", self.path, chunk_rows,
                     self.block_rows)
            self.block_rows = chunk_rows
        # Rows past the commit point were never committed (a writer died mid-flush): cut
        # them; the ledger still has those frames pending, so they are redone.
        for arr in self._all_frame_arrays():
            if arr.shape[0] != self._n:
                arr.resize((self._n, *arr.shape[1:]))
        if stored_n != self._n:
            root.attrs["n_valid"] = self._n
        log.info("continuing curve stack %s at %d rows", self.path, self._n)

    def _bind_arrays(self) -> None:
        # Array handles are kept open: re-opening one reads its zarr.json every time.
        self._frame_arrays = {name: self._root[name] for name in FRAME_ARRAYS}
        self._group_arrays = {
            key: {name: self._root[key][name]
                  for name in CURVE_ARRAYS + PARAM_ARRAYS + (SUM_ARRAYS if spec.sums else ())}
            for key, spec in self.specs.items()
        }
        self._curve_arrays = [g["I"] for g in self._group_arrays.values()]

    def _all_frame_arrays(self) -> list[zarr.Array]:
        arrays = list(self._frame_arrays.values())
        for group in self._group_arrays.values():
            arrays.extend(group.values())
        return arrays

    def read_column(self, name: str) -> np.ndarray:
        """A committed per-frame root array (``filename``, ``frame_index``, ...)."""
        with self._lock:
            return self._frame_arrays[name][: self._n]

    # -- writing --------------------------------------------------------------------------

    @property
    def n_valid(self) -> int:
        """Rows committed to the store."""
        return self._n

    @property
    def n_rows(self) -> int:
        """Rows including those still buffered."""
        return self._n + len(self._new)

    def add(
        self,
        filename: str,
        curves: Sequence[Curve],
        image_time: float | None,
        processed_time: float,
        *,
        frame_index: int = 0,
        row: int | None = None,
        token: Any = None,
    ) -> int:
        """Buffer the curves of one frame and return its row: a new row, or ``row`` (the
        frame's row from before) updated in place. ``token`` comes back in ``on_commit``.

        The buffer is written when it reaches the next block boundary or
        ``flush_interval`` seconds after the last flush.
        """
        entry = make_row(self.specs, filename, frame_index, curves, image_time, processed_time, token)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"curve stack {self.path} is closed")
            if row is None:
                row = self._n + len(self._new)
                self._new.append(entry)
            elif row >= self._n + len(self._new) or row < 0:
                raise ValueError(f"{filename}: row {row} is not in the stack ({self.n_rows} rows)")
            elif row >= self._n:
                self._new[row - self._n] = entry
            else:
                self._updates[row] = entry
            at_boundary = bool(self._new) and (self._n + len(self._new)) % self.block_rows == 0
            if at_boundary or len(self._updates) >= self.block_rows:
                self._flush_locked()
            else:
                self._flush_if_due()
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
        if self.on_commit is not None:
            written = [(r.token, old_n + i) for i, r in enumerate(new)]
            written += [(r.token, i) for i, r in updates.items()]
            self.on_commit(written, new_n)
        # n_valid last: only now are all rows below it complete and committed.
        self._root.attrs["n_valid"] = new_n
        self._n = new_n
        self._new, self._updates = [], {}
        self._last_flush = time.monotonic()
        log.debug("curve stack %s: %d new rows, %d updated, n_valid %d (%.1f ms)", self.path,
                  len(new), len(updates), new_n, 1e3 * (time.perf_counter() - t0))
        return len(new) + len(updates)

    def _array(self, group: str | None, name: str) -> zarr.Array:
        return self._frame_arrays[name] if group is None else self._group_arrays[group][name]

    def _write_new(self, old_n: int, new_n: int, rows: Sequence[StackRow]) -> None:
        # One array after another, on the calling thread: a flush is mostly zarr's Python,
        # holding the GIL. Four writer threads took as long (21-38 ms against 20-30 ms for
        # 50 rows of ten arrays) and held up the driver's other threads the more: a live
        # queue's p99 latency at 50 frames/s was 60-167 ms with them, 28-86 ms without.
        for (group, name), values in columns(self.specs, rows).items():
            arr = self._array(group, name)
            arr.resize((new_n, *arr.shape[1:]))
            # A block that starts inside a chunk (after a partial flush) makes zarr read,
            # merge and rewrite that chunk; with a single writer that is safe.
            arr[old_n:new_n] = values

    def _write_updates(self, updates: Mapping[int, StackRow]) -> None:
        indices = np.array(sorted(updates))
        rows = [updates[i] for i in indices]
        for (group, name), values in columns(self.specs, rows).items():
            arr = self._array(group, name)
            chunk = arr.chunks[0]
            # One read-modify-write per touched chunk rather than one per row.
            for c in np.unique(indices // chunk):
                lo, hi = int(c) * chunk, min((int(c) + 1) * chunk, arr.shape[0])
                sel = (indices >= lo) & (indices < hi)
                block = arr[lo:hi]
                block[indices[sel] - lo] = values[sel]
                arr[lo:hi] = block

    def close(self) -> None:
        """Write everything buffered; the writer cannot be used afterwards."""
        with self._lock:
            if self._closed:
                return
            try:
                self._flush_locked()
            finally:
                self._closed = True
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
