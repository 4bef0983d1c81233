"""DECTRIS Stream V2 messages as typed objects, and gap detection over a series.

Stream V2 (``dectris/documentation``, ``stream_v2/README.md``) sends one CBOR map per
ZeroMQ message: ``start`` when a series is armed, one ``image`` per exposure (all channels
of it), ``end`` at disarm. Fields not given a slot here stay in ``fields``.
Image numbers are the messages' ``image_id``; the simulator counts them from 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["EndMessage", "ImageMessage", "Message", "SeriesTracker", "StartMessage", "missing_images"]


@dataclass(frozen=True)
class StartMessage:
    series_id: int
    series_unique_id: str | None = None
    number_of_images: int | None = None
    image_shape: tuple[int, int] | None = None  # (image_size_y, image_size_x) = (rows, cols)
    channels: tuple[str, ...] = ()
    pixel_mask: dict[str, np.ndarray] | None = None  # per channel, nonzero = bad
    fields: dict[str, Any] = field(default_factory=dict, repr=False)  # the whole message


@dataclass(frozen=True)
class ImageMessage:
    series_id: int
    image_number: int
    data: dict[str, np.ndarray]  # channel name -> (rows, cols) array, read-only
    series_unique_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # start/stop/real time in s, ...

    @property
    def array(self) -> np.ndarray:
        """The first channel's image (the only one for single-threshold detectors)."""
        return next(iter(self.data.values()))


@dataclass(frozen=True)
class EndMessage:
    series_id: int
    series_unique_id: str | None = None


Message = StartMessage | ImageMessage | EndMessage


def missing_images(received: Iterable[int], expected: int, first: int = 0) -> list[int]:
    """Image numbers of ``first .. first + expected - 1`` not in ``received``."""
    got = set(received)
    return [n for n in range(first, first + expected) if n not in got]


class SeriesTracker:
    """What arrived of one series: image numbers, duplicates, how it ended."""

    def __init__(self, start: StartMessage | None, first: int = 0) -> None:
        self.start, self.first = start, first
        self.received: set[int] = set()
        self.duplicates: list[int] = []
        self.errors: list[str] = []
        self.ended = False  # an end message arrived
        self.timed_out = False  # the stream went quiet before the end message

    def add(self, image_number: int) -> list[int]:
        """Record an image; returns the numbers this one shows to have been skipped."""
        if image_number in self.received:
            self.duplicates.append(image_number)
            return []
        top = max(self.received, default=self.first - 1)
        self.received.add(image_number)
        return [n for n in range(top + 1, image_number) if n not in self.received]

    def gaps(self) -> list[int]:
        """Numbers below the highest received one that never came."""
        if not self.received:
            return []
        return missing_images(self.received, max(self.received) - self.first + 1, self.first)

    def missing(self) -> list[int]:
        """Numbers of the whole series (``number_of_images`` of the start message) that
        never came; only :meth:`gaps` when the start message gave no count."""
        expected = self.start.number_of_images if self.start is not None else None
        if expected is None:
            return self.gaps()
        return missing_images(self.received, expected, self.first)
