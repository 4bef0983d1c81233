"""Per-frame metadata of an HDF5/NeXus file (what is known of each frame besides its
pixels), for :meth:`saxs_pipeline.frames.hdf5.Hdf5Frames.metadata`.

Every 1-D numeric dataset of the (master) file whose length is the frame count, keyed by
its HDF5 path; ``"image_number"`` from the data files' ``image_nr_low`` attribute (the
caller knows its parts); and ``"time"``/``"date"``: the absolute ``/entry/start_time``
plus a per-frame ``start_time`` dataset (NXmx), else the collection date
(``/entry/start_time`` or ``detectorSpecific/data_collection_date``) plus
``index * frame_time``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import h5py
import numpy as np

from saxs_pipeline.frames.pilatusheader import iso_to_timestamp

__all__ = ["DETECTOR", "FrameMetadata"]

DETECTOR = "/entry/instrument/detector"


class FrameMetadata:
    """The per-frame metadata of ``fh``, a file of ``n`` frames (module doc); its
    datasets are read once, on the first :meth:`rows`."""

    def __init__(self, fh: h5py.File, n: int) -> None:
        self._file, self._n = fh, n
        self._meta: dict[str, np.ndarray] | None = None

    def rows(self, start: int, stop: int,
             image_number: Callable[[int], int | None]) -> list[dict[str, Any]]:
        """One dict per frame of ``[start, stop)``; ``image_number(i)`` is frame ``i``'s
        detector image number, None where unknown."""
        if self._meta is None:
            self._meta = self._per_frame_datasets()
        times = self._times(start, stop)
        out = []
        for i, t in zip(range(start, stop), times, strict=True):
            row: dict[str, Any] = {"index": i}
            row.update({name: values[i].item() for name, values in self._meta.items()})
            number = image_number(i)
            if number is not None:
                row["image_number"] = number
            row["time"] = t
            row["date"] = datetime.fromtimestamp(t, UTC).isoformat() if t is not None else None
            out.append(row)
        return out

    def _per_frame_datasets(self) -> dict[str, np.ndarray]:
        n = self._n
        found: dict[str, np.ndarray] = {}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.ndim == 1 and obj.shape[0] == n and obj.dtype.kind in "iufb":
                found[f"/{name}"] = obj[()]

        self._file.visititems(visit)  # does not follow the external links to the data files
        return found

    def _scalar(self, name: str) -> Any:
        obj = self._file.get(name)
        if not isinstance(obj, h5py.Dataset) or obj.shape not in ((), (1,)):
            return None
        value = obj[()]
        value = value.reshape(-1)[0] if isinstance(value, np.ndarray) else value
        return value.decode() if isinstance(value, bytes) else value

    def _times(self, start: int, stop: int) -> list[float | None]:
        assert self._meta is not None
        iso = self._scalar("/entry/start_time") or self._scalar(f"{DETECTOR}/detectorSpecific/data_collection_date")
        t0 = iso_to_timestamp(str(iso)) if iso else None
        if t0 is None:
            return [None] * (stop - start)
        relative = next((v for k, v in self._meta.items() if k.endswith("/start_time")), None)
        if relative is not None:
            return [t0 + float(relative[i]) for i in range(start, stop)]
        period = self._scalar(f"{DETECTOR}/frame_time")
        period = float(period) if period is not None else 0.0
        return [t0 + i * period for i in range(start, stop)]
