"""A run's durable store: the curve stack, its ledger and its writer lock, opened together.

A stack belongs to one run: one calibration and one data folder (its ledger records both).
The stack of a run is ``<outputs>/<name>.zarr``; when that path holds the stack of
another run (its ledger says so, or its curve axes differ) this run writes
``<name>-<calibration id>.zarr``, and when that one is another's too (a folder of the same
name elsewhere, same calibration) ``<name>-<calibration id>-<folder id>.zarr``: a stack is
never overwritten or mixed, and the suffix names the run's other outputs too
(:mod:`.naming`). A stack written before stacks had ledgers is adopted: its rows become the
ledger's done frames.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saxs_pipeline.pipeline.frames import FrameRef
from saxs_pipeline.pipeline.ledger import Ledger, read_manifest
from saxs_pipeline.pipeline.ledgerdb import LedgerError
from saxs_pipeline.pipeline.lock import StackLock
from saxs_pipeline.stack.layout import CurveSpec, StackLayoutError
from saxs_pipeline.stack.writer import CurveStackWriter, stack_compatible

__all__ = ["RunStore", "ledger_path", "stack_fileslist"]

log = logging.getLogger(__name__)

# Rows per curve-stack block (= chunk). The single writer spends ~0.5 ms CPU per row with
# 64-row blocks and ~0.16 ms with 256 (Pilatus curves; per-flush metadata writes
# dominate). A live queue's time-based flush of a partial block measured 34 ms with 256
# rows and 26 ms with 64, so 256 serves both.
BLOCK_ROWS = 256


def ledger_path(stack: Path) -> Path:
    """``<name>.ledger`` beside ``<name>.zarr``."""
    return stack.with_suffix(".ledger")


def _owner(stack: Path) -> tuple[str, str | None] | str | None:
    """(calibration id, data folder) of the ledger beside ``stack``, None without one."""
    path = ledger_path(stack)
    if not path.exists():
        return None
    try:
        cal_id, manifest = read_manifest(path)
    except LedgerError:
        return ""  # held by a running writer, or unreadable: the lock tells which
    return cal_id, (manifest or {}).get("directory")


def _folder(directory: str, stack: Path) -> str:
    # relative to the outputs: a beamtime moved whole (data and work) is the same run
    return os.path.relpath(os.path.realpath(directory), os.path.realpath(stack.parent))


def _candidates(default: Path, calibration_id: str, directory: str | None) -> list[Path]:
    folder = hashlib.sha256(_folder(directory or "", default).encode()).hexdigest()[:8]
    alt = f"{default.stem}-{calibration_id[:8]}"
    return [default, default.with_name(f"{alt}.zarr"), default.with_name(f"{alt}-{folder}.zarr")]


@dataclass
class RunStore:
    stack: Path
    lock: StackLock
    ledger: Ledger
    default: Path  # the stack path the run asked for
    writer: CurveStackWriter | None = None

    @property
    def suffix(self) -> str:
        """What the run's name has after the default stack's (module doc)."""
        return self.stack.stem[len(self.default.stem):]

    @classmethod
    def open(cls, default: Path, specs: Sequence[CurveSpec], calibration_id: str,
             manifest: dict[str, Any]) -> RunStore:
        """Take the lock and open the ledger of this run's stack (see the module doc).
        Raises StackLockedError naming the holder when another run writes it."""
        directory = manifest.get("directory")
        error: LedgerError | None = None
        for stack in _candidates(default, calibration_id, directory):
            owner = _owner(stack)
            if owner is None and stack.exists() and not stack_compatible(stack, specs):
                continue  # curves of another calibration, from before ledgers
            if isinstance(owner, tuple) and (owner[0] != calibration_id or (
                    owner[1] is not None and directory is not None
                    and _folder(owner[1], stack) != _folder(directory, stack))):
                continue
            lock = StackLock(stack)
            lock.acquire()
            try:
                ledger = Ledger(ledger_path(stack), calibration_id, manifest)
            except LedgerError as exc:  # another calibration's after all
                lock.release()
                error = exc
                continue
            except BaseException:
                lock.release()
                raise
            if stack != default:
                log.warning("%s holds the curves of another run (another calibration or "
                            "data folder); this run writes %s", default, stack)
            return cls(stack, lock, ledger, default)
        raise error or LedgerError(f"{default} and its alternatives hold other runs' curves")

    def open_writer(self, calibration: dict[str, Any], specs: Sequence[CurveSpec]) -> CurveStackWriter:
        """The stack's writer, cut back to what the ledger committed (adopting a stack
        that predates its ledger); a new stack's I and errors get the calibration's
        definitions (:func:`saxs_pipeline.integrator.definitions`) as attributes."""
        from saxs_pipeline.config.calibration import load_calibration
        from saxs_pipeline.integrator import definitions

        n = self.ledger.n_rows
        if n == 0 and self.stack.exists() and not any(True for _ in self.ledger.iter_done()):
            self._adopt()
            n = self.ledger.n_rows
        self.writer = CurveStackWriter.open_or_create(self.stack, calibration, specs,
                                                      block_rows=BLOCK_ROWS, n_valid=n,
                                                      definitions=definitions(load_calibration(calibration)))
        return self.writer

    def _adopt(self) -> None:
        from saxs_pipeline.stack.read import read_stack

        try:
            old = read_stack(self.stack)
        except (StackLayoutError, FileNotFoundError, KeyError):
            return
        rows = [(FrameRef.of(str(name), int(idx)), i)
                for i, (name, idx) in enumerate(zip(old["filename"], old["frame_index"],
                                                    strict=True))]
        if rows:
            self.ledger.adopt(rows, len(rows))
            log.info("curve stack %s had no ledger: %d committed rows adopted", self.stack,
                     len(rows))

    def close(self, status: str = "closed") -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            try:
                self.ledger.close(status)
            finally:
                self.lock.release()

    def export_nxcansas(self, templates: Sequence[Any], layout: str) -> None:
        """The run's radial curves as NXcanSAS beside the stack (after :meth:`close`). A
        failure is logged, not raised: the stack is the record and ``saxs-export`` redoes it."""
        from saxs_pipeline.curves.nxcansas import export_run

        try:
            for path in export_run(self.stack, templates, layout):
                log.info("NXcanSAS %s", path)
        except Exception as exc:
            log.error("writing NXcanSAS beside %s failed: %s (saxs-export redoes it)",
                      self.stack, exc)


def stack_fileslist(stack: Path, layout: Any, templates: Sequence[Any]) -> dict[str, list[str]]:
    """The ``.chi`` files of every committed frame of ``stack``, per curve
    (``{"Radial0": [...], "Slice2": [...]}``), ordered by base name; also after the run."""
    from saxs_pipeline.pipeline.naming import chi_path
    from saxs_pipeline.stack.read import read_frames

    try:
        refs = read_frames(stack)
    except FileNotFoundError:
        refs = []
    bases = sorted(str(layout.basename(FrameRef.of(name, idx))) for name, idx in refs)
    return {f"{t.kind}{t.calnum}": [str(chi_path(b, t.suffix())) for b in bases]
            for t in templates}
