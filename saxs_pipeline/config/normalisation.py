"""Per-frame normalisation values from the calibration's ``Normalisation`` entry.

Schema::

    "Normalisation": {"Monitor": N, "Transmission": N, "ExposureTime": N,
                      "Thickness": <number, cm>,
                      "AbsoluteScale": <number> | {"Factor": f, "Uncertainty": u}}

where each N is one of

* a number: the same value for every frame;
* ``{"Header": "<key>"}``: the frame's Pilatus/TIFF header value (the dict of
  ``io.images.read_header``, e.g. ``"Exposure_time"``);
* ``{"Dataset": "<HDF5 path>"}``: a 1-D dataset in the frame's own HDF5 file, indexed by
  the frame index;
* ``{"Table": "<csv>", "Column": "<name>", "FileColumn": "<name>"}``: a per-run CSV (a
  header row, then one row per frame file; ``FileColumn`` defaults to ``"filename"``),
  the path relative to the calibration file. Rows match frames by **file name without
  directory**; when a name occurs in several rows (the same name in two directories),
  the row sharing the most trailing directories with the frame's path is taken, and a
  tie is an error.

Keys that are absent are not applied. The divisor of a frame is the product of the
configured Monitor, Transmission, ExposureTime and Thickness; a curve in absolute units
is ``AbsoluteScale * I / divisor`` (:attr:`FrameNormalisation.multiplier`). A configured
value that a frame lacks is an error naming the key, the source and the frame, never a
silent 1; so are non-numeric, non-finite and non-positive values.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np

__all__ = ["FrameNormalisation", "NormalisationError", "NormalisationResolver"]

PER_FRAME = ("Monitor", "Transmission", "ExposureTime")
KEYS = (*PER_FRAME, "Thickness", "AbsoluteScale")
_SOURCES = {"Header": {"Header"}, "Dataset": {"Dataset"},
            "Table": {"Table", "Column", "FileColumn"}}
_CACHED_DATASETS = 8

PathLike = str | os.PathLike[str]


class NormalisationError(ValueError):
    """A Normalisation entry that is malformed, or a value a frame does not have."""


@dataclass(frozen=True)
class FrameNormalisation:
    """The values of one frame (None where not configured), their product ``divisor``
    and the absolute scale (1 when not configured)."""

    monitor: float | None
    transmission: float | None
    exposure_time: float | None
    thickness: float | None
    divisor: float
    absolute_scale: float = 1.0

    @property
    def multiplier(self) -> float:
        """What a frame's curve is multiplied by: ``absolute_scale / divisor``."""
        return self.absolute_scale / self.divisor


