"""One writer per curve stack: a lock file that names its holder.

The lock is an ``flock`` on ``<stack>.lock``, which the kernel releases when the holding
process dies, however it dies (SIGKILL included): a lock that can be taken belongs to
nobody. The file's content names the holder (host, pid, process start time, command) so a
second writer is told who has the stack. Where the file system does not support locks
(some network mounts), the holder is checked by hand: on the same host it is gone when no
process with that pid and start time exists; a holder on another host cannot be proven
gone, and the message says which file to remove once the user knows it is.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = ["Holder", "StackLock", "StackLockedError"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float  # the process's start time (psutil create_time)
    since: float  # when it took the lock
    command: str

    @classmethod
    def me(cls) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, psutil.Process(pid).create_time(), time.time(),
                   " ".join(os.path.basename(a) if i == 0 else a
                            for i, a in enumerate(sys.argv))[:200])

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host} since {when} ({self.command})"

    def alive_here(self) -> bool:
        """True when this holder is a live process on this host."""
        if self.host != socket.gethostname():
            return False
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
            return False


class StackLockedError(RuntimeError):
    """Another writer holds the curve stack."""

    def __init__(self, stack: Path, holder: Holder | None, hint: str = "") -> None:
        self.stack, self.holder = stack, holder
        who = holder.describe() if holder else "another process"
        super().__init__(f"curve stack {stack} is being written by {who}; "
                         f"only one run may write a stack{hint}")


def _read_holder(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


class StackLock:
    """The writer lock of the stack at ``stack`` (a ``.zarr`` path); :meth:`acquire`
    raises :class:`StackLockedError` naming the live holder."""

    def __init__(self, stack: str | os.PathLike[str]) -> None:
        self.stack = Path(stack)
        self.path = self.stack.with_name(self.stack.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            previous = _read_holder(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StackLockedError(self.stack, previous) from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                self._check_by_hand(previous)
            if previous is not None and previous.pid != os.getpid():
                log.info("curve stack %s: taking over the lock of %s, which is gone",
                         self.stack, previous.describe())
            self._write(fd, Holder.me())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _check_by_hand(self, previous: Holder | None) -> None:
        if previous is None or previous.pid == os.getpid():
            return
        if previous.alive_here():
            raise StackLockedError(self.stack, previous)
        if previous.host != socket.gethostname():
            raise StackLockedError(
                self.stack, previous,
                f" (this file system has no locks, so a holder on another host cannot be "
                f"proven gone: remove {self.path} once it is)")

    @staticmethod
    def _write(fd: int, holder: Holder) -> None:
        data = json.dumps(asdict(holder)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty lock file names nobody
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> StackLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
