"""Where a run's frames come from: the walks (``readdir``, ``--resume``), the watcher,
the DECTRIS stream, feeder events and frames a source located in their files -- each
offered to the run's :class:`~saxs_pipeline.pipeline.taker.Taker` through one door, shut
while the queue takes no frames. A full disk met while offering stops the run
(:class:`~saxs_pipeline.pipeline.nospace.DiskGuard`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from saxs_pipeline.pipeline.frames import FrameAt
from saxs_pipeline.pipeline.ledger import Why
from saxs_pipeline.pipeline.nospace import DiskGuard
from saxs_pipeline.pipeline.sources import SourceSet, WalkSource, WatchSource
from saxs_pipeline.pipeline.streamsource import StreamCounts, StreamSource
from saxs_pipeline.pipeline.taker import Taker

__all__ = ["Intake", "StreamOptions", "WatchOptions"]


@dataclass(frozen=True)
class WatchOptions:
    """Watch the run's directory for new and rewritten files."""

    poll: bool = False
    stable_time: float = 1.0


@dataclass(frozen=True)
class StreamOptions:
    """Receive a DECTRIS Stream V2 at ``url``."""

    url: str
    series: int | None
    idle: float
    max_images: int


class Intake:
    """The sources of one run (module doc), offering the files of ``directory`` that match
    ``pattern``; ``taking()`` says whether the queue takes frames now."""

    def __init__(self, directory: Path, pattern: str, taking: Callable[[], bool],
                 disk: DiskGuard) -> None:
        self.directory, self.pattern, self._taking, self.disk = directory, pattern, taking, disk
        self.sources = SourceSet()
        self.taker: Taker | None = None
        self._stream: StreamSource | None = None

    @property
    def finding(self) -> bool:
        """A source is still finding frames (a walk, the watcher, the stream)."""
        return self.sources.finding

    @property
    def stream_failure(self) -> str | None:
        """Why the stream receiver stopped by itself (None: no stream, running, or ended
        as asked)."""
        return self._stream.failure if self._stream is not None else None

    def start(self, taker: Taker, *, resume: bool, watch: WatchOptions | None,
              stream: StreamOptions | None, shape: tuple[int, int],
              batch: int) -> Callable[[], StreamCounts] | None:
        """Open the door to ``taker``; with ``resume``, offer what the ledger has pending
        (even where no walk finds it again); start the watcher and the stream receiver.
        Returns how to read the stream's counts (None without a stream)."""
        self.taker = taker
        if resume:
            self.offer(taker.pending_paths(), Why.RESUME)
        if watch is not None and stream is None:  # a stream's directory holds only its outputs
            self.sources.add(WatchSource(self.directory, self.pattern, self.offer,
                                         poll=watch.poll, stable_time=watch.stable_time).start())
        if stream is None:
            return None
        self._stream = StreamSource(
            stream.url, taker.offer_stream, taker.fail_stream, taker.missing_stream,
            shape=shape, max_images=stream.max_images, batch=batch, idle_timeout=stream.idle,
            series_limit=stream.series)
        self.sources.add(self._stream.start())
        return self._stream.counts

    def stop(self) -> None:
        """Stop every source (walks, watcher, stream)."""
        self.sources.stop()

    def offer(self, paths: list[str], why: Why, since: float | None = None) -> int:
        """Offer frame files; returns the frames taken."""
        if not self._taking() or self.taker is None:
            return 0
        try:
            return self.taker.offer(paths, why, since)
        except Exception as exc:  # the ledger's disk is full: the run stops
            if self.disk.check(exc):
                return 0
            raise

    def offer_frames(self, frames: list[FrameAt]) -> int:
        """Offer frames a source located in their files; returns the frames taken."""
        if not self._taking() or self.taker is None:
            return 0
        return self.taker.offer_located(frames)

    def walk(self, why: Why, *, skip: Path | None, since: float | None,
             wait_for_room: Callable[[threading.Event], None]) -> WalkSource:
        """A walk of the directory tree offering every frame for ``why`` (started by the
        caller, on its thread or this one); ``skip``: a folder not entered."""
        started = time.time()
        walk = WalkSource(self.directory, self.pattern,
                          lambda paths, why: self.offer(paths, why, started), why,
                          wait_for_room=wait_for_room, since=since, skip=skip)
        self.sources.add(walk)
        return walk
