"""``.chi`` curve files: write them exactly as the original Saxsdog did, read every variant.

Radial layout (byte for byte the original's numpy ``savetxt(newline="\\n ")`` output)::

    <calibration JSON>
    {"I0": ..., "I1": ..., "I2": ...}
    ["Scattering Vector  q [$nm^{-1}$]", "Intensity (Count/Pixel)", "Error Margin"]
       N
     <q> <I> <err>          each row ' %.18e %.18e %.18e' (one leading space)
     ...
     <- the file ends with "\\n " (a last line holding a single space)

Empty bins are ``nan``; line endings are LF. The slice variant has the labels on line 2
and the literal ``Intensity`` on line 3. Every consumer skips exactly four header lines,
which is what :func:`read_chi` relies on to read the older layouts and FIT2D's files too.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.curves.chiformat import format_e18, format_table

__all__ = [
    "PHI_LABELS",
    "RADIAL_LABELS",
    "ChiData",
    "ChiError",
    "read_chi",
    "write_chi",
    "write_slice_chi",
]

PathLike = str | os.PathLike[str]

# Two spaces after "Vector": the original's exact text, so files compare byte for byte.
RADIAL_LABELS: list[str] = [
    "Scattering Vector  q [$nm^{-1}$]",
    "Intensity (Count/Pixel)",
    "Error Margin",
]
PHI_LABELS: list[str] = ["Phi Angle [rad]", "Intensity (Count/Pixel)", "Error Margin"]


class ChiError(ValueError):
    """A ``.chi`` file that cannot be read, or curve data that cannot be written."""


# ---------------------------------------------------------------------------------------
# Writing


@lru_cache(maxsize=16)
def _axis_text(axis: bytes) -> tuple[bytes, np.ndarray]:
    # Every frame of a run has the same first column: format it once, not per file.
    return format_e18(np.frombuffer(axis, dtype=np.float64))


def _table(path: PathLike, columns: Sequence[Any]) -> tuple[int, bytes]:
    arrays = [np.asarray(c, dtype=np.float64) for c in columns]
    n = arrays[0].size
    if any(a.ndim != 1 or a.size != n for a in arrays):
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ChiError(f"chi {os.fspath(path)}: columns must be 1-D of equal length, not {shapes}")
    return n, format_table(_axis_text(arrays[0].tobytes()), arrays[1], arrays[2])


def _atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` so that readers see either no file, the old one or all of the new one."""
    target = Path(path)
    # Hidden, and not ending in .chi, so a directory watcher never picks up the temp file.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open rather than mkstemp: mkstemp makes the file 0600, unreadable to other users.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def _one_line(path: PathLike, what: str, text: str) -> str:
    if "\n" in text or "\r" in text:
        raise ChiError(f"chi {os.fspath(path)}: the {what} header must be a single line")
    return text


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    # numpy scalars (float32 in particular) are not JSON-serialisable.
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def _write(path: PathLike, header: Sequence[str], columns: Sequence[Any]) -> None:
    n, rows = _table(path, columns)
    _atomic_write(path, ("\n".join(header) + f"\n   {n}\n ").encode("utf-8") + rows)


def write_chi(
    path: PathLike,
    radial: Any,
    intensity: Any,
    error: Any,
    *,
    config_json: str,
    integparams: Mapping[str, Any],
    labels: list[str] = RADIAL_LABELS,
) -> None:
    """Write a radial (or, with ``labels=PHI_LABELS``, phi) curve in the original's layout.

    ``config_json`` is written as given (the calibration's ``to_json()``); ``integparams``
    is the ``{"I0", "I1", "I2"}`` dict, dumped in its own key order. The file is replaced
    atomically.
    """
    header = [
        _one_line(path, "config", config_json),
        json.dumps(_jsonable(integparams)),
        json.dumps(list(labels)),
    ]
    _write(path, header, (radial, intensity, error))


def write_slice_chi(
    path: PathLike,
    axis: Any,
    intensity: Any,
    error: Any,
    *,
    config_json: str,
    labels: list[str],
) -> None:
    """Write a GISAXS slice curve: config JSON, label JSON, ``Intensity``, then as
    :func:`write_chi`."""
    header = [_one_line(path, "config", config_json), json.dumps(list(labels)), "Intensity"]
    _write(path, header, (axis, intensity, error))


# ---------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, eq=False)
class ChiData:
    """A curve read from a ``.chi`` file.

    ``error`` is None for two-column files (FIT2D). ``header`` holds the four header lines
    as text; ``config``, ``integparams`` and ``labels`` are the JSON header lines where the
    file has them (None otherwise), whichever of the historic orders it uses.
    """

    radial: np.ndarray
    intensity: np.ndarray
    error: np.ndarray | None
    header: tuple[str, str, str, str]
    config: dict[str, Any] | None
    integparams: dict[str, Any] | None
    labels: list[str] | None


def _json_or_none(line: str) -> Any:
    text = line.strip()
    if not text or text[0] not in "[{":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def read_chi(path: PathLike) -> ChiData:
    """Read any historic ``.chi`` layout: four header lines of any content, then rows of
    2 or 3 numbers (``nan`` allowed), LF or CRLF, with or without the trailing " " line."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise ChiError(f"chi {source}: cannot be read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # FIT2D and 2014 headers may hold non-UTF-8 paths
    lines = text.splitlines()
    if len(lines) < 4:
        raise ChiError(f"chi {source}: has {len(lines)} lines, fewer than the 4 header lines")
    header = (lines[0], lines[1], lines[2], lines[3])
    rows = [line.split() for line in lines[4:] if line.strip()]
    ncols = len(rows[0]) if rows else 3
    if ncols not in (2, 3):
        raise ChiError(f"chi {source}: data rows have {ncols} columns, expected 2 or 3")
    for i, row in enumerate(rows):
        if len(row) != ncols:
            raise ChiError(f"chi {source}: data row {i + 1} has {len(row)} columns, not {ncols}")
    try:
        table = np.array([float(v) for row in rows for v in row], dtype=np.float64)
    except ValueError as exc:
        raise ChiError(f"chi {source}: non-numeric data ({exc})") from None
    table = table.reshape(len(rows), ncols)
    declared = header[3].strip()
    if declared.isdigit() and int(declared) != len(rows):
        raise ChiError(
            f"chi {source}: header declares {declared} rows but the file has {len(rows)}"
        )

    config = _json_or_none(header[0])
    integparams: dict[str, Any] | None = None
    labels: list[str] | None = None
    # Current files put integparams on line 2 and labels on line 3; 2015 files the reverse.
    for line in header[1:3]:
        value = _json_or_none(line)
        if isinstance(value, dict) and integparams is None:
            integparams = value
        elif isinstance(value, list) and labels is None:
            labels = value
    return ChiData(
        radial=table[:, 0].copy(),
        intensity=table[:, 1].copy(),
        error=table[:, 2].copy() if ncols == 3 else None,
        header=header,
        config=config if isinstance(config, dict) else None,
        integparams=integparams,
        labels=labels,
    )
