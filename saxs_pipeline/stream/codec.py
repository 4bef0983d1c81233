"""DECTRIS Stream V2 wire format: CBOR messages to and from :mod:`.messages` objects.

Decoding (cbor2 with a tag hook) understands what the stream sends:

* RFC 8746 typed arrays (tags 64-87: byte string + element type) and multi-dimensional
  arrays (tag 40 row-major, 1040 column-major: ``[dimensions, array]``);
* DECTRIS tag 56500, a compressed byte string ``[algorithm, elem_size, data]`` with
  algorithm ``"bslz4"`` or ``"lz4"`` (HDF5 framing), decoded by
  :func:`saxs_pipeline.frames.compression.decompress`;
* tag 0 date/time strings (cbor2 itself) and Rational ``[numerator, denominator]`` times,
  which become float seconds in ``ImageMessage.metadata``.

A message that is not a map, has an unknown ``type``, lacks a required field, or whose
image data are not 2-D arrays raises :class:`StreamDecodeError` naming the message (its
type, series and image number where readable, and its size).

Limits before memory: a compressed array is decompressed only after its declared shape
and element type are known and -- given the detector's shape (the calibration's
Imagesize) -- match it, and after the uncompressed size in its header matches them; an
image carries at most :data:`MAX_CHANNELS` channels. A message of a few MB therefore never
decodes to more than its channels' images at the detector's size.

Encoding (:func:`encode_start`, :func:`encode_image`, :func:`encode_end`) writes the same
layout; it serves the simulator and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from fractions import Fraction
from math import prod
from typing import Any

import cbor2
import numpy as np

from saxs_pipeline.frames.compression import CompressionError, compress_bslz4, decompress
from saxs_pipeline.stream.messages import EndMessage, ImageMessage, Message, StartMessage

__all__ = ["MAX_CHANNELS", "Peek", "StreamDecodeError", "decode_message", "encode_end",
           "encode_image", "encode_start", "error_text", "peek"]

TAG_MULTIDIM, TAG_MULTIDIM_COLUMN_MAJOR, TAG_COMPRESSED = 40, 1040, 56500
MAX_CHANNELS = 16  # thresholds of a detector image (EIGER2 and PILATUS4 have up to 4)

# RFC 8746 section 2.1: tag = 0b010_f_s_e_ll (float, signed, little endian, length code).
_TYPED: dict[int, np.dtype] = {}
for _ll, _size in enumerate((1, 2, 4, 8)):
    for _e, _order in ((0, ">"), (1, "<")):
        _TYPED[64 | _e << 2 | _ll] = np.dtype(f"{_order}u{_size}")
        _TYPED[72 | _e << 2 | _ll] = np.dtype(f"{_order}i{_size}")
        if _size > 1:
            _TYPED[80 | _e << 2 | (_ll - 1)] = np.dtype(f"{_order}f{_size}")
_TYPED[68] = np.dtype("u1")  # uint8 "clamped"
del _TYPED[76]  # reserved (a little-endian sint8 makes no sense)
_TAG_OF = {dt: tag for tag, dt in sorted(_TYPED.items(), reverse=True)}  # prefer the plain u1 tag 64


class StreamDecodeError(ValueError):
    """A stream message that cannot be used; the message names it."""


@dataclass(frozen=True)
class _Compressed:
    """A tag-56500 byte string, decoded only once the enclosing array's shape is known and
    checked, so that a message cannot make us allocate before the sizes are checked."""

    algorithm: str
    elem_size: int
    data: bytes
    dtype: np.dtype | None = None  # set by the typed-array tag around it
    shape: tuple[int, ...] | None = None  # set by the multi-dimensional array tag around it
    column_major: bool = False


def _multidim(dims: list[int], values: Any, column_major: bool) -> np.ndarray | _Compressed:
    if not isinstance(dims, list | tuple) or not all(isinstance(d, int) and d >= 0 for d in dims):
        raise StreamDecodeError(f"array dimensions {dims!r} are not a list of counts")
    shape = tuple(dims)
    if isinstance(values, _Compressed):
        if values.dtype is None:
            raise StreamDecodeError("a compressed byte string is not inside a typed array")
        if values.dtype.itemsize != values.elem_size:
            raise StreamDecodeError(f"elem_size {values.elem_size} does not match {values.dtype}")
        return replace(values, shape=shape, column_major=column_major)
    return np.asarray(values).reshape(shape, order="F" if column_major else "C")


def _decoded(value: Any, what: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """``value`` as a 2-D array; a compressed one is decompressed only when its declared
    shape is 2-D and equals ``shape`` (when given)."""
    declared = value.shape if isinstance(value, _Compressed | np.ndarray) else None
    if declared is None or len(declared) != 2:
        kind = (f"shape {declared}" if declared is not None else "compressed without dimensions"
                if isinstance(value, _Compressed) else type(value).__name__)
        raise StreamDecodeError(f"{what} is {kind}, not a 2-D array")
    if shape is not None and declared != tuple(shape):
        raise StreamDecodeError(f"{what} has shape {declared}, the calibration's Imagesize is "
                                f"{list(shape)}; not decoded")
    if isinstance(value, np.ndarray):
        return value
    flat = decompress(value.data, value.algorithm, value.dtype, (prod(declared),))
    return flat.reshape(declared, order="F" if value.column_major else "C")


def _tag_hook(*args: Any) -> Any:
    # cbor2 5 calls hook(decoder, tag), cbor2 6 hook(tag, immutable): take the tag.
    tag = next(a for a in args if isinstance(a, cbor2.CBORTag))
    if tag.tag == TAG_COMPRESSED:
        algorithm, elem_size, data = tag.value
        return _Compressed(str(algorithm), int(elem_size), bytes(data))
    if tag.tag in _TYPED:
        if isinstance(tag.value, _Compressed):
            return replace(tag.value, dtype=_TYPED[tag.tag])
        return np.frombuffer(tag.value, dtype=_TYPED[tag.tag])
    if tag.tag in (TAG_MULTIDIM, TAG_MULTIDIM_COLUMN_MAJOR):
        dims, values = tag.value
        return _multidim(dims, values, tag.tag == TAG_MULTIDIM_COLUMN_MAJOR)
    return tag


def error_text(exc: BaseException) -> str:
    """What went wrong, also for exceptions without a message (a bare MemoryError)."""
    if isinstance(exc, MemoryError):
        return f"ran out of memory ({str(exc) or 'MemoryError'})"
    return str(exc) or type(exc).__name__


def _describe(frame: bytes) -> str:
    """What can be read of a message that failed: type, series, image number, size."""
    parts = [f"{len(frame)} bytes"]
    try:
        raw = cbor2.loads(frame)  # no hook: unknown tags stay as they are
    except Exception:  # cbor2 raises several types for bytes that are no CBOR
        return f"stream message ({parts[0]}, not CBOR)"
    if isinstance(raw, dict):
        for key in ("type", "series_id", "image_id"):
            if key in raw:
                parts.insert(-1, f"{key} {raw[key]!r}")
    return f"stream message ({', '.join(parts)})"


def _seconds(value: Any) -> Any:
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return float(Fraction(value[0], value[1])) if value[1] else None
    return value


def _require(msg: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in msg:
        raise StreamDecodeError(f"lacks the field {key!r}")
    if not isinstance(msg[key], kind):
        raise StreamDecodeError(f"field {key!r} is {type(msg[key]).__name__}, not {kind}")
    return msg[key]


def _count(msg: dict[str, Any], key: str) -> int | None:
    value = msg.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise StreamDecodeError(f"field {key!r} is {value!r}, not a count")
    return value


def _image(msg: dict[str, Any], shape: tuple[int, ...] | None) -> ImageMessage:
    data = _require(msg, "data", dict)
    if not data:
        raise StreamDecodeError("field 'data' has no channel")
    if len(data) > MAX_CHANNELS:
        raise StreamDecodeError(f"field 'data' has {len(data)} channels, more than {MAX_CHANNELS}")
    series_id, image_id = _require(msg, "series_id", int), _require(msg, "image_id", int)
    arrays = {channel: _decoded(arr, f"channel {channel!r}", shape) for channel, arr in data.items()}
    meta = {k: _seconds(v) for k, v in msg.items() if k not in ("type", "data", "series_id", "image_id")}
    return ImageMessage(series_id=series_id, image_number=image_id, data=arrays,
                        series_unique_id=msg.get("series_unique_id"), metadata=meta)


def _start(msg: dict[str, Any], shape: tuple[int, ...] | None) -> StartMessage:
    series_id = _require(msg, "series_id", int)
    size_x, size_y = _count(msg, "image_size_x"), _count(msg, "image_size_y")
    mask = msg.get("pixel_mask")
    if mask is not None:
        if not isinstance(mask, dict) or len(mask) > MAX_CHANNELS:
            raise StreamDecodeError(f"field 'pixel_mask' is not a map of at most {MAX_CHANNELS} "
                                    "channels")
        mask = {channel: _decoded(arr, f"pixel_mask {channel!r}", shape) for channel, arr in mask.items()}
    return StartMessage(
        series_id=series_id,
        series_unique_id=msg.get("series_unique_id"),
        number_of_images=_count(msg, "number_of_images"),
        image_shape=(size_y, size_x) if size_x is not None and size_y is not None else None,
        channels=tuple(msg.get("channels", ())),
        pixel_mask=mask,
        fields=msg,
    )


@dataclass(frozen=True)
class Peek:
    """What the driver needs of a message without decoding its image data."""

    type: str
    series_id: int
    image_number: int | None
    series_unique_id: str | None


def peek(frame: bytes) -> Peek:
    """Type, series and image number of a message; its arrays stay undecoded (the
    worker decodes them), so the driver spends no time on decompression."""
    try:
        msg = cbor2.loads(frame)  # no hook: arrays stay opaque tags
        if not isinstance(msg, dict):
            raise StreamDecodeError(f"is a CBOR {type(msg).__name__}, not a map")
        kind = msg.get("type")
        if kind not in ("start", "image", "end"):
            raise StreamDecodeError(f"has type {kind!r}; expected 'start', 'image' or 'end'")
        image = _require(msg, "image_id", int) if kind == "image" else None
        return Peek(kind, _require(msg, "series_id", int), image, msg.get("series_unique_id"))
    except StreamDecodeError as exc:
        raise StreamDecodeError(f"{_describe(frame)} {exc}") from None
    except Exception as exc:  # cbor2 raises several types for bytes that are no CBOR
        raise StreamDecodeError(f"{_describe(frame)} does not decode ({error_text(exc)})") from None


def decode_message(frame: bytes, shape: tuple[int, ...] | None = None) -> Message:
    """Decode one Stream V2 message (module doc); ``shape``: the detector's image shape,
    which every image channel and pixel mask must have (checked before decompressing)."""
    try:
        msg = cbor2.loads(frame, tag_hook=_tag_hook)
        if not isinstance(msg, dict):
            raise StreamDecodeError(f"is a CBOR {type(msg).__name__}, not a map")
        kind = msg.get("type")
        if kind == "image":
            return _image(msg, shape)
        if kind == "start":
            return _start(msg, shape)
        if kind == "end":
            return EndMessage(_require(msg, "series_id", int), msg.get("series_unique_id"))
        raise StreamDecodeError(f"has type {kind!r}; expected 'start', 'image' or 'end'")
    except (StreamDecodeError, CompressionError) as exc:
        raise StreamDecodeError(f"{_describe(frame)} {exc}") from None
    except Exception as exc:  # cbor2 and numpy raise several types for malformed content
        cause = exc.__cause__ if isinstance(exc, cbor2.CBORDecodeError) and exc.__cause__ else exc
        if isinstance(cause, StreamDecodeError | CompressionError):
            raise StreamDecodeError(f"{_describe(frame)} {cause}") from None
        raise StreamDecodeError(f"{_describe(frame)} does not decode ({error_text(cause)})") from None


# ---------------------------------------------------------------------------------------
# Encoding


def _array(arr: np.ndarray, compression: str) -> cbor2.CBORTag:
    data = np.ascontiguousarray(arr)
    tag = _TAG_OF.get(data.dtype)
    if tag is None:
        raise ValueError(f"no RFC 8746 typed array for dtype {data.dtype}")
    if compression == "bslz4":
        payload: Any = cbor2.CBORTag(TAG_COMPRESSED, ["bslz4", data.dtype.itemsize, compress_bslz4(data)])
    elif compression == "none":
        payload = data.tobytes()
    else:
        raise ValueError(f"unknown compression {compression!r}; use 'bslz4' or 'none'")
    return cbor2.CBORTag(TAG_MULTIDIM, [list(data.shape), cbor2.CBORTag(tag, payload)])


def encode_start(
    series_id: int, *, number_of_images: int, image_shape: tuple[int, int],
    series_unique_id: str | None = None, channels: tuple[str, ...] = ("threshold_1",),
    arm_date: datetime | None = None, **fields: Any,
) -> bytes:
    """A ``start`` message; ``fields`` adds further Stream V2 fields (beam_center_x, ...)."""
    msg: dict[str, Any] = {
        "type": "start", "series_id": series_id, "series_unique_id": series_unique_id or str(series_id),
        "number_of_images": number_of_images, "image_size_x": image_shape[1],
        "image_size_y": image_shape[0], "channels": list(channels),
    }
    if arm_date is not None:
        msg["arm_date"] = arm_date
    msg.update(fields)
    return cbor2.dumps(msg)


def encode_image(
    series_id: int, image_number: int, array: np.ndarray, *, compression: str = "bslz4",
    channel: str = "threshold_1", series_unique_id: str | None = None,
    start_time: float | None = None, frame_time: float | None = None,
    time_base: int = 10_000_000,
) -> bytes:
    """An ``image`` message with one channel; times go out as Rationals over ``time_base``."""
    msg: dict[str, Any] = {
        "type": "image", "series_id": series_id, "series_unique_id": series_unique_id or str(series_id),
        "image_id": image_number, "data": {channel: _array(array, compression)},
    }
    if start_time is not None:
        msg["start_time"] = [round(start_time * time_base), time_base]
        if frame_time is not None:
            msg["stop_time"] = [round((start_time + frame_time) * time_base), time_base]
            msg["real_time"] = [round(frame_time * time_base), time_base]
    return cbor2.dumps(msg)


def encode_end(series_id: int, series_unique_id: str | None = None) -> bytes:
    """An ``end`` message."""
    return cbor2.dumps({"type": "end", "series_id": series_id, "series_unique_id": series_unique_id or str(series_id)})
