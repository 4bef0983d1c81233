"""The run ledger: the single, durable record of which frames a curve stack holds.

One SQLite file beside each curve stack (``<stack>.ledger`` next to ``<stack>.zarr``) with
one row per frame: its state (``pending`` = taken, not yet committed; ``done``; ``failed``
with the reason), the fingerprint of the file it was integrated from, its row in the
stack and its output base name. ``--resume``, a restarted server and the watcher's "is
this new?" all go by it, never by whether a ``.chi`` file exists. Stream images that never
arrived are failed ranges, one row each (:mod:`saxs_pipeline.pipeline.gaps`).

**Commit protocol** (a crash at any instant leaves ledger and stack consistent): the curve
stack writes a block of rows beyond its committed length first; then one ledger
transaction marks those frames done with their rows and raises ``n_rows``; then the stack's
``n_valid`` attribute follows. On reopening, ``n_rows`` is the truth: longer stack arrays
are cut back to it, and frames still ``pending`` are what a resume redoes.

The SQLite file itself (schema, opening, meta, transactions):
:mod:`saxs_pipeline.pipeline.ledgerdb`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from saxs_pipeline.pipeline import gaps
from saxs_pipeline.pipeline.frames import Fingerprint, FrameRef, FrameSpan
from saxs_pipeline.pipeline.ledgerdb import (
    LedgerError,
    Transaction,
    meta,
    open_db,
    read_meta,
    set_meta,
)

__all__ = ["Entry", "Ledger", "Refusal", "State", "Take", "Why", "read_manifest",
           "wanted"]

log = logging.getLogger(__name__)

_IN_CHUNK = 400  # SQLite's default limit on bound parameters is far above 2 per frame

class State(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Why(StrEnum):
    """Why a frame is offered, which decides whether a known frame is taken again."""

    EVENT = "event"  # the watcher or the feeder says the file is (re)written
    WALK = "walk"  # readdir: "redo all images"
    RESUME = "resume"  # --resume / a restarted server: only what is not done


@dataclass(frozen=True)
class Entry:
    ref: FrameRef
    state: State
    fingerprint: Fingerprint | None
    row: int | None
    output: str | None
    attempts: int
    error: str | None
    taken: float | None
    done: float | None


@dataclass(frozen=True)
class Take:
    """A frame to take: its fingerprint now and its output base name."""

    ref: FrameRef
    fingerprint: Fingerprint | None
    output: str


@dataclass(frozen=True)
class Refusal:
    """A frame that cannot be taken: its output name belongs to another frame."""

    ref: FrameRef
    reason: str


def wanted(entry: Entry | None, fp: Fingerprint | None, why: Why, overwrite: bool,
           since: float | None = None) -> bool:
    """Whether a frame offered for ``why`` must be (re)integrated, given what the ledger
    knows of it (``entry``) and the file's fingerprint now. A walk that started at
    ``since`` redoes what was done before it, not what was done (unchanged) while it ran.
    Frames in flight are the dispatcher's business, not decided here."""
    if entry is None or entry.state is State.PENDING:
        return True
    changed = fp is not None and entry.fingerprint is not None and fp != entry.fingerprint
    if entry.state is State.FAILED:
        # A container's fingerprint is its master's; an event (a data part closed) may
        # have completed the frames that failed, so they are tried again.
        return why is not Why.EVENT or changed or entry.ref.container
    # done
    if not overwrite:
        return False  # OverwriteFiles false: a frame is integrated once, as the original
    if why is Why.WALK:
        return changed or since is None or entry.done is None or entry.done < since
    return changed


def _fp(size: Any, mtime: Any) -> Fingerprint | None:
    return None if size is None or mtime is None else Fingerprint(int(size), int(mtime))


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(FrameRef(row["source"], row["idx"], bool(row["container"])), State(row["state"]),
                 _fp(row["size"], row["mtime_ns"]), row["row"], row["output"], row["attempts"],
                 row["error"], row["taken"], row["done"])


