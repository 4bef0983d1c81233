"""DECTRIS Stream V2 messages as typed objects, and gap detection over a series.

Stream V2 (``dectris/documentation``, ``stream_v2/README.md``) sends one CBOR map per
ZeroMQ message: ``start`` when a series is armed, one ``image`` per exposure (all channels
of it), ``end`` at disarm. Fields not given a slot here stay in ``fields``.
Image numbers are the messages' ``image_id``; the simulator counts them from 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saxs_pipeline.stream.spans import Spans

__all__ = ["DEFAULT_MAX_IMAGES", "Added", "EndMessage", "ImageMessage", "ImageRefused", "Message",
           "SeriesTracker", "StartMessage"]

# The ceiling on image numbers of one series when its start message gives no count (or a
# larger one): 10^8 is 14 h of an EIGER2 at 2 kHz.
DEFAULT_MAX_IMAGES = 100_000_000


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


class ImageRefused(ValueError):
    """An image number its series cannot hold: negative, beyond the series' announced
    size or beyond the ceiling on images per series."""


@dataclass(frozen=True)
class Added:
    """What :meth:`SeriesTracker.add` made of an image number."""

    duplicate: bool  # received before: the first copy counts
    skipped: tuple[int, int] | None = None  # [start, stop): numbers this one shows skipped


class SeriesTracker:
    """What arrived of one series, in ranges (:class:`~.spans.Spans`): image numbers,
    duplicates, how it ended. Image numbers run from ``first`` up to the start message's
    ``number_of_images``, or up to ``max_images`` when it gives none or more than that."""

    def __init__(self, start: StartMessage | None, first: int = 0,
                 max_images: int = DEFAULT_MAX_IMAGES) -> None:
        self.start, self.first, self.max_images = start, first, max_images
        declared = start.number_of_images if start is not None else None
        self.declared = declared  # as announced, possibly beyond the ceiling
        self.size = max_images if declared is None else min(declared, max_images)
        self.received = Spans()
        self.duplicates = 0
        self.duplicate_numbers: list[int] = []  # the first few repeated, for the report
        self.errors: list[str] = []
        self.ended = False  # an end message arrived
        self.timed_out = False  # the stream went quiet before the end message

    def add(self, image_number: int) -> Added:
        """Record an image; raises :class:`ImageRefused` for a number outside the series."""
        n = image_number
        if not self.first <= n < self.first + self.size:
            if n < self.first:
                why = f"below the series' first image number {self.first}"
            elif self.declared is not None and self.declared <= self.max_images:
                why = f"beyond the {self.declared} image(s) its start message announced"
            else:
                why = f"beyond the ceiling of {self.max_images} images per series"
            raise ImageRefused(f"image number {n} is {why}")
        top = self.received.stop
        if not self.received.add(n):
            self.duplicates += 1
            if len(self.duplicate_numbers) < 10 and n not in self.duplicate_numbers:
                self.duplicate_numbers.append(n)
            return Added(True)
        low = self.first if top is None else top
        return Added(False, (low, n) if n > low else None)

    def gaps(self) -> list[tuple[int, int]]:
        """Ranges below the highest received number that never came."""
        top = self.received.stop
        return [] if top is None else self.received.holes(self.first, top)

    def missing(self) -> list[tuple[int, int]]:
        """Ranges of the whole series (``number_of_images`` of the start message, at most
        ``max_images``) that never came; only :meth:`gaps` when the start message gave no
        count."""
        if self.declared is None:
            return self.gaps()
        return self.received.holes(self.first, self.first + self.size)
