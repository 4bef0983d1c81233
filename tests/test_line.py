"""How much of the dispatcher's line the next task takes (``line.take_size``)."""

from __future__ import annotations

import pytest

from saxs_pipeline.pipeline.line import MIN_SHARE, take_size


@pytest.mark.parametrize(
    ("waiting", "out", "expected"),
    [
        (0, 0, 0),  # nothing in line
        (40, 8, 32),  # a full batch goes even while every thread is busy
        (32, 0, 32),
        (1, 0, 1),  # a live frame goes at once to an idle thread
        (3, 0, 3),  # too few to share: one task
        (7, 0, 4),  # after a stall: shared over both idle threads (4 + 3), not one task of 7
        (12, 0, 6),
        (3, 1, 3),  # one thread idle: all of them
        (5, 2, 0),  # every thread busy: they gather into the next batch
        (5, 3, 0),
    ],
)
def test_take_size_shares_a_partial_line_over_idle_threads(waiting: int, out: int,
                                                             expected: int) -> None:
    assert take_size(waiting, batch_size=32, out=out, nthreads=2) == expected


def test_take_size_takes_every_waiting_frame_over_the_idle_threads() -> None:
    # whatever the numbers, the tasks the idle threads get hold every waiting frame
    for nthreads in (1, 2, 3, 8, 32):
        for waiting in range(1, 32):
            left, out = waiting, 0
            while left and out < nthreads:
                n = take_size(left, 32, out, nthreads)
                assert 1 <= n <= left
                left, out = left - n, out + 1
            assert left == 0


def test_take_size_edge_cases() -> None:
    assert take_size(1, batch_size=1, out=5, nthreads=2) == 1  # full batches go regardless
    assert take_size(3, batch_size=32, out=0, nthreads=0) == 3  # no thread count: one taken
    assert take_size(3, batch_size=32, out=3, nthreads=2) == 0  # more out than threads
    # a large cluster with a short line (a walk offers 16 paths at a time): shares of
    # MIN_SHARE frames, never one task per frame
    assert take_size(16, batch_size=32, out=0, nthreads=32) == MIN_SHARE
    assert take_size(2, batch_size=32, out=0, nthreads=32) == 2
