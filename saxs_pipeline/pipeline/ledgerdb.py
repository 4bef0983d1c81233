"""The ledger's SQLite file (:mod:`saxs_pipeline.pipeline.ledger` keeps the records in
it): its schema, how it is opened, its ``meta`` table (format, calibration, committed
rows, the run's manifest) and its transactions.

SQLite in WAL mode with ``locking_mode=EXCLUSIVE``: no shared-memory index, so it also works
on network file systems, and the connection holds the file for its lifetime (the stack's
:class:`~saxs_pipeline.pipeline.lock.StackLock` says who). ``synchronous=NORMAL``: a
committed transaction survives the process being killed; after a power loss the last
commits may be rolled back, which the ledger's commit protocol turns into frames to redo.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from saxs_pipeline.pipeline import gaps

__all__ = ["FORMAT", "LedgerError", "Transaction", "meta", "open_db", "read_meta", "set_meta"]

FORMAT = "saxs_pipeline.ledger/1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    source TEXT NOT NULL,
    idx INTEGER NOT NULL,
    container INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    row INTEGER UNIQUE,
    output TEXT UNIQUE,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    taken REAL,
    done REAL,
    PRIMARY KEY (source, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS frames_state ON frames (state);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, host TEXT, pid INTEGER, started REAL, ended REAL, status TEXT,
    command TEXT);
"""


class LedgerError(RuntimeError):
    """A ledger that cannot be used for this run (another calibration, a newer format)."""


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on an exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def meta(db: sqlite3.Connection) -> dict[str, str]:
    return {r[0]: r[1] for r in db.execute("SELECT key, value FROM meta")}


def set_meta(db: sqlite3.Connection, **values: str) -> None:
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))


def open_db(path: Path, calibration_id: str, manifest: dict[str, Any] | None) -> sqlite3.Connection:
    """The ledger at ``path`` opened for a run of ``calibration_id`` (created when new;
    ``manifest`` saved when given); LedgerError when it cannot be opened or belongs to
    another calibration or format."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA + gaps.SCHEMA)
        _init_meta(db, path, calibration_id, manifest)
    except sqlite3.OperationalError as exc:
        db.close()
        raise LedgerError(f"ledger {path} cannot be opened: {exc}") from None
    except BaseException:
        db.close()
        raise
    return db


def _init_meta(db: sqlite3.Connection, path: Path, calibration_id: str,
               manifest: dict[str, Any] | None) -> None:
    found = meta(db)
    if not found:
        with Transaction(db):
            set_meta(db, format=FORMAT, calibration_id=calibration_id, n_rows="0",
                     created=repr(time.time()))
        found = meta(db)
    if found.get("format") != FORMAT:
        raise LedgerError(f"ledger {path} has format {found.get('format')!r}, "
                          f"this version writes {FORMAT!r}")
    if found.get("calibration_id") != calibration_id:
        raise LedgerError(
            f"ledger {path} belongs to calibration {found.get('calibration_id')}, "
            f"not {calibration_id} (a new calibration writes a new stack)")
    if manifest is not None:
        with Transaction(db):
            set_meta(db, manifest=json.dumps(manifest))


def read_meta(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``meta`` table of the ledger at ``path``, which nobody may hold open."""
    if not Path(path).exists():
        raise LedgerError(f"ledger {path} does not exist")
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        return meta(db)
    except sqlite3.Error as exc:
        raise LedgerError(f"ledger {path} cannot be read: {exc}") from None
    finally:
        db.close()
