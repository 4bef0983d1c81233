"""Detector frames: read TIFF images and their Pilatus text header, write Pilatus-style TIFFs.

Detectors write frames while the pipeline is already watching the directory, so a reader
regularly meets half-written files. :func:`read_image` tells those apart from broken ones:
it raises :class:`ImageIncompleteError` (the pipeline retries on exactly this type) when
the file is too short for what its own TIFF structure declares, and :class:`ImageError`
for a complete file that is not a usable 2-D image.

Header dictionaries (:func:`read_header`) map each Pilatus ``# key value`` line of the
ImageDescription to a value:

* a number (``int`` when written without a decimal point or exponent, else ``float``) when
  the value is one number, optionally followed by a unit; the unit goes into a separate
  key ``"<key>_unit"`` (``"Exposure_time": 10.0, "Exposure_time_unit": "s"``);
* a tuple of two floats for the pair forms ``172e-6 m x 172e-6 m`` and
  ``(490.00, 517.00) pixels`` (again with ``"<key>_unit"``);
* otherwise the value text as a string (``"Image_path": "/home/det/images/..."``).

The key is the text before the value with the separators ``:``/``=``/``,`` stripped
(``"Silicon sensor, thickness"`` stays as written). Two more keys are always present:
``"date"``, an ISO-8601 string from the Pilatus ``# 2014-01-31T12:26:52.123`` line or else
from the TIFF DateTime tag (``None`` when neither exists), and ``"time"``, that date as a
Unix timestamp. The detector clock has no time zone, so the date is taken as **UTC**.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile

from saxs_pipeline.frames.pilatusheader import header_of
from saxs_pipeline.frames.source import (
    ImageError,
    ImageIncompleteError,
    check_range,
    invalid_value_for,
)

__all__ = [
    "TiffFrames",
    "read_frame",
    "read_header",
    "read_image",
    "tiff_complete",
    "write_pilatus_tiff",
]

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------------------------
# Structural completeness of the first IFD.
#
# tifffile does not raise on a cut header: it logs an error and silently drops the tags
# whose values lie beyond the end of the file (a frame cut at 500 bytes parses with an
# empty ImageDescription). So the header structure is checked here first, which also
# keeps tifffile from logging for every half-written frame the watcher sees.

# Bytes per value, indexed by TIFF field type code (codes 0, 14 and 15 are not defined).
_TYPE_SIZES = dict(enumerate([0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4, 0, 0, 8, 8, 8]))
_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_HEAD_READ = 8192  # Pilatus frames keep header and tag values in the first 4096 bytes


class _Reader:
    """Random access to an open file, served from its first bytes when possible."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.size = fh, size
        fh.seek(0)
        self.head = fh.read(_HEAD_READ)

    def read(self, offset: int, n: int) -> bytes:
        if offset + n <= len(self.head):
            return self.head[offset : offset + n]
        self.fh.seek(offset)
        return self.fh.read(n)


def _structure_needed(rd: _Reader, source: str) -> int:
    """Bytes needed to hold the TIFF header, the first IFD and its out-of-line tag values.

    Raises ImageError when the file is not a TIFF at all.
    """
    head, size = rd.head, rd.size
    if size < 8:
        if any(m.startswith(head[:4]) for m in _MAGICS):
            return 8  # an empty or nearly empty file that may still become a TIFF
        raise ImageError(f"frame {source} is not a TIFF file ({size} bytes)")
    if head[:4] not in _MAGICS:
        raise ImageError(f"frame {source} is not a TIFF file (starts with {head[:4]!r})")
    bo = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    if big:
        if size < 16:
            return 16
        (ifd,) = struct.unpack(bo + "Q", head[8:16])
        count_fmt, entry_size, inline, off_fmt = "Q", 20, 8, "Q"
        hdr = 16
    else:
        (ifd,) = struct.unpack(bo + "I", head[4:8])
        count_fmt, entry_size, inline, off_fmt = "H", 12, 4, "I"
        hdr = 8
    if ifd < hdr:
        raise ImageError(f"frame {source} is a TIFF without an image (first IFD offset {ifd})")
    count_size = struct.calcsize(count_fmt)
    if ifd + count_size > size:
        return ifd + count_size
    (n,) = struct.unpack(bo + count_fmt, rd.read(ifd, count_size))
    ifd_end = ifd + count_size + n * entry_size + inline
    if ifd_end > size:
        return ifd_end
    needed = ifd_end
    entries = rd.read(ifd + count_size, n * entry_size)
    fmt = bo + ("HHQ" if big else "HHI")
    for i in range(n):
        entry = entries[i * entry_size : (i + 1) * entry_size]
        _tag, dtype, count = struct.unpack(fmt, entry[:-inline])
        nbytes = count * _TYPE_SIZES.get(dtype, 0)
        if nbytes > inline:
            (offset,) = struct.unpack(bo + off_fmt, entry[-inline:])
            needed = max(needed, offset + nbytes)
    return needed


