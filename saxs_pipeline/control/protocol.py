"""The leash wire protocol: frames, size limits, request/reply building and validation.

A request is a multipart zmq message: frame 0 is the UTF-8 JSON request (v1) or a v2
envelope (see :mod:`saxs_pipeline.control.signing`), frames 1..n are attachments, each
UTF-8 JSON ``{"filename", "data"}``. A reply is one UTF-8 JSON frame ``{"result", "data"}``;
errors have ``data = {"Error": message}``.

Floats are encoded with Python's ``json`` defaults, so NaN travels as the bare token ``NaN``
as it did in the original (Python's ``json`` reads it back).
"""

from __future__ import annotations

import json
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path, PurePath
from typing import Any

import jsonschema
import numpy as np

__all__ = [
    "COMMANDS",
    "IMPLEMENTED",
    "Limits",
    "RequestError",
    "check_sizes",
    "decode_json_frame",
    "decode_reply",
    "encode",
    "error_reply",
    "is_error",
    "parse_attachment",
    "reply",
    "request_schema",
    "result_schema",
    "validate_request",
    "validate_result",
]

COMMANDS = ("new", "close", "abort", "plot", "plotdata", "readdir", "stat", "get", "listdir",
            "fileslist", "failures", "mergedata", "getmergedata", "mergestat")
IMPLEMENTED = frozenset({"new", "close", "abort", "plot", "readdir", "stat", "get", "listdir",
                         "fileslist", "failures"})

# Result strings of error replies (the original's, plus our size limit).
VALUE_ERROR = "ValueError in request"
VALIDATION_ERROR = "ValidationError in request"
AUTH_ERROR = "AuthenticationError"
SERVER_ERROR = "ServerError"
NOT_IMPLEMENTED = "ErrorNotimplemented"

MiB = 1024 * 1024


# A frame past the soft limits still gets its error reply up to this many times
# ``max_total_bytes``: a mask file travels as JSON text, latin-1 escaped (``\u0000``: up to
# 6 bytes per byte), so a 100 MB mask is a 600 MB frame. Beyond it zmq cuts the
# connection from the frame's declared size, before buffering it, and no reply can
# reach the client (its message was never received).
HARD_FACTOR = 10


@dataclass(frozen=True)
class Limits:
    """Size limits checked before anything is parsed. ``max_total_bytes`` bounds the whole
    message; the zmq socket drops connections sending more than ``hard_limit`` in one frame
    before the message is even assembled."""

    max_request_bytes: int = 4 * MiB  # frame 0: calibrations are a few kB
    max_total_bytes: int = 64 * MiB  # all frames: a Pilatus 1M TIFF mask is ~4 MB raw
    max_attachments: int = 64

    @property
    def hard_limit(self) -> int:
        return HARD_FACTOR * self.max_total_bytes


class RequestError(Exception):
    """A request refused before or during dispatch; becomes the error reply
    ``{"result": result, "data": {"Error": message}}``."""

    def __init__(self, result: str, message: str) -> None:
        super().__init__(message)
        self.result = result
        self.message = message

    def reply(self) -> dict[str, Any]:
        return error_reply(self.result, self.message)


def reply(result: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"result": result, "data": {} if data is None else data}


def error_reply(result: str, message: str) -> dict[str, Any]:
    return {"result": result, "data": {"Error": str(message)}}


def is_error(msg: dict[str, Any]) -> bool:
    """True for an error reply (``data`` holds ``Error``)."""
    data = msg.get("data") if isinstance(msg, dict) else None
    return not isinstance(data, dict) or "Error" in data


def _default(obj: Any) -> Any:
    # Replies are built from numpy results and paths; make them plain JSON.
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def encode(obj: Any) -> bytes:
    """UTF-8 JSON, NaN as the bare token (the original's wire format)."""
    return json.dumps(obj, default=_default, allow_nan=True).encode("utf-8")


def decode_json_frame(frame: bytes, what: str = "request") -> Any:
    """Parse one UTF-8 JSON frame; a RequestError ("ValueError in request") otherwise."""
    try:
        text = bytes(frame).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(VALUE_ERROR, f"{what} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(VALUE_ERROR, f"{what} is not valid JSON ({exc})") from None


def decode_reply(frame: bytes) -> dict[str, Any]:
    """A reply frame as a dict (NaN allowed)."""
    obj = json.loads(bytes(frame).decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("reply is not a JSON object")
    return obj


def check_sizes(frames: Sequence[Sized], limits: Limits) -> None:
    """Refuse oversized requests before parsing (or copying) anything: ``frames`` may be
    zmq frames as received, only their lengths are read."""
    if not frames:
        raise RequestError(VALUE_ERROR, "empty request")
    if len(frames[0]) > limits.max_request_bytes:
        raise RequestError(
            VALUE_ERROR,
            f"request too large: {len(frames[0])} bytes (limit {limits.max_request_bytes})",
        )
    if len(frames) - 1 > limits.max_attachments:
        raise RequestError(
            VALUE_ERROR,
            f"too many attachments: {len(frames) - 1} (limit {limits.max_attachments})",
        )
    total = sum(len(f) for f in frames)
    if total > limits.max_total_bytes:
        largest = max(range(1, len(frames)), key=lambda i: len(frames[i]), default=0)
        what = f"; attachment {largest - 1} has {len(frames[largest])}" if largest else ""
        raise RequestError(
            VALUE_ERROR,
            f"request too large: {total} bytes (limit {limits.max_total_bytes}{what})",
        )


def parse_attachment(frame: bytes, index: int) -> dict[str, Any]:
    """An attachment frame as ``{"filename", "data"}``."""
    obj = decode_json_frame(frame, f"attachment {index}")
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), str):
        raise RequestError(
            VALUE_ERROR, f"attachment {index} must be a JSON object with 'filename' and 'data'"
        )
    obj.setdefault("filename", f"attachment{index}")
    return obj


@cache
def _schema(name: str) -> dict[str, Any]:
    text = resources.files("saxs_pipeline.control").joinpath("schemas", name).read_text()
    return json.loads(text)


def request_schema() -> dict[str, Any]:
    """The shipped LeashRequestSchema."""
    return _schema("LeashRequestSchema.json")


def result_schema() -> dict[str, Any]:
    """The shipped LeashResultSchema."""
    return _schema("LeashResultSchema.json")


def schema_path(name: str) -> Path:
    """File path of a shipped schema (for docs and tools)."""
    return Path(str(resources.files("saxs_pipeline.control").joinpath("schemas", name)))


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = _schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _message(err: jsonschema.ValidationError) -> str:
    return f"{err.json_path}: {err.message}"


def validate_request(request: Any) -> None:
    """Raise RequestError ("ValidationError in request", ``{"Error": msg}``) unless
    ``request`` fits LeashRequestSchema. (The original sent ``data`` as a bare string here,
    which broke its own result schema.)"""
    err = jsonschema.exceptions.best_match(_validator("LeashRequestSchema.json").iter_errors(request))
    if err is not None:
        raise RequestError(VALIDATION_ERROR, _message(err))


def validate_result(msg: Any) -> None:
    """Raise jsonschema.ValidationError unless ``msg`` fits LeashResultSchema."""
    err = jsonschema.exceptions.best_match(_validator("LeashResultSchema.json").iter_errors(msg))
    if err is not None:
        raise err

