"""Frames of CBF, EDF and the other formats fabio reads (see :mod:`saxs_pipeline.frames.registry`).

fabio does not tell a half-written file from a broken one -- it returns a truncated EDF
with a warning and fails a truncated CBF on its checksum -- so completeness is checked
here, from what the formats declare: a CBF's binary section (its ``X-Binary-Size`` after
the binary start marker) and each EDF frame's data block (fabio's ``incomplete_data``).

Metadata: fabio's header (text values), plus ``"date"``/``"time"`` and the parsed Pilatus
fields where a CBF carries a Pilatus header (the same dict a Pilatus TIFF gives).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import fabio
import numpy as np

from saxs_pipeline.frames.pilatusheader import iso_to_timestamp, parse_description
from saxs_pipeline.frames.source import (
    FrameIncompleteError,
    ImageError,
    check_range,
    check_shape,
    invalid_value_for,
)

__all__ = ["FabioFrames"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

_CBF_BINARY_START = b"\x0c\x1a\x04\xd5"
_CBF_SIZE_RE = re.compile(rb"X-Binary-Size:\s*(\d+)")
_CBF_HEAD_READ = 65536  # Pilatus and EIGER CBF headers are a few kB


def _cbf_needed(source: str) -> int | None:
    """Bytes a CBF needs for its (first) binary section, None when not a CBF or unknown."""
    with open(source, "rb") as fh:
        head = fh.read(_CBF_HEAD_READ)
    if not head.startswith(b"###CBF") and b"_array_data.data" not in head:
        return None
    size = _CBF_SIZE_RE.search(head)
    start = head.find(_CBF_BINARY_START)
    if size is None or start < 0:
        return len(head) + 1  # the header itself is not complete yet
    return start + len(_CBF_BINARY_START) + int(size[1])


class FabioFrames:
    """A fabio-readable file as a frame source; one fabio image open until :meth:`close`."""

    chunk_frames = 1

    def __init__(self, path: PathLike, *, shape: tuple[int, int] | None = None) -> None:
        self.path = os.fspath(path)
        try:
            size = os.stat(self.path).st_size
            needed = _cbf_needed(self.path)
        except FileNotFoundError:
            raise ImageError(f"frame {self.path} does not exist") from None
        except OSError as exc:
            raise ImageError(f"frame {self.path} cannot be opened ({exc.strerror})") from None
        if needed is not None and needed > size:
            raise FrameIncompleteError(self.path, f"{size} bytes present, the CBF declares {needed}", size, needed)
        try:
            self._image = fabio.open(self.path)
        except Exception as exc:  # fabio raises many types for files it cannot read
            now = os.stat(self.path).st_size
            if now != size:
                raise FrameIncompleteError(self.path, "the file is still growing", now) from exc
            raise ImageError(f"frame {self.path} is not an image fabio can read ({exc})") from exc
        self._check_complete(0)
        data = self._image.data
        if data is None or data.ndim != 2:
            raise ImageError(f"frame {self.path} is not a 2-D image")
        self.shape = (int(data.shape[0]), int(data.shape[1]))
        check_shape(self.path, self.shape, shape)
        self.dtype = data.dtype
        self.invalid_value = invalid_value_for(self.dtype)

    def _check_complete(self, index: int) -> None:
        frames = getattr(self._image, "_frames", None)  # EDF: fabio keeps one record per frame
        if frames and getattr(frames[index], "incomplete_data", False):
            size = os.stat(self.path).st_size
            raise FrameIncompleteError(self.path, f"frame {index}: its data block is cut ({size} bytes)", size)

    def frame_count(self) -> int:
        return int(self._image.nframes)

    def _frame(self, index: int) -> Any:
        if index == self._image.currentframe:
            return self._image
        try:
            frame = self._image.getframe(index)
        except Exception as exc:  # fabio raises many types for broken frames
            raise ImageError(f"{self.path}: frame {index} cannot be read ({exc})") from exc
        self._check_complete(index)
        return frame

    def read(self, start: int, stop: int) -> np.ndarray:
        check_range(self.path, start, stop, self.frame_count())
        out = np.empty((stop - start, *self.shape), dtype=self.dtype)
        for i in range(start, stop):
            data = self._frame(i).data
            if tuple(data.shape) != self.shape:
                raise ImageError(f"{self.path}: frame {i} has shape {data.shape}, frame 0 {self.shape}")
            out[i - start] = data
        return out

    def metadata(self, start: int, stop: int) -> list[dict[str, Any]]:
        check_range(self.path, start, stop, self.frame_count())
        return [self._header(self._frame(i).header, i) for i in range(start, stop)]

    @staticmethod
    def _header(header: dict[str, Any], index: int) -> dict[str, Any]:
        out: dict[str, Any] = dict(header)
        pilatus = header.get("_array_data.header_contents")
        parsed = parse_description(pilatus) if isinstance(pilatus, str) else {}
        out.update(parsed)
        out["date"] = parsed.get("date")
        out["time"] = iso_to_timestamp(out["date"]) if out["date"] else None
        out["index"] = index
        return out

    def pixel_mask(self) -> np.ndarray | None:
        return None

    def close(self) -> None:
        closer = getattr(self._image, "close", None)
        if closer is not None:
            closer()

    def __enter__(self) -> FabioFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
