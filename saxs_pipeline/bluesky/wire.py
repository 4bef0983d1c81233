"""Bluesky documents off a 0MQ proxy: a SUB socket on ``bluesky-0MQ-proxy``'s out address
and a safe decoder.

bluesky's ``Publisher`` sends each document as one message ``prefix name payload``. We do
not use bluesky's ``RemoteDispatcher`` to receive them: it unpickles payloads by default
(code execution for whoever can reach the socket) and a message with an unknown document
name raises inside its loop and ends it, and a new subscription misses documents until it
has joined. Here every message is decoded on its own; one that is malformed raises
:class:`DocumentError` naming it and the receiver goes on.

Payloads are msgpack (maps of plain values; numpy arrays in msgpack-numpy's layout, numeric
dtypes only) or JSON -- never pickle. The publishing side uses::

    Publisher("proxy-host:5577", serializer=saxs_pipeline.bluesky.wire.pack)

(or ``functools.partial(msgpack.packb, default=msgpack_numpy.encode)``, the same bytes).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import msgpack
import numpy as np
import zmq

__all__ = ["DOCUMENT_NAMES", "BlueskyReceiver", "DocumentError", "pack", "split", "unpack"]

log = logging.getLogger(__name__)

# event-model's document names (event_model.DocumentNames), as bytes on the wire
DOCUMENT_NAMES = frozenset({"start", "descriptor", "event", "event_page", "stop", "resource",
                            "datum", "datum_page", "stream_resource", "stream_datum"})
MAX_MESSAGE = 256 * 2**20  # a filled event of an EIGER2 16M frame in int32 is 64 MiB
MAX_JSON = 16 * 2**20


class DocumentError(ValueError):
    """A message or document that cannot be used; the text names it. ``kind``: the
    document's name when known (repeats are rate-limited per kind)."""

    def __init__(self, message: str, kind: str = "message") -> None:
        super().__init__(message)
        self.kind = kind


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"arrays of dtype {obj.dtype} are not sent")
        a = np.ascontiguousarray(obj)
        return {b"nd": True, b"type": a.dtype.str, b"kind": b"", b"shape": list(a.shape),
                b"data": a.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def pack(doc: dict[str, Any]) -> bytes:
    """A document as msgpack (the ``serializer`` of bluesky's ``Publisher``)."""
    return msgpack.packb(doc, default=_encode, use_bin_type=True)


def _array(obj: dict[Any, Any]) -> Any:
    # msgpack-numpy's layout, read without its decoder, which unpickles object arrays
    if b"nd" not in obj:
        return obj
    try:
        dtype = np.dtype(obj[b"type"])
        shape = tuple(int(n) for n in obj[b"shape"]) if obj[b"nd"] is True else ()
        data = obj[b"data"]
    except (KeyError, TypeError, ValueError) as exc:
        raise DocumentError(f"an array that cannot be read ({exc})") from None
    if dtype.kind not in "biuf":
        raise DocumentError(f"an array of dtype {dtype} (only numeric arrays are accepted)")
    if len(data) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise DocumentError(f"an array of shape {shape} {dtype} with {len(data)} bytes")
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array if shape else array.item()


def unpack(payload: bytes) -> dict[str, Any]:
    """The document in ``payload`` (msgpack or JSON); DocumentError when it is neither or
    not a mapping."""
    if payload[:1] in (b"{", b"[", b" ", b"\n"):  # JSON (msgpack maps start at 0x80)
        if len(payload) > MAX_JSON:  # parsed into Python objects: ten times its size
            raise DocumentError(f"a JSON document of {len(payload)} bytes (at most {MAX_JSON}; "
                                "frames in events go as msgpack)")
        try:
            doc = json.loads(payload)
        except ValueError as exc:
            raise DocumentError(f"not valid JSON ({exc})") from None
    else:
        try:
            doc = msgpack.unpackb(payload, raw=False, object_hook=_array, strict_map_key=False,
                                  max_bin_len=MAX_MESSAGE)
        except DocumentError:
            raise
        except Exception as exc:
            hint = " (pickled? the Publisher must use serializer=saxs_pipeline.bluesky.wire.pack)" \
                if payload[:1] == b"\x80" else ""
            raise DocumentError(f"neither msgpack nor JSON{hint}: {exc}") from None
    if not isinstance(doc, dict):
        raise DocumentError(f"a {type(doc).__name__}, not a document (a mapping)")
    return doc


def split(message: bytes, prefix: bytes = b"") -> tuple[str, dict[str, Any]] | None:
    """(name, document) of one proxy message; None for another publisher's prefix."""
    parts = message.split(b" ", 2)
    if len(parts) != 3:
        raise DocumentError(f"message of {len(message)} bytes is not 'prefix name payload'")
    head, raw_name, payload = parts
    if prefix and head != prefix:
        return None
    name = raw_name.decode("utf-8", "replace")
    if name not in DOCUMENT_NAMES:
        raise DocumentError(f"unknown document name {name[:40]!r}")
    try:
        return name, unpack(payload)
    except DocumentError as exc:
        raise DocumentError(f"{name} document: {exc}", name) from None


class BlueskyReceiver:
    """SUB-connects to a proxy's out address (``tcp://host:port``). :meth:`receive` waits
    at most ``timeout`` s; a socket belongs to the thread that calls it, :meth:`stop` may
    come from any thread."""

    def __init__(self, address: str, *, prefix: bytes = b"", poll_interval: float = 0.1,
                 rcvhwm: int = 100_000) -> None:
        self.address, self.prefix, self.poll_interval = address, prefix, poll_interval
        self._stop = threading.Event()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(address)
        self.received = 0
        self.rejected = 0

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def receive(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The next (name, document); None after ``timeout`` s or on stop. A message that
        cannot be used raises DocumentError (the next call goes on with the next one)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if self._socket.poll(int(1000 * min(self.poll_interval, max(left, 0.0))), zmq.POLLIN):
                message = self._socket.recv(copy=True)
                try:
                    got = split(message, self.prefix)
                except DocumentError:
                    self.rejected += 1
                    raise
                if got is not None:
                    self.received += 1
                    return got
                continue
            if left <= 0:
                return None
        return None

    def close(self) -> None:
        self._socket.close(0)
        self._context.term()
