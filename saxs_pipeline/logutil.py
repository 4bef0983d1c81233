"""Logging set-up shared by the command-line tools: repeated warnings are rate-limited.

A misbehaving client or a directory of 2,500 bad files must not print 2,500 lines: the
first message of a kind (same logger, level and format string) goes out at once, repeats
within ``interval`` seconds are counted, and the next one after the interval carries the
count ("... [and 2,499 more like this in the last 10 s]"). :func:`flush_repeats` prints the
counts still held (at exit).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["RateLimit", "flush_repeats", "install_rate_limit"]

_filters: list[tuple[RateLimit, list[logging.Handler]]] = []


class RateLimit(logging.Filter):
    """See the module doc. Only WARNING and above are limited; INFO/DEBUG pass."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._lock = threading.Lock()
        # key -> [first time, count held, the last held message]
        self._seen: dict[tuple[str, int, str], list[Any]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # One filter sits on every root handler: a record reaching the second handler is
        # the same record, not a repeat, and gets the first handler's answer.
        mark = f"_rate_limit_{id(self)}"
        if mark not in record.__dict__:
            record.__dict__[mark] = self._first(record)
        return record.__dict__[mark]

    def _first(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or now - seen[0] >= self.interval:
                held = seen[1] if seen else 0
                self._seen[key] = [now, 0, ""]
                if held:
                    record.msg = f"{record.msg} [and {held:,} more like this in the last " \
                                 f"{now - seen[0]:.0f} s]"
                return True
            seen[1] += 1
            seen[2] = record.getMessage()
            return False

    def flush(self, logger: logging.Logger) -> None:
        with self._lock:
            held = [(k, v[1], v[2]) for k, v in self._seen.items() if v[1]]
            self._seen.clear()
        for (name, level, _), n, last in held:
            logging.getLogger(name).log(level, "%d more message(s) like this one, the last: %s",
                                        n, last)


def install_rate_limit(interval: float = 10.0) -> RateLimit:
    """Put a :class:`RateLimit` on every handler of the root logger."""
    limit = RateLimit(interval)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(limit)
    _filters.append((limit, handlers))
    return limit


def flush_repeats() -> None:
    """At exit: print the counts still held, then take the filters off their handlers (a
    command run inside another program, a test or a notebook, leaves its logging as it
    found it)."""
    while _filters:
        limit, handlers = _filters.pop()
        limit.flush(logging.getLogger())
        for handler in handlers:
            handler.removeFilter(limit)
