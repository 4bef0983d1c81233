"""Taking frames: what the sources offer, decided by the ledger, handed to the dispatcher.

For every offered path the finder lists its frames; a frame already on its way is not
taken twice (a changed one is run once more after); a frame done but not yet committed
counts as done; the ledger's :func:`~saxs_pipeline.pipeline.ledger.wanted` decides the
rest, and records what it takes (refusing output names that belong to another frame).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from saxs_pipeline.pipeline.busyclock import BusyClock
from saxs_pipeline.pipeline.dispatcher import Dispatcher
from saxs_pipeline.pipeline.finder import Found, FrameFinder
from saxs_pipeline.pipeline.frames import Fingerprint, FrameAt, FrameRef, FrameSpan, fingerprint
from saxs_pipeline.pipeline.jobs import Job
from saxs_pipeline.pipeline.ledger import Ledger, State, Take, Why, wanted
from saxs_pipeline.pipeline.naming import OutputLayout
from saxs_pipeline.pipeline.sinks import FailureSink, StackSink

__all__ = ["Taker"]

log = logging.getLogger(__name__)

Offered = dict[FrameRef, tuple[str, Any, int | None]]  # frame -> (path, fingerprint, row)


class Taker:
    """See the module doc; counts what it took and what it skipped as done."""

    def __init__(self, layout: OutputLayout, finder: FrameFinder, ledger: Ledger,
                 dispatcher: Dispatcher, stack: StackSink, failures: FailureSink, *,
                 overwrite: bool, stream: str | None = None,
                 clock: BusyClock | None = None) -> None:
        self.layout, self.finder, self.ledger = layout, finder, ledger
        self.clock = clock  # started by the first frame taken (the run's busy time)
        self.dispatcher, self.stack, self.failures = dispatcher, stack, failures
        self.overwrite, self.stream = overwrite, stream
        self._lock = threading.Lock()
        # One offer at a time, from its checks (on its way? done?) to its jobs being on
        # their way: a start-up walk and the watcher offering one new file at once had
        # both found it neither, and it was integrated twice, into two stack rows.
        self._offering = threading.Lock()
        self.accepted = 0
        self.skipped = 0

    def offer(self, paths: list[str], why: Why, since: float | None = None) -> int:
        """Take the frames of ``paths``; returns how many were taken. ``since``: the
        start of the walk offering them (frames done since, unchanged, are not redone)."""
        with self._offering:
            return self._offer(paths, why, since)

    def _offer(self, paths: list[str], why: Why, since: float | None) -> int:
        refs: Offered = {}
        for p in paths:
            found = self.finder.find(p)
            if found is None:
                continue
            fp = fingerprint(found.path)
            if found.error is not None:
                self._unlisted(FrameRef.of(self.layout.source(found.path) or p), found, fp)
                continue
            for ref in found.refs:
                if ref in refs:
                    continue
                if why is not Why.WALK and self.dispatcher.touch(ref, fp):
                    continue  # on its way already; changed files are run once more after
                if self.dispatcher.active(ref):
                    continue
                # Done but not yet committed: the ledger still says pending. Looked at
                # before the ledger, which gets the row only when it is committed.
                # A walk redoes what was done before it started, not what was done since.
                buffered = self.stack.buffered(ref)
                if buffered is not None and (ref.container or fp is None or fp == buffered[1]) \
                        and (why is not Why.WALK or since is None or buffered[2] >= since):
                    continue
                refs[ref] = (found.path, fp, buffered[0] if buffered else None)
        return self._take(refs, why, since=since)

    def offer_stream(self, items: list[tuple[FrameRef, bytes]]) -> int:
        """Stream frames and their messages; of a repeated image number the first copy
        counts (the source drops repeats; the ledger ignores a number already done)."""
        payloads: dict[FrameRef, bytes] = {}
        for ref, payload in items:
            payloads.setdefault(ref, payload)
        with self._offering:
            refs: Offered = {ref: (self.stream or "", None, None) for ref in payloads
                             if not self.dispatcher.active(ref)
                             and self.stack.buffered(ref) is None}
            return self._take(refs, Why.EVENT, payloads)

    def offer_located(self, frames: list[FrameAt]) -> int:
        """Frames whose file and row the source names (a Bluesky run): the ledger takes
        each (stream, frame index) once; a frame done or on its way is ignored."""
        with self._offering:
            at = {f.ref: f for f in frames
                  if not self.dispatcher.active(f.ref) and self.stack.buffered(f.ref) is None}
            return self._take({ref: (f.path, None, None) for ref, f in at.items()}, Why.EVENT,
                              located=at)

    def relist(self, done: list[tuple[Job, Any]]) -> int:
        """Take the frames of files whose frame 0, offered alone while they could not be
        counted, has been read (``done``: frames read): they can be counted now."""
        paths = sorted({j.path for j, _ in done if j.ref.container and self.finder.stood_in(j.path)})
        return self.offer(paths, Why.EVENT) if paths else 0

    def _unlisted(self, ref: FrameRef, found: Found, fp: Fingerprint | None) -> None:
        """A file whose frames cannot be listed: failed as its frame 0, in the ledger too
        (taken first: the ledger records failures of frames it has)."""
        self.ledger.take([Take(ref, fp, self.layout.output(ref))])
        self.failures.fail(ref, found.error or "", 1, found.path)

    def fail_stream(self, ref: FrameRef, reason: str) -> None:
        """A stream image that cannot be taken (refused by its series' accounting, or its
        message failed): recorded as failed with the reason, unless it is done."""
        known = self.ledger.lookup([ref])
        if ref in known and known[ref].state is State.DONE:
            return
        self.ledger.take([Take(ref, None, self.layout.output(ref))])
        self.failures.fail(ref, reason, 0, self.stream or "")

    def missing_stream(self, span: FrameSpan, reason: str) -> None:
        """Stream images that never came: one failed range, however many they are."""
        self.failures.fail_span(span, reason)

    def pending_paths(self) -> list[str]:
        """Files of the frames the ledger has taken but not committed (a resume)."""
        paths = {str(self.layout.frame_path(e.ref)) for e in self.ledger.entries(State.PENDING)
                 if not e.ref.source.startswith("stream/")}
        if paths:
            log.info("frames of %d file(s) pending in the ledger %s are taken again", len(paths),
                     self.ledger.path)
        return sorted(paths)

    def _take(self, refs: Offered, why: Why, payloads: dict[FrameRef, bytes] | None = None,
              since: float | None = None, located: dict[FrameRef, FrameAt] | None = None) -> int:
        known = self.ledger.lookup(refs)
        takes = [Take(ref, fp, self.layout.output(ref)) for ref, (_, fp, _) in refs.items()
                 if wanted(known.get(ref), fp, why, self.overwrite, since)]
        refused = {r.ref: r.reason for r in self.ledger.take(takes)}
        jobs = []
        for t in takes:
            path, _, buffered = refs[t.ref]
            if t.ref in refused:
                self.failures.fail(t.ref, refused[t.ref], 0, path)
                continue
            entry = known.get(t.ref)
            row = entry.row if entry is not None and entry.row is not None else buffered
            at = located.get(t.ref) if located else None
            jobs.append(Job(t.ref, path, str(self.layout.basename(t.ref)), row=row,
                            fingerprint=t.fingerprint,
                            payload=payloads.get(t.ref) if payloads else None,
                            file_index=at.index if at else None,
                            image_time=at.time if at else None))
        if jobs and self.clock is not None:
            self.clock.taken()
        self.dispatcher.put(jobs)
        with self._lock:
            self.accepted += len(jobs)
            self.skipped += len(refs) - len(takes)
        return len(jobs)
