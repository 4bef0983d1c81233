"""Sets of image numbers held as sorted, disjoint half-open ranges ``[start, stop)``.

A stream series is accounted in ranges, never in lists of numbers: what arrived of it
(consecutive numbers make one range) and what never came (a series armed for 10⁶ images
and ended after 10 is one range). The memory held grows with the number of messages
that really arrived, never with a number a sender writes into a message.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator

__all__ = ["Spans", "holes"]


def holes(ranges: Iterable[tuple[int, int]], start: int, stop: int) -> list[tuple[int, int]]:
    """The ranges of ``[start, stop)`` that none of ``ranges`` (sorted by start) covers."""
    out: list[tuple[int, int]] = []
    at = start
    for lo, hi in ranges:
        if lo >= stop:
            break
        if lo > at:
            out.append((at, lo))
        at = max(at, hi)
    if at < stop:
        out.append((at, stop))
    return out


class Spans:
    """Image numbers as ranges (module doc); ``len()`` is the number of ranges, ``count``
    the number of image numbers."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        self.count = 0

    def __contains__(self, n: int) -> bool:
        k = bisect_right(self._starts, n) - 1
        return k >= 0 and n < self._stops[k]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._stops, strict=True)

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def stop(self) -> int | None:
        """One past the highest number held (None when empty)."""
        return self._stops[-1] if self._stops else None

    def add(self, n: int) -> bool:
        """Hold ``n``; False when it was held already."""
        k = bisect_right(self._starts, n) - 1
        if k >= 0 and n < self._stops[k]:
            return False
        joins_left = k >= 0 and self._stops[k] == n
        joins_right = k + 1 < len(self._starts) and self._starts[k + 1] == n + 1
        if joins_left and joins_right:  # n closes the hole between two ranges
            self._stops[k] = self._stops.pop(k + 1)
            del self._starts[k + 1]
        elif joins_left:
            self._stops[k] = n + 1
        elif joins_right:
            self._starts[k + 1] = n
        else:
            self._starts.insert(k + 1, n)
            self._stops.insert(k + 1, n + 1)
        self.count += 1
        return True

    def holes(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The ranges of ``[start, stop)`` not held, in order."""
        k = max(bisect_right(self._starts, start) - 1, 0)
        return holes(zip(self._starts[k:], self._stops[k:], strict=True), start, stop)
