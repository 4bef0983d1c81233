"""Linux inotify through libc (ctypes): watches and batches of raw events, nothing more.

One ``read`` returns every event the kernel has queued (up to the buffer), so a burst of
frames costs one system call and one Python loop, not a thread hand-off and a callback
per event as watchdog's observer makes it. The binding is these few calls, as small as
``inotify_simple``'s, without a dependency.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
from typing import NamedTuple

__all__ = ["Event", "Inotify", "available", "flags"]


class flags:  # noqa: N801  (a namespace of the kernel's constants, as <sys/inotify.h>)
    CLOSE_WRITE = 0x00000008
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    EXCL_UNLINK = 0x04000000
    ISDIR = 0x40000000


_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len of the name that follows
_NONBLOCK, _CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


class Event(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: str


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def available() -> bool:
    """Whether this system has inotify (Linux)."""
    return _LIBC is not None


class Inotify:
    """An inotify instance: :meth:`add` watches, :meth:`read` events (waiting at most
    ``timeout`` s), :meth:`close`."""

    def __init__(self) -> None:
        if _LIBC is None:
            raise OSError("inotify is not available on this system")
        fd = _LIBC.inotify_init1(_NONBLOCK | _CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def add(self, path: str, mask: int) -> int:
        """Watch the directory ``path``; returns its watch descriptor."""
        assert _LIBC is not None
        wd = _LIBC.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}", path)
        return wd

    def remove(self, wd: int) -> None:
        assert _LIBC is not None
        _LIBC.inotify_rm_watch(self.fd, wd)  # fails only for a watch the kernel dropped

    def read(self, timeout: float) -> list[Event]:
        """The events queued now, after waiting up to ``timeout`` s for the first."""
        if not self._poll.poll(int(timeout * 1000)):
            return []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        events, pos, end = [], 0, len(data)
        unpack, size = _HEADER.unpack_from, _HEADER.size
        while pos < end:
            wd, mask, cookie, length = unpack(data, pos)
            pos += size
            name = os.fsdecode(data[pos : pos + length].rstrip(b"\0"))
            pos += length
            events.append(Event(wd, mask, cookie, name))
        return events

    def close(self) -> None:
        os.close(self.fd)