def _page_data_end(page: tifffile.TiffPage) -> int:
    """End of the last strip or tile of ``page`` (0 when it has none)."""
    ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
    return max(ends, default=0)


# ---------------------------------------------------------------------------------------
# Reading.


def _check_shape(image: Any, shape: tuple[int, int] | None, source: str) -> None:
    if shape is not None and tuple(image.shape) != tuple(shape):
        r, c = image.shape
        raise ImageError(
            f"frame {source} has shape ({r}, {c}) but Imagesize is [{shape[0]}, {shape[1]}]"
        )


def _open_checked(source: str) -> tuple[BinaryIO, int]:
    """Open a frame and check that its TIFF header structure is all there.

    Returns the open file, positioned at 0, and its size; the caller closes it.
    """
    try:
        fh = open(source, "rb")  # not a with-block: returned to the caller, who closes it
    except FileNotFoundError:
        raise ImageError(f"frame {source} does not exist") from None
    except OSError as exc:
        raise ImageError(f"frame {source} cannot be opened ({exc.strerror})") from None
    try:
        size = os.fstat(fh.fileno()).st_size
        needed = _structure_needed(_Reader(fh, size), source)
        if needed > size:
            raise ImageIncompleteError(source, size, needed, "the TIFF header")
        fh.seek(0)
    except BaseException:
        fh.close()
        raise
    return fh, size


def _read(
    path: PathLike, shape: tuple[int, int] | None, want_header: bool
) -> tuple[np.ndarray, dict[str, Any] | None]:
    source = os.fspath(path)
    fh, size = _open_checked(source)
    with fh:
        try:
            with tifffile.TiffFile(fh) as tif:
                page = tif.pages.first
                data_end = _page_data_end(page)
                if data_end > size:
                    raise ImageIncompleteError(source, size, data_end, "the image data")
                if len(page.shape) != 2:
                    raise ImageError(
                        f"frame {source} is not a 2-D image (shape {tuple(page.shape)})"
                    )
                # The declared shape is checked before decoding: a small compressed file
                # may declare 16384 x 16384 pixels (2 GB once decoded).
                _check_shape(page, shape, source)
                image = page.asarray()
                header = header_of(tif) if want_header else None
        except ImageError:
            raise
        except Exception as exc:
            # The file may have grown past the point we checked; then it was being written.
            try:
                now = os.stat(source).st_size
            except OSError:
                now = size
            if now != size:
                raise ImageIncompleteError(
                    source, size, now, "the file, which is still growing,"
                ) from exc
            raise ImageError(f"frame {source} is not a readable TIFF image ({exc})") from exc
    if image.ndim != 2:
        raise ImageError(f"frame {source} is not a 2-D image (shape {image.shape})")
    _check_shape(image, shape, source)
    return image, header


