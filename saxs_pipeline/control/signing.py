"""Signing and verifying leash requests.

**v1 (legacy, the original's scheme, kept byte-compatible so existing clients work).** The
client sets ``time`` (Unix seconds, float) and ``sign = ""``, then
``sign = hex(SHA-512(json.dumps(request, sort_keys=True) || secret))``. The server
re-serialises the parsed request the same way, checks ``|time - now| < 900 s`` first
("Untimely request.") and then the digest ("Wrong signature."). This is a secret-suffix
hash, not an HMAC, and it covers frame 0 only (attachments are unsigned), so we add what
can be added without breaking the wire: a constant-time comparison and a replay cache (a
signature is accepted once while its time stamp is inside the window).

**Replays after a restart.** The server keeps its replay cache in a SQLite file beside its
queue's state (:class:`ReplayCache` with a ``path``), written before a request runs, so a
request captured before a restart is refused after it just the same. (Refusing requests
signed before the server started was the other way; it would refuse every client whose
clock is behind the server's for as long as it is behind -- up to the v1 window of 15
minutes after each restart.)

**v2 (used by ``saxsleash`` by default).** Frame 0 is an envelope
``{"v": 2, "payload": "<request JSON text>", "sign": "<hex>"}`` where ``sign`` is
HMAC-SHA256 with the secret over the UTF-8 bytes of ``payload`` exactly as sent (never a
re-serialisation). The payload carries ``time``, a random ``nonce`` and ``attachments``,
the SHA-256 of every attachment frame in order, so the attachments are authenticated too.
The server checks the HMAC, then the time window, then the nonce (accepted once), then the
attachment digests.

Failures raise :class:`AuthenticationError`, whose text is the original's message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "LEGACY_WINDOW",
    "V2_WINDOW",
    "AuthenticationError",
    "ReplayCache",
    "Verifier",
    "is_v2",
    "legacy_digest",
    "legacy_sign",
    "v2_sign",
]

LEGACY_WINDOW = 900.0  # the original's ±15 min
V2_WINDOW = 300.0  # v2 has a nonce cache, so a shorter window only needs NTP-synced clocks

UNTIMELY = "Untimely request."
WRONG_SIGNATURE = "Wrong signature."
REPLAYED = "Replayed request."

log = logging.getLogger(__name__)


class AuthenticationError(Exception):
    """A request that failed authentication. ``str(exc)`` is the original's message text;
    the reply carries its ``repr`` (quotes included), as the original did."""


def legacy_digest(request: Mapping[str, Any], secret: str) -> str:
    """The v1 signature of ``request`` (its ``sign`` field is ignored)."""
    text = json.dumps(dict(request, sign=""), sort_keys=True)
    digest = hashlib.sha512(text.encode("utf-8"))
    digest.update(secret.encode("utf-8"))
    return digest.hexdigest()


def legacy_sign(request: Mapping[str, Any], secret: str, now: float | None = None) -> dict[str, Any]:
    """A copy of ``request`` with ``time`` and the v1 ``sign`` set, as the original client
    did."""
    signed = dict(request)
    signed["time"] = time.time() if now is None else float(now)
    signed["sign"] = ""
    signed["sign"] = legacy_digest(signed, secret)
    return signed


def _hmac(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


def v2_sign(
    request: Mapping[str, Any],
    secret: str,
    attachments: Sequence[bytes] = (),
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> bytes:
    """Frame 0 of a v2 request: the envelope around ``request`` (``command``/``argument``)
    with time, nonce and the SHA-256 of each attachment frame (the exact bytes sent)."""
    body = {k: v for k, v in request.items() if k not in ("time", "sign", "nonce", "attachments")}
    body["time"] = time.time() if now is None else float(now)
    body["nonce"] = nonce or secrets.token_hex(16)
    body["attachments"] = [hashlib.sha256(a).hexdigest() for a in attachments]
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"))
    envelope = {"v": 2, "payload": payload, "sign": _hmac(secret, payload.encode("utf-8"))}
    return json.dumps(envelope).encode("utf-8")


def is_v2(message: Any) -> bool:
    """True for a v2 envelope (a dict with ``"v": 2``)."""
    return isinstance(message, dict) and message.get("v") == 2


class ReplayCache:
    """Keys seen while their request is still inside the time window; each entry expires
    when its request would be rejected as untimely anyway, so the cache stays small.

    With ``path`` the keys are kept in that SQLite file too, each committed before
    :meth:`add` returns, and the cache starts with the keys a previous process left there.
    A file that cannot be written costs the persistence, logged, never a request."""

    def __init__(self, max_entries: int = 200_000, path: str | os.PathLike[str] | None = None) -> None:
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self.max_entries = max_entries
        self._pruned = 0.0
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._db = self._open(path)

    def _open(self, path: str | os.PathLike[str]) -> sqlite3.Connection | None:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            # One thread at a time (the server's loop), not always the opening one.
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: each key is in the file when add() returns, so a killed or crashed
            # process forgets none; FULL (an fsync per request, 2 ms idle, tens of ms while
            # a run writes) only adds a power cut, and made stat slow during a readdir.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires REAL)")
            rows = db.execute("SELECT key, expires FROM seen ORDER BY rowid").fetchall()
        except (OSError, sqlite3.Error) as exc:
            log.error("replay cache %s cannot be used (%s): requests seen before a restart "
                      "are not refused after it", path, exc)
            return None
        self._expiry.update(rows)  # expired ones go at the first prune
        return db

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        if self._db is None:
            return
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            log.error("replay cache not saved (%s): requests seen now are not refused after "
                      "a restart", exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, key: str) -> bool:
        return key in self._expiry

    def prune(self, now: float) -> None:
        self._pruned = now
        expired = [key for key, expires in self._expiry.items() if expires < now]
        for key in expired:
            del self._expiry[key]
        if expired:
            self._write("DELETE FROM seen WHERE expires < ?", (now,))

    def add(self, key: str, expires: float, now: float) -> bool:
        """Record ``key``; False when it is already there (a replay)."""
        if now - self._pruned >= 1.0:  # a full sweep at most once a second
            self.prune(now)
        if key in self._expiry:
            return False
        if len(self._expiry) >= self.max_entries:
            # Only authenticated requests reach the cache; at this size something is
            # hammering us with valid signatures, so forget the oldest rather than grow.
            oldest, _ = self._expiry.popitem(last=False)
            self._write("DELETE FROM seen WHERE key = ?", (oldest,))
        self._write("INSERT OR REPLACE INTO seen (key, expires) VALUES (?, ?)", (key, expires))
        self._expiry[key] = expires
        return True


def _timestamp(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class Verifier:
    """Checks v1 and v2 requests against one shared secret; holds the replay cache (kept
    in the SQLite file ``replay_path`` when given: see the module doc)."""

    def __init__(
        self,
        secret: str,
        *,
        legacy_window: float = LEGACY_WINDOW,
        v2_window: float = V2_WINDOW,
        allow_legacy: bool = True,
        clock: Callable[[], float] = time.time,
        replay_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not secret:
            raise ValueError("an empty secret would let anybody sign requests")
        self.secret = secret
        self.legacy_window = legacy_window
        self.v2_window = v2_window
        self.allow_legacy = allow_legacy
        self.clock = clock
        self.cache = ReplayCache(path=replay_path)

    def verify(self, message: Any, attachments: Sequence[bytes] = ()) -> tuple[dict[str, Any], int]:
        """The authenticated request and its version (1 or 2); raises
        :class:`AuthenticationError`."""
        if is_v2(message):
            return self._verify_v2(message, attachments), 2
        if not self.allow_legacy:
            raise AuthenticationError("Legacy (v1) signatures are disabled on this server.")
        return self._verify_legacy(message), 1

    def _verify_legacy(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise AuthenticationError(WRONG_SIGNATURE)
        now = self.clock()
        stamp = _timestamp(request.get("time"))
        # The original checks the time first and never looks at the signature of an
        # untimely request; keep that order so old clients see the same message.
        if stamp is None or not abs(stamp - now) < self.legacy_window:
            raise AuthenticationError(UNTIMELY)
        sign = request.get("sign")
        if not isinstance(sign, str):
            raise AuthenticationError(WRONG_SIGNATURE)
        expected = legacy_digest(request, self.secret)
        if not hmac.compare_digest(expected.encode("ascii"), sign.encode("utf-8", "replace")):
            raise AuthenticationError(WRONG_SIGNATURE)
        if not self.cache.add("v1:" + sign, stamp + self.legacy_window, now):
            raise AuthenticationError(REPLAYED)
        return request

    def _verify_v2(self, envelope: dict[str, Any], attachments: Sequence[bytes]) -> dict[str, Any]:
        payload, sign = envelope.get("payload"), envelope.get("sign")
        if not isinstance(payload, str) or not isinstance(sign, str):
            raise AuthenticationError(WRONG_SIGNATURE)
        expected = _hmac(self.secret, payload.encode("utf-8"))
        if not hmac.compare_digest(expected.encode("ascii"), sign.encode("utf-8", "replace")):
            raise AuthenticationError(WRONG_SIGNATURE)
        # Authentic from here on: the payload is the client's own text.
        try:
            body = json.loads(payload)
        except json.JSONDecodeError:
            raise AuthenticationError(WRONG_SIGNATURE) from None
        if not isinstance(body, dict):
            raise AuthenticationError(WRONG_SIGNATURE)
        now = self.clock()
        stamp = _timestamp(body.get("time"))
        if stamp is None or not abs(stamp - now) < self.v2_window:
            raise AuthenticationError(UNTIMELY)
        digests = body.get("attachments", [])
        actual = [hashlib.sha256(a).hexdigest() for a in attachments]
        if not isinstance(digests, list) or len(digests) != len(actual) or not all(
            isinstance(d, str) and hmac.compare_digest(d, a) for d, a in zip(digests, actual, strict=True)
        ):
            raise AuthenticationError("Attachments do not match the signature.")
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise AuthenticationError(WRONG_SIGNATURE)
        if not self.cache.add("v2:" + nonce, stamp + self.v2_window, now):
            raise AuthenticationError(REPLAYED)
        return body