def _number(value: Any, what: str) -> float:
    """A positive finite number from a JSON/header/HDF5 number or a CSV cell's text."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise NormalisationError(f"{what}: {value!r} is not a number") from None
    elif isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise NormalisationError(f"{what}: {value!r} is not a number")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise NormalisationError(f"{what}: {v} is not a positive number")
    return v


@dataclass(frozen=True)
class _Table:
    path: Path
    column: str
    rows: dict[str, list[tuple[str, str, int]]]  # basename -> [(file entry, value, line)]


def _common_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


class NormalisationResolver:
    """Made once per calibration (tables are read and their columns checked here);
    :meth:`resolve` gives the values of one frame."""

    def __init__(
        self,
        config: Mapping[str, Any] | None,
        *,
        base_dir: PathLike | None = None,
        source: str = "calibration",
    ) -> None:
        self.source = source
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        config = dict(config or {})
        unknown = sorted(set(config) - set(KEYS))
        if unknown:
            raise NormalisationError(
                f"{source}: $.Normalisation has unknown keys {unknown} (known: {list(KEYS)})")
        self._specs: dict[str, Any] = {}
        self._tables: dict[str, _Table] = {}
        for key in PER_FRAME:
            if key in config:
                self._specs[key] = self._parse(key, config[key])
        where = f"{source}: $.Normalisation"
        self.thickness = _number(config["Thickness"], f"{where}.Thickness") if "Thickness" in config else None
        self.absolute_scale, self.absolute_uncertainty = self._scale(config.get("AbsoluteScale"), where)
        self._datasets: dict[tuple[str, str], Any] = {}

    @classmethod
    def from_calibration(cls, calibration: Any) -> NormalisationResolver:
        """From a parsed ``Calibration`` (its raw dict and base directory)."""
        return cls(calibration.raw.get("Normalisation"), base_dir=calibration.base_dir)

    # -- configuration --------------------------------------------------------------------

    def _scale(self, value: Any, where: str) -> tuple[float, float | None]:
        if value is None:
            return 1.0, None
        if isinstance(value, Mapping):
            extra = sorted(set(value) - {"Factor", "Uncertainty"})
            if "Factor" not in value or extra:
                raise NormalisationError(
                    f"{where}.AbsoluteScale must be a number or {{\"Factor\", \"Uncertainty\"}}, "
                    f"not {dict(value)!r}")
            unc = value.get("Uncertainty")
            if unc is not None and (isinstance(unc, bool) or not isinstance(unc, int | float) or unc < 0):
                raise NormalisationError(f"{where}.AbsoluteScale.Uncertainty: {unc!r} is not >= 0")
            return _number(value["Factor"], f"{where}.AbsoluteScale.Factor"), unc
        return _number(value, f"{where}.AbsoluteScale"), None

    def _parse(self, key: str, spec: Any) -> Any:
        where = f"{self.source}: $.Normalisation.{key}"
        if not isinstance(spec, Mapping):
            return _number(spec, where)
        kinds = [k for k in _SOURCES if k in spec]
        if len(kinds) != 1:
            raise NormalisationError(
                f"{where}: give a number or one of {{\"Header\"}}, {{\"Dataset\"}}, "
                f"{{\"Table\", \"Column\"}}, not {dict(spec)!r}")
        kind = kinds[0]
        extra = sorted(set(spec) - _SOURCES[kind])
        if extra:
            raise NormalisationError(f"{where}: unknown keys {extra} for a {kind} source")
        for name in _SOURCES[kind] - {"FileColumn"}:
            if not isinstance(spec.get(name), str) or not spec[name]:
                raise NormalisationError(f"{where}.{name} must be a non-empty string")
        if kind == "Table":
            self._tables[key] = self._load_table(key, spec, where)
        return dict(spec)

    def _load_table(self, key: str, spec: Mapping[str, Any], where: str) -> _Table:
        path = Path(spec["Table"]).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        file_column = spec.get("FileColumn", "filename")
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                columns = list(reader.fieldnames or [])
                for name in (file_column, spec["Column"]):
                    if name not in columns:
                        raise NormalisationError(
                            f"{where}: table {path} has no column {name!r} (columns: {columns})")
                rows: dict[str, list[tuple[str, str, int]]] = {}
                for row in reader:
                    entry = (row.get(file_column) or "").strip().replace("\\", "/")
                    if entry:
                        rows.setdefault(PurePath(entry).name, []).append(
                            (entry, row.get(spec["Column"]) or "", reader.line_num))
        except OSError as exc:
            raise NormalisationError(f"{where}: table {path} cannot be read ({exc.strerror})") from None
        return _Table(path, spec["Column"], rows)

    # -- per frame --------------------------------------------------------------------------

    def resolve(
        self, path: PathLike, frame_index: int = 0, header: Mapping[str, Any] | None = None
    ) -> FrameNormalisation:
        """The values of frame ``frame_index`` of file ``path``; ``header`` is the frame's
        header dict (read from ``path`` when a Header source needs it and none is given)."""
        values: dict[str, float | None] = {}
        for key in PER_FRAME:
            spec = self._specs.get(key)
            if spec is None:
                values[key] = None
            elif isinstance(spec, float):
                values[key] = spec
            else:
                if "Header" in spec and header is None:
                    from saxs_pipeline.frames.tiff import read_header

                    header = read_header(path)
                values[key] = self._value(key, spec, path, frame_index, header)
        divisor = math.prod(v for v in (*values.values(), self.thickness) if v is not None)
        return FrameNormalisation(values["Monitor"], values["Transmission"],
                                  values["ExposureTime"], self.thickness, divisor,
                                  self.absolute_scale)

    def _value(self, key: str, spec: Mapping[str, Any], path: PathLike, index: int,
               header: Mapping[str, Any] | None) -> float:
        frame = f"frame {os.fspath(path)}" + (f" [{index}]" if index else "")
        if "Header" in spec:
            name = spec["Header"]
            if header is None or name not in header:
                raise NormalisationError(
                    f"Normalisation.{key}: {frame} has no header key {name!r}")
            return _number(header[name], f"Normalisation.{key}: {frame} header {name!r}")
        if "Dataset" in spec:
            return _number(self._dataset_value(key, spec["Dataset"], path, index, frame),
                           f"Normalisation.{key}: {frame} dataset {spec['Dataset']}")
        table = self._tables[key]
        entry, text, line = self._row(key, table, path, frame)
        return _number(text, f"Normalisation.{key}: {frame}: table {table.path} line {line} "
                             f"({entry}) column {table.column!r}")

    def _row(self, key: str, table: _Table, path: PathLike, frame: str) -> tuple[str, str, int]:
        frame_path = PurePath(os.fspath(path).replace("\\", "/"))
        rows = table.rows.get(frame_path.name, [])
        if len(rows) > 1:
            shared = [_common_tail(frame_path.parts, PurePath(r[0]).parts) for r in rows]
            rows = [r for r, n in zip(rows, shared, strict=True) if n == max(shared)]
        if not rows:
            raise NormalisationError(
                f"Normalisation.{key}: table {table.path} has no row for {frame}")
        if len(rows) > 1:
            lines = ", ".join(str(r[2]) for r in rows)
            raise NormalisationError(
                f"Normalisation.{key}: table {table.path} has several rows for {frame} "
                f"(lines {lines})")
        return rows[0]

    def _dataset_value(self, key: str, name: str, path: PathLike, index: int, frame: str) -> Any:
        import h5py

        cache_key = (os.fspath(path), name)
        values = self._datasets.get(cache_key)
        # A file still being written grows: read again when the index is beyond the cache.
        if values is None or index >= len(values):
            try:
                with h5py.File(path, "r") as fh:
                    if name not in fh:
                        raise NormalisationError(
                            f"Normalisation.{key}: {frame} has no dataset {name}")
                    ds = fh[name]
                    if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
                        shape = getattr(ds, "shape", "a group")
                        raise NormalisationError(
                            f"Normalisation.{key}: {frame} dataset {name} must be 1-D "
                            f"(one value per frame), not {shape}")
                    values = ds[()]
            except OSError as exc:
                raise NormalisationError(
                    f"Normalisation.{key}: {frame} is not a readable HDF5 file ({exc})") from None
            if len(self._datasets) >= _CACHED_DATASETS:
                self._datasets.pop(next(iter(self._datasets)))
            self._datasets[cache_key] = values
        if not 0 <= index < len(values):
            raise NormalisationError(
                f"Normalisation.{key}: {frame}: dataset {name} has {len(values)} values, "
                f"no index {index}")
        return values[index]
