"""Accounting of a stream series in ranges: gaps, duplicates, the tail that never came,
image numbers outside the series; the cost grows with the messages, not the numbers."""

from __future__ import annotations

import time

import pytest

from saxs_pipeline.stream.messages import Added, ImageRefused, SeriesTracker, StartMessage
from saxs_pipeline.stream.spans import Spans


def test_spans_merge_and_holes() -> None:
    spans = Spans()
    for n in (0, 1, 2, 5, 4, 9):
        assert spans.add(n)
    assert not spans.add(4)
    assert list(spans) == [(0, 3), (4, 6), (9, 10)] and spans.count == 6 and spans.stop == 10
    assert spans.add(3) and list(spans) == [(0, 6), (9, 10)]  # closes the hole: one range
    assert spans.holes(0, 12) == [(6, 9), (10, 12)]
    assert spans.holes(7, 8) == [(7, 8)] and spans.holes(1, 4) == []
    assert 5 in spans and 6 not in spans and -1 not in spans


def test_tracker_gaps_duplicates_and_tail() -> None:
    tracker = SeriesTracker(StartMessage(series_id=4, number_of_images=8))
    assert tracker.add(0) == Added(False)
    assert tracker.add(1) == Added(False)
    assert tracker.add(4) == Added(False, (2, 4))  # a jump shows the dropped numbers at once
    assert tracker.add(2) == Added(False)  # late, not a new gap
    assert tracker.add(2) == Added(True) and tracker.duplicates == 1
    assert tracker.duplicate_numbers == [2]
    assert tracker.gaps() == [(3, 4)]
    assert tracker.missing() == [(3, 4), (5, 8)]  # the tail never came either


def test_tracker_without_count() -> None:
    tracker = SeriesTracker(None)
    for n in (0, 2):
        tracker.add(n)
    assert tracker.missing() == tracker.gaps() == [(1, 2)]


def test_numbers_outside_the_series_are_refused() -> None:
    tracker = SeriesTracker(StartMessage(series_id=1, number_of_images=10))
    with pytest.raises(ImageRefused, match="beyond the 10 image"):
        tracker.add(10**9)
    with pytest.raises(ImageRefused, match="below"):
        tracker.add(-1)
    unknown = SeriesTracker(StartMessage(series_id=2), max_images=1000)
    with pytest.raises(ImageRefused, match="ceiling of 1000"):
        unknown.add(1000)
    huge = SeriesTracker(StartMessage(series_id=3, number_of_images=10**12), max_images=1000)
    assert huge.size == 1000 and huge.declared == 10**12
    with pytest.raises(ImageRefused, match="ceiling of 1000"):
        huge.add(5000)
    assert tracker.received.count == unknown.received.count == 0  # nothing was held


def test_a_series_armed_for_a_billion_images_costs_its_messages_only() -> None:
    """10 images of a series announcing 10^9, and one image numbered 10^8 - 1: a few
    ranges, in well under a second (the list-based accounting built 10^8 numbers)."""
    t0 = time.perf_counter()
    tracker = SeriesTracker(StartMessage(series_id=1, number_of_images=10**9), max_images=10**10)
    for n in range(10):
        tracker.add(n)
    assert tracker.add(10**8 - 1) == Added(False, (10, 10**8 - 1))
    assert tracker.missing() == [(10, 10**8 - 1), (10**8, 10**9)]
    assert len(tracker.received) == 2
    assert time.perf_counter() - t0 < 0.5  # measured: ~60 us; bound generous for a loaded CI
