"""The leash client: signed requests to saxsdogserver over a REQ socket, "lazy pirate" style.

A REQ socket that never gets its reply is stuck (it may not send again), so each attempt
waits at most ``timeout`` seconds; then the socket is closed (LINGER 0 drops the pending
request), a fresh one is opened and the request is sent again, signed anew: the server's
replay cache would refuse the same signature twice. After ``retries`` attempts
:class:`ServerUnavailable` is raised.

ZeroMQ connects in the background and never says that nothing listens, so a stopped
server would cost ``retries`` whole timeouts (30 s by default) before that message. Each
attempt on a ``tcp://`` URL therefore first opens a plain TCP connection to the port
(closed at once; the server's ZeroMQ drops it unseen): refused or unanswered within
``PROBE_TIMEOUT`` s, the attempt fails at once and the next one follows after
``REFUSED_PAUSE`` s (a server being restarted is still found), so a stopped server is
told as "no server at ..." within about a second.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

import zmq

from saxs_pipeline.control import protocol as proto
from saxs_pipeline.control.signing import legacy_sign, v2_sign

__all__ = ["LeashClient", "ServerUnavailable", "attachment_frame", "probe_tcp"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0  # s: a TCP handshake on a working network takes milliseconds
REFUSED_PAUSE = 0.4  # s between attempts whose connection was refused


def probe_tcp(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why nothing accepts connections at the ``tcp://host:port`` of ``url`` (None: a
    listener answered, or the URL is not plain TCP with a port: nothing to probe)."""
    if not url.startswith("tcp://"):
        return None
    host, _, port = url[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or host == "*" or ";" in host:
        return None  # ";": ZeroMQ's source;destination form, not for a plain socket
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except TimeoutError:
        return f"no answer to a connection within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


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
        refused: str | None = None
        for attempt in range(1, self.retries + 1):
            if attempt > 1 and refused is not None:
                time.sleep(REFUSED_PAUSE)
            refused = probe_tcp(self.url, min(PROBE_TIMEOUT, max(wait_ms / 1000, 0.1)))
            if refused is not None:
                log.info("no server at %s: %s (attempt %d of %d)", self.url, refused,
                            attempt, self.retries)
                continue
            sock = self._socket()
            sock.send_multipart(self.frames(command, argument, attachments))
            if sock.poll(wait_ms, zmq.POLLIN):
                return proto.decode_reply(sock.recv())
            log.warning("no reply from %s within %.1f s (attempt %d of %d)",
                        self.url, wait_ms / 1000, attempt, self.retries)
            self.close()  # a REQ socket without its reply cannot send again
        if refused is not None:
            raise ServerUnavailable(
                f"no server at {self.url}: {refused} (after {self.retries} attempt(s)); is "
                "saxsdogserver running there?")
        raise ServerUnavailable(
            f"no reply from the server at {self.url} after {self.retries} attempt(s) of "
            f"{wait_ms / 1000:g} s; is saxsdogserver running there?"
        )
