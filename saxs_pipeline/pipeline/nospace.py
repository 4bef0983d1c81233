"""A full output disk, told apart from a frame's own failure.

A write that fails with ENOSPC or EDQUOT (a ``.chi`` on a worker, the curve stack, the
ledger, ``failures.log``), or SQLite's "database or disk is full", would fail every write
after it too. So it is not a failure of the frame at hand, to be recorded and retried:
the run stops (what is not committed stays pending in its ledger, and ``--resume`` or a
restarted server completes it once space is freed).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["NO_SPACE_ERRNOS", "DiskGuard", "full_disk_error", "is_no_space", "mount_point",
           "no_space_message"]

log = logging.getLogger(__name__)

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def full_disk_error(exc: BaseException | None) -> OSError | sqlite3.Error | None:
    """The full-disk error in ``exc``, an error it was raised from or one it groups."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            return e
        if isinstance(e, sqlite3.Error) and getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return e
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return None


def is_no_space(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from or groups, is a full disk."""
    return full_disk_error(exc) is not None


def mount_point(path: str | os.PathLike[str]) -> str:
    """The mount point of the file system holding ``path`` (what a person frees space on)."""
    p = os.path.abspath(os.fspath(path))
    while not os.path.ismount(p):
        p = os.path.dirname(p)
    return p


def no_space_message(where: str | os.PathLike[str], detail: str) -> str:
    """"no space left on <mount point of where> (<what failed>)"."""
    return f"no space left on {mount_point(where)} ({detail})"


class DiskGuard:
    """Stops a run once a disk it writes is full: the first no-space error sets
    :attr:`message` (naming the disk of the file that failed, of the ``ledger`` for SQLite,
    else of the ``outputs``) and calls ``stop`` once, on a thread of its own (the threads
    that notice a full disk -- results, timed flushes, walks -- are among those a stop
    waits for)."""

    def __init__(self, outputs: str | os.PathLike[str], ledger: str | os.PathLike[str],
                 stop: Callable[[], Any], name: str) -> None:
        self.outputs, self.ledger, self._stop, self.name = outputs, ledger, stop, name
        self.message: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def check(self, exc: BaseException, *, stop: bool = True) -> bool:
        """Stop the run when ``exc`` is a full disk (``stop`` False: it is stopping
        already); True when it was one."""
        e = full_disk_error(exc)
        if e is None:
            return False
        where = getattr(e, "filename", None) or (self.ledger if isinstance(e, sqlite3.Error)
                                                 else self.outputs)
        self.full(str(exc), where=where, stop=stop)
        return True

    def full(self, detail: str, *, where: str | os.PathLike[str] | None = None,
             stop: bool = True) -> None:
        """The disk of ``where`` (default: the outputs) is full (``detail``: what failed):
        stop the run, once (``stop`` False: it is stopping already)."""
        with self._lock:
            if self.message is not None:
                return
            self.message = no_space_message(where or self.outputs, detail)
            if stop:
                self._thread = threading.Thread(target=self._stop, daemon=True,
                                                name=f"saxs-nospace-{self.name}")
        log.error("queue %s: %s; the run stops: what is not committed stays pending in its "
                  "ledger (saxsdog --resume, or a restarted saxsdogserver, completes it once "
                  "space is freed)", self.name, self.message)
        if stop:
            self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the stop to finish (nothing to wait for while the disk is not full)."""
        if self._thread is not None:
            self._thread.join(timeout)
