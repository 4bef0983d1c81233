"""Repeated warnings are rate-limited to one line with a count."""

from __future__ import annotations

import logging

from saxs_pipeline.logutil import RateLimit


def test_repeats_are_counted_not_printed(caplog) -> None:
    log = logging.getLogger("test.ratelimit")
    # an interval no loaded machine outlasts while 2500 lines are logged, ended by hand
    # (a 0.2 s interval ran out inside the loop under load)
    limit = RateLimit(interval=60)
    caplog.handler.addFilter(limit)
    try:
        with caplog.at_level(logging.INFO, logger="test.ratelimit"):
            for i in range(2500):
                log.warning("bad file %s", i)
            log.info("info always passes")
            limit.interval = 0.0  # the interval is over
            log.warning("bad file %s", "last")
            limit.flush(log)
    finally:
        caplog.handler.removeFilter(limit)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "bad file 0" and lines[1] == "info always passes"
    assert lines[2].startswith("bad file last [and 2,499 more like this")
    assert len(lines) == 3
    caplog.clear()
    limit.interval = 60.0
    caplog.handler.addFilter(limit)
    try:
        with caplog.at_level(logging.INFO, logger="test.ratelimit"):
            for name in "xyz":
                log.warning("bad file %s", name)  # y and z are held, z named at the flush
            limit.flush(log)
    finally:
        caplog.handler.removeFilter(limit)
    assert [r.getMessage() for r in caplog.records] == [
        "bad file x", "2 more message(s) like this one, the last: bad file z"]


def test_a_record_passes_every_handler_the_filter_sits_on() -> None:
    # install_rate_limit puts one filter on every root handler (a console and a file, or
    # pytest's): the first message must reach all of them, not only the first handler.
    log = logging.getLogger("test.ratelimit.handlers")
    log.propagate = False
    limit = RateLimit(interval=60)
    got: list[list[str]] = [[], []]

    class Keep(logging.Handler):
        def __init__(self, into: list[str]) -> None:
            super().__init__()
            self.into = into
            self.addFilter(limit)

        def emit(self, record: logging.LogRecord) -> None:
            self.into.append(record.getMessage())

    handlers = [Keep(got[0]), Keep(got[1])]
    for h in handlers:
        log.addHandler(h)
    try:
        log.warning("once %s", 1)
        log.warning("once %s", 2)  # a repeat: held in both
    finally:
        for h in handlers:
            log.removeHandler(h)
        log.propagate = True
    assert got == [["once 1"], ["once 1"]]


def test_flush_at_exit_takes_the_filters_off() -> None:
    from saxs_pipeline.logutil import flush_repeats, install_rate_limit

    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        limit = install_rate_limit()
        assert limit in handler.filters
        flush_repeats()
        assert limit not in handler.filters  # an in-process saxsdog run leaves no filter
    finally:
        root.removeHandler(handler)