class Ledger:
    """The ledger at ``path`` (see the module doc). Thread-safe; one per run."""

    def __init__(self, path: str | os.PathLike[str], calibration_id: str,
                 manifest: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = open_db(self.path, calibration_id, manifest)
        try:
            self._gapped = gaps.any_gaps(self._db)  # most runs have none: taking a frame skips them
        except sqlite3.OperationalError as exc:
            self._db.close()
            raise LedgerError(f"ledger {self.path} cannot be opened: {exc}") from None
        self._run = self._start_run()

    @property
    def n_rows(self) -> int:
        """Curve-stack rows committed."""
        with self._lock:
            return int(meta(self._db)["n_rows"])

    @property
    def manifest(self) -> dict[str, Any] | None:
        """What a restarted server needs to rebuild the queue (calibration, masks,
        options), as saved by the run that created or last resumed the ledger."""
        with self._lock:
            text = meta(self._db).get("manifest")
        return json.loads(text) if text else None

    def _start_run(self) -> int:
        import socket
        import sys

        with self._lock, Transaction(self._db):
            cur = self._db.execute(
                "INSERT INTO runs (host, pid, started, status, command) VALUES (?, ?, ?, ?, ?)",
                (socket.gethostname(), os.getpid(), time.time(), "running",
                 " ".join(sys.argv)[:500]))
            return int(cur.lastrowid)

    # -- reading -------------------------------------------------------------------------

    def lookup(self, refs: Iterable[FrameRef]) -> dict[FrameRef, Entry]:
        """The entries of those of ``refs`` the ledger knows."""
        refs = list(refs)
        out: dict[FrameRef, Entry] = {}
        with self._lock:
            for k in range(0, len(refs), _IN_CHUNK):
                chunk = refs[k : k + _IN_CHUNK]
                marks = ",".join("(?, ?)" for _ in chunk)
                args = [v for r in chunk for v in (r.source, r.index)]
                # The refs as the outer loop, one primary-key search each: SQLite plans
                # "(source, idx) IN (VALUES ...)" as a scan of the whole table per chunk,
                # which made a walk of n frames O(n^2) (18 ms per 400 refs at 10^5 rows).
                for row in self._db.execute(
                        f"SELECT frames.* FROM (VALUES {marks}) AS v CROSS JOIN frames "
                        "ON frames.source = v.column1 AND frames.idx = v.column2", args):
                    e = _entry(row)
                    out[e.ref] = e
        return out

    def entries(self, state: State | None = None, limit: int | None = None) -> list[Entry]:
        """Entries (of one state), ordered by source and index."""
        sql, args = "SELECT * FROM frames", []
        if state is not None:
            sql += " WHERE state = ?"
            args.append(state.value)
        sql += " ORDER BY source, idx"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            return [_entry(r) for r in self._db.execute(sql, args)]

    def iter_done(self) -> Iterator[tuple[FrameRef, int]]:
        """(frame, row) of every committed frame, in row order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT source, idx, container, row FROM frames WHERE row IS NOT NULL "
                "ORDER BY row").fetchall()
        for r in rows:
            yield FrameRef(r["source"], r["idx"], bool(r["container"])), int(r["row"])

    def counts(self) -> dict[str, int]:
        """Frames per state; the frames of failed ranges count as failed."""
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) AS n FROM frames GROUP BY state")
            out = {s.value: 0 for s in State}
            out.update({r["state"]: r["n"] for r in rows})
            out[State.FAILED.value] += gaps.failed_frames(self._db)
            return out

    def gaps(self) -> list[tuple[FrameSpan, str]]:
        """The failed ranges (frames that never arrived) and their reasons, ordered by
        source and start; a range's frames are expanded only where they are needed."""
        with self._lock:
            return gaps.listed(self._db)

    # -- writing -------------------------------------------------------------------------

    def take(self, items: Sequence[Take]) -> list[Refusal]:
        """Record ``items`` as pending (new frames, or known ones taken again, which keep
        their stack row). Returns the frames refused because their output name belongs to
        another frame; those are recorded as failed with the reason."""
        refused: list[Refusal] = []
        now = time.time()
        with self._lock, Transaction(self._db):
            for t in items:
                if self._gapped:
                    gaps.cut(self._db, t.ref)
                fp = t.fingerprint
                try:
                    self._db.execute(
                        "INSERT INTO frames (source, idx, container, state, size, mtime_ns, "
                        "output, attempts, taken) VALUES (?, ?, ?, 'pending', ?, ?, ?, 0, ?) "
                        "ON CONFLICT (source, idx) DO UPDATE SET state = 'pending', "
                        "size = excluded.size, mtime_ns = excluded.mtime_ns, "
                        "output = excluded.output, error = NULL, taken = excluded.taken",
                        (t.ref.source, t.ref.index, int(t.ref.container),
                         fp.size if fp else None, fp.mtime_ns if fp else None, t.output, now))
                except sqlite3.IntegrityError:
                    owner = self._db.execute("SELECT source, idx, container FROM frames WHERE "
                                             "output = ?", (t.output,)).fetchone()
                    other = FrameRef(owner["source"], owner["idx"], bool(owner["container"]))
                    reason = (f"output {t.output} of frame {t.ref} is already the output of "
                              f"frame {other}; the two would overwrite each other")
                    refused.append(Refusal(t.ref, reason))
                    self._db.execute(
                        "INSERT INTO frames (source, idx, container, state, size, mtime_ns, "
                        "attempts, error, taken) VALUES (?, ?, ?, 'failed', ?, ?, 0, ?, ?) "
                        "ON CONFLICT (source, idx) DO UPDATE SET state = 'failed', "
                        "error = excluded.error",
                        (t.ref.source, t.ref.index, int(t.ref.container),
                         fp.size if fp else None, fp.mtime_ns if fp else None, reason, now))
        return refused

    def fail_span(self, span: FrameSpan, error: str) -> list[FrameSpan]:
        """Record frames that never arrived as failed ranges (one row per range), without
        those the ledger knows already; returns the ranges recorded."""
        with self._lock, Transaction(self._db):
            new = gaps.record(self._db, span, error, time.time())
            self._gapped = self._gapped or bool(new)
        return new

    def commit(self, rows: Sequence[tuple[FrameRef, int, Fingerprint | None]], n_rows: int) -> None:
        """Mark frames done in their stack rows and raise ``n_rows``: the commit point of
        a curve-stack flush (see the module doc)."""
        now = time.time()
        with self._lock, Transaction(self._db):
            self._db.executemany(
                "UPDATE frames SET state = 'done', row = ?, size = coalesce(?, size), "
                "mtime_ns = coalesce(?, mtime_ns), error = NULL, done = ? "
                "WHERE source = ? AND idx = ?",
                [(row, fp.size if fp else None, fp.mtime_ns if fp else None, now, ref.source,
                  ref.index) for ref, row, fp in rows])
            set_meta(self._db, n_rows=str(int(n_rows)))

    def fail(self, items: Sequence[tuple[FrameRef, str, int]]) -> None:
        """Record frames that failed: (frame, reason, attempts). A committed row stays (it
        holds the frame's earlier integration)."""
        now = time.time()
        with self._lock, Transaction(self._db):
            self._db.executemany(
                "UPDATE frames SET state = 'failed', error = ?, attempts = ?, done = ? "
                "WHERE source = ? AND idx = ?",
                [(err, attempts, now, ref.source, ref.index) for ref, err, attempts in items])

    def adopt(self, rows: Sequence[tuple[FrameRef, int]], n_rows: int) -> None:
        """Record the rows of a stack written before it had a ledger (fingerprints
        unknown: treated as unchanged)."""
        with self._lock, Transaction(self._db):
            self._db.executemany(
                "INSERT OR IGNORE INTO frames (source, idx, container, state, row, attempts) "
                "VALUES (?, ?, ?, 'done', ?, 1)",
                [(r.source, r.index, int(r.container), row) for r, row in rows])
            set_meta(self._db, n_rows=str(int(n_rows)))

    def close(self, status: str = "closed") -> None:
        with self._lock:
            if self._db is None:
                return
            try:
                with Transaction(self._db):
                    self._db.execute("UPDATE runs SET ended = ?, status = ? WHERE id = ?",
                                     (time.time(), status, self._run))
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("ledger %s: closing: %s", self.path, exc)
            finally:
                self._db.close()
                self._db = None  # type: ignore[assignment]


def read_manifest(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any] | None]:
    """(calibration id, manifest) of the ledger at ``path``, which nobody may hold open
    (a restarted server reads what its last run saved)."""
    found = read_meta(path)
    manifest = found.get("manifest")
    return found.get("calibration_id", ""), json.loads(manifest) if manifest else None
