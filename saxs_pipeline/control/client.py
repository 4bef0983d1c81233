"""The leash client: signed requests to saxsdogserver over a REQ socket, "lazy pirate" style.

A REQ socket that never gets its reply is stuck (it may not send again), so each attempt
waits at most ``timeout`` seconds; then the socket is closed (LINGER 0 drops the pending
request), a fresh one is opened and the request is sent again, signed anew: the server's
replay cache would refuse the same signature twice. After ``retries`` attempts
:class:`ServerUnavailable` is raised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import zmq

from saxs_pipeline.control import protocol as proto
from saxs_pipeline.control.signing import legacy_sign, v2_sign

__all__ = ["LeashClient", "ServerUnavailable", "attachment_frame"]

log = logging.getLogger(__name__)


class ServerUnavailable(ConnectionError):
    """No reply from the server after all retries."""


def attachment_frame(attachment: dict[str, Any]) -> bytes:
    """The frame of one attachment ``{"filename", "data"}`` (UTF-8 JSON, as the original)."""
    return json.dumps(attachment).encode("utf-8")


class LeashClient:
    """Sends requests to one server. ``legacy=True`` signs like the original (v1)."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        legacy: bool = False,
        context: zmq.Context | None = None,
    ) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.retries = max(1, int(retries))
        self.legacy = legacy
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None

    def __enter__(self) -> LeashClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            if self.url.startswith("tcp://["):
                sock.setsockopt(zmq.IPV6, 1)
            sock.connect(self.url)
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def frames(self, command: str, argument: dict[str, Any] | None = None,
               attachments: Sequence[dict[str, Any]] = ()) -> list[bytes]:
        """The signed frames of one request (fresh time stamp and nonce each call)."""
        request: dict[str, Any] = {"command": command, "argument": argument or {}}
        extra = [attachment_frame(a) for a in attachments]
        if self.legacy:
            frame0 = json.dumps(legacy_sign(request, self.secret)).encode("utf-8")
        else:
            frame0 = v2_sign(request, self.secret, extra)
        return [frame0, *extra]

    def request(self, command: str, argument: dict[str, Any] | None = None,
                attachments: Sequence[dict[str, Any]] = (), *,
                timeout: float | None = None) -> dict[str, Any]:
        """Send ``command`` and return the reply dict; raises :class:`ServerUnavailable`."""
        wait_ms = int(1000 * (self.timeout if timeout is None else timeout))
        for attempt in range(1, self.retries + 1):
            sock = self._socket()
            sock.send_multipart(self.frames(command, argument, attachments))
            if sock.poll(wait_ms, zmq.POLLIN):
                return proto.decode_reply(sock.recv())
            log.warning("no reply from %s within %.1f s (attempt %d of %d)",
                        self.url, wait_ms / 1000, attempt, self.retries)
            self.close()  # a REQ socket without its reply cannot send again
        raise ServerUnavailable(
            f"no reply from the server at {self.url} after {self.retries} attempt(s) of "
            f"{wait_ms / 1000:g} s; is saxsdogserver running there?"
        )