def read_image(path: PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read the 2-D image of the TIFF at ``path`` in its stored dtype (Pilatus: int32).

    Only the first page is read. Raises :class:`ImageIncompleteError` when the file is
    shorter than its header or its strips/tiles need, and :class:`ImageError` when it is
    not a TIFF, not 2-D, or (with ``shape``) not of shape ``shape``.
    """
    return _read(path, shape, want_header=False)[0]


def read_frame(
    path: PathLike, shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Image and Pilatus header (see the module doc) of a frame, from one open of the file."""
    image, header = _read(path, shape, want_header=True)
    assert header is not None
    return image, header


def read_header(path_or_tifffile: PathLike | tifffile.TiffFile) -> dict[str, Any]:
    """The Pilatus header fields of a frame plus ``"date"`` and ``"time"`` (module doc).

    Given a path, raises :class:`ImageIncompleteError` when the header is cut and
    :class:`ImageError` when the file is not a TIFF.
    """
    if isinstance(path_or_tifffile, tifffile.TiffFile):
        return header_of(path_or_tifffile)
    source = os.fspath(path_or_tifffile)
    fh, _size = _open_checked(source)
    with fh:
        try:
            with tifffile.TiffFile(fh) as tif:
                return header_of(tif)
        except Exception as exc:  # tifffile raises several types for broken files
            raise ImageError(f"frame {source} is not a readable TIFF ({exc})") from exc


def tiff_complete(path: PathLike) -> bool:
    """True when the TIFF at ``path`` is at least as long as its header and image data need.

    Reads only the header; a missing file or a file that is not a TIFF gives False.
    """
    try:
        fh, size = _open_checked(os.fspath(path))
    except ImageError:
        return False
    with fh:
        try:
            with tifffile.TiffFile(fh) as tif:
                return _page_data_end(tif.pages.first) <= size
        except Exception:  # tifffile raises several types for broken files
            return False


# ---------------------------------------------------------------------------------------
# Writing.


def _format_value(key: str, value: Any, unit: str | None) -> str:
    suffix = f" {unit}" if unit else ""
    if isinstance(value, tuple | list) and len(value) == 2:
        return f"# {key} {float(value[0])!r}{suffix} x {float(value[1])!r}{suffix}"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return f"# {key}: {value}"
    return f"# {key} {value}{suffix}"


def _utc(date: datetime) -> datetime:
    # Naive datetimes are taken as UTC, matching how read_header interprets the text.
    return date.replace(tzinfo=UTC) if date.tzinfo is None else date.astimezone(UTC)


def write_pilatus_tiff(
    path: PathLike,
    image: np.ndarray,
    header: Mapping[str, Any] | None = None,
    date: datetime | None = None,
) -> None:
    """Write ``image`` as an int32, uncompressed, single-strip TIFF with a Pilatus-style
    ImageDescription (``# key value`` lines separated by ``\\r\\n``, led by a ``# <ISO date>``
    line) and the DateTime tag, so that :func:`read_frame` gives ``header`` back.

    ``header`` is a dict as :func:`read_header` returns it (``"<key>_unit"`` keys become
    units; ``"date"``/``"time"`` are ignored). ``date`` defaults to ``header["date"]`` and
    else to now; naive datetimes are UTC.
    """
    data = np.asarray(image)
    if data.ndim != 2:
        raise ImageError(f"frame {os.fspath(path)}: image must be 2-D, not shape {data.shape}")
    header = dict(header or {})
    if date is None:
        date = datetime.fromisoformat(header["date"]) if header.get("date") else datetime.now(UTC)
    when = _utc(date)
    lines = [f"# {when.replace(tzinfo=None).isoformat(timespec='milliseconds')}"]
    for key, value in header.items():
        if key in ("date", "time") or (key.endswith("_unit") and key[:-5] in header):
            continue
        lines.append(_format_value(key, value, header.get(f"{key}_unit")))
    tifffile.imwrite(
        Path(path),
        data.astype(np.int32, copy=False),
        photometric="minisblack",
        rowsperstrip=data.shape[0],
        compression=None,
        description="\r\n".join(lines),
        datetime=when.strftime("%Y:%m:%d %H:%M:%S"),
        software="saxs_pipeline",
        metadata=None,
    )


class TiffFrames:
    """A TIFF as a one-frame source; reads through :func:`read_frame`
    (so completeness checks and errors are exactly that function's). The file is read once,
    when opened."""

    chunk_frames = 1

    def __init__(self, path: PathLike, shape: tuple[int, int] | None = None) -> None:
        self.path = os.fspath(path)
        image, header = read_frame(self.path, shape)
        self._image, self._header = image, header
        self.shape = (int(image.shape[0]), int(image.shape[1]))
        self.dtype = image.dtype
        self.invalid_value = invalid_value_for(image.dtype)

    def frame_count(self) -> int:
        return 1

    def read(self, start: int, stop: int) -> np.ndarray:
        check_range(self.path, start, stop, 1)
        return self._image[None]

    def metadata(self, start: int, stop: int) -> list[dict[str, Any]]:
        check_range(self.path, start, stop, 1)
        return [{**self._header, "index": 0}]

    def pixel_mask(self) -> np.ndarray | None:
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> TiffFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
