"""Detector masks as boolean "valid" arrays: True = pixel used, False = excluded.

Formats, recognised by their first bytes (never by the file name, since network
attachments carry whatever name the client had):

* FIT2D ``.msk``: bit 1 = masked, rows stored bottom-up (see :func:`read_fit2d_msk`).
* TIFF and PNG images: **nonzero = masked**, zero = valid, no flip (the original's image
  mask convention). For colour images the alpha channel is ignored and a pixel is masked
  when any colour channel is nonzero.
* NumPy ``.npy``: **nonzero = masked** as well, like an image mask. Note that this is the
  inverse of the arrays this module returns: save ``~valid`` to get ``valid`` back.

Masks also arrive over the network as attachments ``{"filename": str, "data": str}``; see
:func:`decode_attachment` for the two wire encodings.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from saxs_pipeline.config.calibration import Calibration, MaskConfig

__all__ = [
    "MaskError",
    "decode_attachment",
    "encode_attachment",
    "fit2d_msk_bytes",
    "load_mask",
    "mask_from_bytes",
    "read_fit2d_msk",
    "read_mask",
    "write_fit2d_msk",
]

PathLike = str | os.PathLike[str]

_MSK_MAGIC = struct.pack("<4i", *b"MASK")
_MSK_HEADER = 1024
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NPY_MAGIC = b"\x93NUMPY"
_PNG_MAGIC = b"\x89PNG"


class MaskError(ValueError):
    """A mask that cannot be used; the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------------
# FIT2D .msk


