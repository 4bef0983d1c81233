"""The network configuration ``~/.saxsdognetwork``: where servers and feeders listen, and the
shared secret that signs leash requests.

Two forms are read:

* the original's file, a JSON **list** of ``{"Server", "Feeder", "Secret", "Name"}`` (what
  the original ``saxsnetconf`` wrote; one server per entry);
* the 2014 manual's single **object** ``{"ServerUrl", "FeederUrl", "Secret"}``.

The path is ``--config`` if given, else ``$SAXSDOG_NETWORK``, else ``~/.saxsdognetwork``.
The file holds a secret, so it is written with mode 0600 and a warning is logged when an
existing file can be read by group or others.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_FEEDER",
    "DEFAULT_SERVER",
    "NetConfError",
    "NetEntry",
    "bind_address",
    "config_path",
    "load_network",
    "new_secret",
    "parse_network",
    "permission_problem",
    "select_entry",
    "split_url",
    "write_network",
]

log = logging.getLogger(__name__)

DEFAULT_SERVER = "tcp://localhost:9723"
DEFAULT_FEEDER = "tcp://localhost:9823"
DEFAULT_NAME = "Queue1"
ENV_VAR = "SAXSDOG_NETWORK"
SECRET_BYTES = 24  # 192 bits: comfortably above the 128-bit floor, 48 hex characters

_LIST_KEYS = {"Server", "Feeder", "Secret", "Name"}
_OBJECT_KEYS = {"ServerUrl", "FeederUrl", "Secret", "Name"}


class NetConfError(ValueError):
    """A network configuration that cannot be used; the message names the file."""


@dataclass(frozen=True)
class NetEntry:
    """One server of the network file."""

    server: str = DEFAULT_SERVER
    feeder: str = DEFAULT_FEEDER
    secret: str = ""
    name: str = DEFAULT_NAME

    def to_json(self) -> dict[str, str]:
        """The entry in the original's list form."""
        return {"Server": self.server, "Feeder": self.feeder, "Secret": self.secret,
                "Name": self.name}


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path`` if given, else ``$SAXSDOG_NETWORK``, else ``~/.saxsdognetwork``."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".saxsdognetwork"


def new_secret(nbytes: int = SECRET_BYTES) -> str:
    """A random hex secret from the ``secrets`` module (at least 128 bits)."""
    return secrets.token_hex(max(int(nbytes), 16))


def _entry_from(obj: Any, where: str, source: str) -> NetEntry:
    if not isinstance(obj, dict):
        raise NetConfError(f"{source}: {where}: an entry must be a JSON object")
    if "ServerUrl" in obj or "FeederUrl" in obj:
        allowed, keys = _OBJECT_KEYS, ("ServerUrl", "FeederUrl")
    else:
        allowed, keys = _LIST_KEYS, ("Server", "Feeder")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise NetConfError(f"{source}: {where}: unknown key(s) {', '.join(unknown)}")
    for key in obj:
        if not isinstance(obj[key], str):
            raise NetConfError(f"{source}: {where}.{key}: must be a string")
    entry = NetEntry(
        server=obj.get(keys[0], DEFAULT_SERVER),
        feeder=obj.get(keys[1], DEFAULT_FEEDER),
        secret=obj.get("Secret", ""),
        name=obj.get("Name", DEFAULT_NAME),
    )
    for label, url in (("Server", entry.server), ("Feeder", entry.feeder)):
        try:
            split_url(url)
        except ValueError as exc:
            raise NetConfError(f"{source}: {where}.{label}: {exc}") from None
    return entry


def parse_network(obj: Any, source: str = "network config") -> list[NetEntry]:
    """Entries of a parsed network file (list form or the manual's single object)."""
    if isinstance(obj, dict):
        return [_entry_from(obj, "$", source)]
    if isinstance(obj, list):
        if not obj:
            raise NetConfError(f"{source}: the list of servers is empty")
        return [_entry_from(item, f"$[{i}]", source) for i, item in enumerate(obj)]
    raise NetConfError(f"{source}: must be a JSON list of servers or one object")


def permission_problem(path: str | os.PathLike[str]) -> str | None:
    """A warning text when the file at ``path`` is readable by group or others."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"{os.fspath(path)} holds the leash secret but has mode "
                f"{stat.S_IMODE(mode):04o}; run 'chmod 600 {os.fspath(path)}'")
    return None


def load_network(path: str | os.PathLike[str] | None = None, *, warn: bool = True) -> list[NetEntry]:
    """Read the network file (see :func:`config_path`); logs a warning when others can read
    it (unless ``warn`` is False)."""
    file = config_path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise NetConfError(f"{file}: network config not found (create it with saxsnetconf)") from None
    except OSError as exc:
        raise NetConfError(f"{file}: cannot be read ({exc.strerror})") from None
    problem = permission_problem(file) if warn else None
    if problem:
        log.warning(problem)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NetConfError(f"{file}: not valid JSON ({exc})") from None
    return parse_network(obj, str(file))


def select_entry(entries: list[NetEntry], index: int = 0) -> NetEntry:
    """Entry ``index`` (the ``-N`` option), with a clear error when it does not exist."""
    if not 0 <= index < len(entries):
        raise NetConfError(f"no server entry {index}: the network config has {len(entries)}")
    return entries[index]


def write_network(path: str | os.PathLike[str], entries: list[NetEntry]) -> Path:
    """Write ``entries`` in the original's list form (indent 4), mode 0600, atomically."""
    file = Path(path).expanduser()
    file.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps([e.to_json() for e in entries], indent=4) + "\n"
    # mkstemp creates the file 0600, so the secret is never readable by others, even briefly.
    fd, tmp = tempfile.mkstemp(prefix=".saxsdognetwork.", dir=file.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file


def split_url(url: str) -> tuple[str, int]:
    """Host and port of a ``tcp://host:port`` URL."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [IPv6 bracket
        raise ValueError(f"{url!r} is not a tcp://host:port URL ({exc})") from None
    if parts.scheme != "tcp":
        raise ValueError(f"{url!r} is not a tcp://host:port URL")
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    if "[" not in parts.netloc and parts.netloc.startswith("*"):
        host = "*"
    if port is None or not host:
        raise ValueError(f"{url!r} is not a tcp://host:port URL")
    return host, port


def bind_address(host: str, port: int) -> str:
    """The zmq bind endpoint for ``host``: ``*`` and ``0.0.0.0`` bind all interfaces, a name
    is resolved to its address (``localhost`` gives 127.0.0.1), port 0 picks a free port."""
    if host in ("*", "0.0.0.0", ""):
        addr = "*"
    elif host == "::":
        addr = "[::]"
    else:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NetConfError(f"cannot resolve bind host {host!r} ({exc.strerror})") from None
        # Prefer IPv4: zmq sockets have IPv6 off by default.
        v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
        addr = v4[0] if v4 else f"[{infos[0][4][0]}]"
    return f"tcp://{addr}:{port if port else '*'}"
