"""A run's durable store: the curve stack, its ledger and its writer lock, opened together.

The stack for a calibration is ``<outputs>/<name>.zarr``; when that path holds the stack
of another calibration (its ledger says so, or its curve axes differ) this run writes
``<name>-<calibration id>.zarr`` instead: a stack is never overwritten or mixed. A stack
written before stacks had ledgers is adopted: its rows become the ledger's done frames.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saxs_pipeline.pipeline.frames import FrameRef
from saxs_pipeline.pipeline.ledger import Ledger, LedgerError, read_manifest
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


def _owner(stack: Path) -> str | None:
    """The calibration id of the ledger beside ``stack``, None without one."""
    path = ledger_path(stack)
    if not path.exists():
        return None
    try:
        return read_manifest(path)[0]
    except LedgerError:
        return ""  # held by a running writer, or unreadable: the lock tells which


@dataclass
class RunStore:
    stack: Path
    lock: StackLock
    ledger: Ledger
    writer: CurveStackWriter | None = None

    @classmethod
    def open(cls, default: Path, specs: Sequence[CurveSpec], calibration_id: str,
             manifest: dict[str, Any]) -> RunStore:
        """Take the lock and open the ledger of this calibration's stack (see the module
        doc). Raises StackLockedError naming the holder when another run writes it."""
        alt = default.with_name(f"{default.stem}-{calibration_id[:8]}.zarr")
        stack = default
        owner = _owner(default)
        if owner not in (None, "", calibration_id) or (
                owner is None and default.exists() and not stack_compatible(default, specs)):
            log.warning("%s holds curves of another calibration; this run writes %s", default, alt)
            stack = alt
        lock = StackLock(stack)
        lock.acquire()
        try:
            ledger = Ledger(ledger_path(stack), calibration_id, manifest)
        except LedgerError:
            lock.release()
            if stack == alt:
                raise
            log.warning("%s holds curves of another calibration; this run writes %s", default, alt)
            return cls.open(alt, specs, calibration_id, manifest)
        except BaseException:
            lock.release()
            raise
        return cls(stack, lock, ledger)

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