def read_fit2d_msk(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode a FIT2D ``.msk`` file into a valid-pixel array of shape (height, width).

    Layout: 'M','A','S','K' as four little-endian int32, then int32 width (columns) at
    0x10 and height (rows) at 0x14; bit data from byte 1024, least significant bit first,
    each row padded to whole 32-bit words, rows bottom-up, bit 1 = masked.
    """
    if len(data) < 0x18:
        raise MaskError(f"mask {source}: {len(data)} bytes is too short for a FIT2D mask header")
    if data[:16] != _MSK_MAGIC:
        raise MaskError(f"mask {source}: not a FIT2D mask (bad magic {data[:16]!r})")
    width, height = struct.unpack("<2i", data[16:24])
    if width <= 0 or height <= 0:
        raise MaskError(f"mask {source}: FIT2D header gives a non-positive size {width} x {height}")
    words = -(-width // 32)
    # The original padded by 32 - width % 32 bits, a whole extra word when width is a
    # multiple of 32. Take the largest row length whose data fits the file: a correct file
    # has only a few stray bytes after its data, far fewer than an extra word per row.
    candidates = [words * 4 + 4, words * 4] if width % 32 == 0 else [words * 4]
    payload = len(data) - _MSK_HEADER
    row_bytes = next((rb for rb in candidates if rb * height <= payload), None)
    if row_bytes is None:
        raise MaskError(
            f"mask {source}: FIT2D mask of {width} x {height} needs "
            f"{_MSK_HEADER + words * 4 * height} bytes but the file has {len(data)}"
        )
    packed = np.frombuffer(data, np.uint8, count=row_bytes * height, offset=_MSK_HEADER)
    bits = np.unpackbits(packed.reshape(height, row_bytes), axis=1, bitorder="little")
    return bits[::-1, :width] == 0


def fit2d_msk_bytes(valid: np.ndarray) -> bytes:
    """The FIT2D ``.msk`` file content for a valid-pixel array (correct padding)."""
    valid = np.asarray(valid, dtype=bool)
    if valid.ndim != 2:
        raise MaskError(f"mask must be 2-D, not shape {valid.shape}")
    height, width = valid.shape
    padded = np.zeros((height, -(-width // 32) * 32), dtype=bool)
    padded[:, :width] = ~valid[::-1]
    header = bytearray(_MSK_HEADER)
    # 0x18 holds 1 in every FIT2D mask seen; its meaning is unknown, so copy it.
    header[:28] = _MSK_MAGIC + struct.pack("<3i", width, height, 1)
    return bytes(header) + np.packbits(padded, axis=1, bitorder="little").tobytes()


def write_fit2d_msk(path: PathLike, valid: np.ndarray) -> None:
    """Write a valid-pixel array as a FIT2D ``.msk`` file."""
    Path(path).write_bytes(fit2d_msk_bytes(valid))


# ---------------------------------------------------------------------------------------
# Image masks


def _image_to_valid(img: np.ndarray, source: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] in (2, 4):
        img = img[..., :-1]  # drop alpha: an opaque PNG has alpha 1 everywhere
    if img.ndim == 3 and img.shape[-1] in (1, 3):
        return ~np.any(img != 0, axis=-1)
    if img.ndim != 2:
        raise MaskError(f"mask {source}: image mask is not 2-D (shape {img.shape})")
    return img == 0


def _read_tiff(data: bytes, source: str) -> np.ndarray:
    try:
        return tifffile.imread(io.BytesIO(data))
    except Exception as exc:  # tifffile raises several types for broken files
        raise MaskError(f"mask {source}: unreadable TIFF ({exc})") from exc


def _read_png(data: bytes, source: str) -> np.ndarray:
    import matplotlib.image  # imported here: it takes ~0.3 s and PNG masks are rare

    try:
        return matplotlib.image.imread(io.BytesIO(data), format="png")
    except Exception as exc:  # the PNG decoder raises several types for broken files
        raise MaskError(f"mask {source}: unreadable PNG ({exc})") from exc


def _read_npy(data: bytes, source: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise MaskError(f"mask {source}: unreadable .npy ({exc})") from exc


def _format_of(data: bytes) -> str | None:
    if data[:16] == _MSK_MAGIC:
        return "msk"
    if data[:4] in _TIFF_MAGICS:
        return "tiff"
    if data.startswith(_NPY_MAGIC):
        return "npy"
    if data.startswith(_PNG_MAGIC):
        return "png"
    return None


def mask_from_bytes(
    data: bytes, filename: str = "<bytes>", shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode a mask file's content (format from its magic bytes) into a valid-pixel array.

    With ``shape`` (the calibration's Imagesize), a mask of another shape is a MaskError.
    """
    kind = _format_of(data)
    if kind == "msk":
        valid = read_fit2d_msk(data, filename)
    elif kind == "tiff":
        valid = _image_to_valid(_read_tiff(data, filename), filename)
    elif kind == "png":
        valid = _image_to_valid(_read_png(data, filename), filename)
    elif kind == "npy":
        valid = _image_to_valid(_read_npy(data, filename), filename)
    else:
        raise MaskError(
            f"mask {filename}: unknown format (starts with {data[:8]!r}); expected a FIT2D "
            ".msk, TIFF, PNG or .npy file"
        )
    if shape is not None and tuple(valid.shape) != tuple(shape):
        r, c = valid.shape
        raise MaskError(
            f"mask {filename} has shape ({r}, {c}) but Imagesize is [{shape[0]}, {shape[1]}]"
        )
    return valid


def read_mask(path: PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read the mask file at ``path`` (any supported format) as a valid-pixel array."""
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except FileNotFoundError:
        raise MaskError(f"mask {source}: file not found") from None
    except OSError as exc:
        raise MaskError(f"mask {source}: cannot be read ({exc.strerror})") from None
    return mask_from_bytes(data, source, shape)


# ---------------------------------------------------------------------------------------
# Network attachments

_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def decode_attachment(att: dict[str, Any]) -> bytes:
    """The file bytes of a network attachment ``{"filename": str, "data": str}``.

    Two wire formats exist: the py3 original sends the raw bytes decoded as latin-1, the
    py2 original sent base64. ``data`` is taken as base64 only when it consists of the
    base64 alphabet (line breaks allowed), decodes strictly, and the result starts with a
    known mask format's magic bytes; every other string is latin-1. A latin-1 mask can
    never pass the first test because all supported formats start with a NUL or a byte
    above 0x7F.
    """
    if not isinstance(att, dict) or "data" not in att:
        raise MaskError("mask attachment must be a dict with 'filename' and 'data'")
    name = str(att.get("filename", "<attachment>"))
    text = att["data"]
    if isinstance(text, bytes | bytearray):
        return bytes(text)
    if not isinstance(text, str):
        kind = type(text).__name__
        raise MaskError(f"mask {name}: attachment data must be a string, not {kind}")
    compact = re.sub(r"[\r\n]", "", text)
    if compact and len(compact) % 4 == 0 and _B64_RE.fullmatch(compact):
        try:
            decoded = base64.b64decode(compact, validate=True)
        except binascii.Error:
            decoded = b""
        if _format_of(decoded) is not None:
            return decoded
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise MaskError(
            f"mask {name}: attachment data is neither base64 nor latin-1 text ({exc.reason} "
            f"at position {exc.start})"
        ) from None


def encode_attachment(path: PathLike, filename: str | None = None) -> dict[str, str]:
    """The py3 (latin-1) attachment of the mask file at ``path``, as existing servers read
    it. ``filename`` defaults to ``path`` as given (the calibration's MaskFile)."""
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise MaskError(f"mask {source}: cannot be read ({exc.strerror})") from None
    name = filename if filename is not None else source
    return {"filename": name, "data": data.decode("latin-1")}


def load_mask(
    cal: Calibration, mask: MaskConfig, attachment: dict[str, Any] | None = None
) -> np.ndarray:
    """The valid-pixel array of ``mask``: from ``attachment`` when given (the server never
    reads mask paths from its own disk), else from ``cal.mask_path(mask)``; its shape must
    be the calibration's Imagesize."""
    shape = cal.geometry.image_shape
    if attachment is not None:
        name = mask.mask_file
        if isinstance(attachment, dict):
            name = str(attachment.get("filename", name))
        return mask_from_bytes(decode_attachment(attachment), name, shape)
    return read_mask(cal.mask_path(mask), shape)
