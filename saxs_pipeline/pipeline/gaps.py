"""Failed ranges in the run ledger: stream images that never arrived, one row per range
``[start, stop)`` of one source (table ``gaps``, with the reason), so a series armed for
10⁶ images and ended after 10 costs one row. Ranges never overlap each other or a
frame's row: a range is recorded without the frames the ledger knows, and taking a frame
cuts it out of its range. Functions on the ledger's SQLite connection, called by
:class:`~saxs_pipeline.pipeline.ledger.Ledger` under its lock and in its transactions.
"""

from __future__ import annotations

import sqlite3

from saxs_pipeline.pipeline.frames import FrameRef, FrameSpan
from saxs_pipeline.stream.spans import holes

__all__ = ["SCHEMA", "any_gaps", "cut", "failed_frames", "listed", "record"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS gaps (
    source TEXT NOT NULL,
    start INTEGER NOT NULL,
    stop INTEGER NOT NULL,
    error TEXT NOT NULL,
    time REAL,
    PRIMARY KEY (source, start)
) WITHOUT ROWID;
"""

_INSERT = "INSERT INTO gaps (source, start, stop, error, time) VALUES (?, ?, ?, ?, ?)"


def any_gaps(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM gaps LIMIT 1").fetchone() is not None


def failed_frames(db: sqlite3.Connection) -> int:
    """How many frames the ranges hold."""
    return int(db.execute("SELECT sum(stop - start) FROM gaps").fetchone()[0] or 0)


def listed(db: sqlite3.Connection) -> list[tuple[FrameSpan, str]]:
    """The ranges and their reasons, ordered by source and start."""
    return [(FrameSpan(source, start, stop), error) for source, start, stop, error in
            db.execute("SELECT source, start, stop, error FROM gaps ORDER BY source, start")]


def record(db: sqlite3.Connection, span: FrameSpan, error: str, now: float) -> list[FrameSpan]:
    """Record ``span`` without the frames known already (as frames or in ranges); returns
    the ranges recorded."""
    known = [(idx, idx + 1) for (idx,) in db.execute(
        "SELECT idx FROM frames WHERE source = ? AND idx >= ? AND idx < ?",
        (span.source, span.start, span.stop))]
    known += [(lo, hi) for lo, hi in db.execute(
        "SELECT start, stop FROM gaps WHERE source = ? AND start < ? AND stop > ?",
        (span.source, span.stop, span.start))]
    new = [FrameSpan(span.source, lo, hi) for lo, hi in holes(sorted(known), span.start, span.stop)]
    db.executemany(_INSERT, [(g.source, g.start, g.stop, error, now) for g in new])
    return new


def cut(db: sqlite3.Connection, ref: FrameRef) -> None:
    """Take ``ref`` out of the range holding it (a series sent again)."""
    row = db.execute("SELECT start, stop, error, time FROM gaps WHERE source = ? AND start <= ? "
                     "ORDER BY start DESC LIMIT 1", (ref.source, ref.index)).fetchone()
    if row is None or ref.index >= row[1]:
        return
    start, stop, error, when = row
    db.execute("DELETE FROM gaps WHERE source = ? AND start = ?", (ref.source, start))
    db.executemany(_INSERT, [(ref.source, lo, hi, error, when) for lo, hi in
                             ((start, ref.index), (ref.index + 1, stop)) if lo < hi])
