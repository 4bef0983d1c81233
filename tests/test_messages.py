"""Gap detection over a stream series."""

from __future__ import annotations

from saxs_pipeline.stream.messages import SeriesTracker, StartMessage, missing_images


def test_missing_images() -> None:
    assert missing_images([0, 1, 3, 5], 6) == [2, 4]
    assert missing_images([], 3, first=1) == [1, 2, 3]


def test_tracker_gaps_duplicates_and_tail() -> None:
    tracker = SeriesTracker(StartMessage(series_id=4, number_of_images=8))
    assert tracker.add(0) == []
    assert tracker.add(1) == []
    assert tracker.add(4) == [2, 3]  # a jump shows the dropped numbers at once
    assert tracker.add(2) == []  # late, not a new gap
    assert tracker.add(2) == [] and tracker.duplicates == [2]
    assert tracker.gaps() == [3]
    assert tracker.missing() == [3, 5, 6, 7]  # the tail never came either


def test_tracker_without_count() -> None:
    tracker = SeriesTracker(None)
    for n in (0, 2):
        tracker.add(n)
    assert tracker.missing() == tracker.gaps() == [1]
