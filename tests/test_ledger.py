"""The run ledger: states, output-name collisions, commits, the decision rule, reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from saxs_pipeline.pipeline.frames import Fingerprint, FrameRef, FrameSpan
from saxs_pipeline.pipeline.ledger import Ledger, State, Take, Why, read_manifest, wanted
from saxs_pipeline.pipeline.ledgerdb import LedgerError

A, B, C = FrameRef.of("a.tif"), FrameRef.of("sub/b.tif"), FrameRef.of("c.tif")
FP1, FP2 = Fingerprint(100, 1), Fingerprint(100, 2)


def test_take_commit_fail_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "run.ledger"
    led = Ledger(path, "cal-1", {"calibration": {"x": 1}})
    assert led.take([Take(A, FP1, "a"), Take(B, FP1, "sub/b")]) == []
    assert led.counts() == {"pending": 2, "done": 0, "failed": 0}
    led.commit([(A, 0, FP2)], 1)
    led.fail([(B, "broken TIFF", 3)])
    got = led.lookup([A, B, C])
    assert set(got) == {A, B}
    assert got[A].state is State.DONE and got[A].row == 0 and got[A].fingerprint == FP2
    assert got[B].state is State.FAILED and got[B].error == "broken TIFF" and got[B].attempts == 3
    assert led.n_rows == 1 and list(led.iter_done()) == [(A, 0)]
    # taking a done frame again keeps its row (it is updated in place, not doubled)
    led.take([Take(A, FP2, "a")])
    assert led.lookup([A])[A].state is State.PENDING and led.lookup([A])[A].row == 0
    led.close()
    assert read_manifest(path) == ("cal-1", {"calibration": {"x": 1}})
    again = Ledger(path, "cal-1")
    assert again.n_rows == 1 and [e.ref for e in again.entries(State.PENDING)] == [A]
    again.close()
    with pytest.raises(LedgerError, match="belongs to calibration cal-1"):
        Ledger(path, "cal-2")


def test_one_holder_at_a_time(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "run.ledger", "cal")
    with pytest.raises(LedgerError, match="locked"):
        Ledger(tmp_path / "run.ledger", "cal")
    led.close()


def test_output_collisions_are_refused_naming_both_frames(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "run.ledger", "cal")
    refused = led.take([Take(FrameRef.of("a_b.tif"), FP1, "data_a_b"),
                        Take(FrameRef.of("a/b.tif"), FP1, "data_a_b")])
    assert [r.ref for r in refused] == [FrameRef.of("a/b.tif")]
    assert "a_b.tif" in refused[0].reason and "a/b.tif" in refused[0].reason
    assert led.lookup([FrameRef.of("a/b.tif")])[FrameRef.of("a/b.tif")].state is State.FAILED
    led.close()


@pytest.mark.parametrize(("state", "fp", "why", "overwrite", "expected"), [
    (None, FP1, Why.EVENT, True, True),
    (State.PENDING, FP1, Why.RESUME, True, True),  # taken before a crash: redo
    (State.DONE, FP1, Why.EVENT, True, False),  # a repeated event
    (State.DONE, FP2, Why.EVENT, True, True),  # rewritten under the same name
    (State.DONE, FP2, Why.EVENT, False, False),  # ... unless OverwriteFiles is false
    (State.DONE, FP1, Why.WALK, True, True),  # readdir: redo all
    (State.DONE, FP2, Why.RESUME, True, True),
    (State.DONE, FP1, Why.RESUME, True, False),
    (State.FAILED, FP1, Why.EVENT, True, False),  # same bytes: would fail again
    (State.FAILED, FP2, Why.EVENT, True, True),  # a stalled writer finished it
    (State.FAILED, FP1, Why.RESUME, True, True),  # resume completes the set
])
def test_wanted(tmp_path: Path, state, fp, why, overwrite, expected) -> None:
    from saxs_pipeline.pipeline.ledger import Entry

    entry = None if state is None else Entry(A, state, FP1, 0, "a", 1, None, 0.0, 0.0)
    assert wanted(entry, fp, why, overwrite) is expected


def test_adopting_a_stack_without_ledger(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "run.ledger", "cal")
    led.adopt([(A, 0), (B, 1)], 2)
    assert led.n_rows == 2 and led.lookup([B])[B].state is State.DONE
    assert led.lookup([B])[B].fingerprint is None  # unknown: taken as unchanged
    assert not wanted(led.lookup([B])[B], FP2, Why.RESUME, True)
    led.close()


def test_lookup_searches_the_primary_key_not_the_whole_table(tmp_path: Path) -> None:
    # A walk looks every file up: a lookup that scanned the table made a walk of n
    # frames O(n^2) (the 10^5-frame soak's driver slowed down as its ledger grew).
    # SQLite's progress handler counts virtual-machine steps, independent of the machine.
    led = Ledger(tmp_path / "run.ledger", "cal")
    refs = [FrameRef.of(f"f{i:06d}.tif") for i in range(5_000)]
    led.take([Take(r, FP1, f"f{i:06d}") for i, r in enumerate(refs)])
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    led._db.set_progress_handler(count, 100)
    try:
        got = led.lookup([refs[5], refs[4_999], FrameRef.of("missing.tif"), refs[5]])
    finally:
        led._db.set_progress_handler(None, 100)
    assert set(got) == {refs[5], refs[4_999]}
    assert steps[0] < 20, f"{100 * steps[0]} SQLite steps for 4 refs: a table scan?"
    led.close()


def test_frames_that_never_arrived_are_ranges(tmp_path: Path) -> None:
    """A series armed for 10^6 images and ended after 10: one row, counted as 999,990
    failed; a range leaves out the frames the ledger knows and the ranges it holds, and
    taking a frame later cuts it out of its range; all of it survives reopening."""
    path = tmp_path / "run.ledger"
    led = Ledger(path, "cal")
    s = "stream/abc"
    got = [FrameRef(s, i, True) for i in range(10)]
    led.take([Take(r, None, f"stream/abc_{r.index:06d}") for r in got])
    led.commit([(r, r.index, None) for r in got], 10)
    assert led.fail_span(FrameSpan(s, 0, 10**6), "never arrived") == [FrameSpan(s, 10, 10**6)]
    assert led.counts() == {"pending": 0, "done": 10, "failed": 10**6 - 10}
    assert led.gaps() == [(FrameSpan(s, 10, 10**6), "never arrived")]
    assert led.fail_span(FrameSpan(s, 5, 20), "again") == []  # known: nothing doubles
    late = FrameRef(s, 500, True)  # the series sent again: image 500 comes after all
    led.take([Take(late, None, "stream/abc_000500")])
    assert [g for g, _ in led.gaps()] == [FrameSpan(s, 10, 500), FrameSpan(s, 501, 10**6)]
    assert led.counts() == {"pending": 1, "done": 10, "failed": 10**6 - 11}
    led.close()
    again = Ledger(path, "cal")
    assert again.counts()["failed"] == 10**6 - 11
    again.take([Take(FrameRef(s, 10, True), None, "stream/abc_000010")])  # at a range's start
    assert [g for g, _ in again.gaps()][0] == FrameSpan(s, 11, 500)
    again.close()


def test_failures_of_ranges_report_their_count(tmp_path: Path) -> None:
    """``stat``'s failures and ``failures.log`` see a range as one record with its count;
    a frame of it that succeeds later (the series sent again) leaves it."""
    import json

    from saxs_pipeline.pipeline.sinks import FailureSink

    led = Ledger(tmp_path / "run.ledger", "cal")
    sink = FailureSink(led, tmp_path / "failures.log", "q")
    assert sink.fail_span(FrameSpan("stream/a", 10, 100), "never arrived") == 90
    assert sink.fail_span(FrameSpan("stream/a", 50, 120), "never arrived") == 20  # 100..119
    assert sink.count == 110 == led.counts()["failed"]
    sink.clear([FrameRef("stream/a", 50, True), FrameRef("stream/a", 5, True),
                FrameRef("stream/b", 60, True)])
    assert sink.count == 109
    assert sorted((r["frame"], r["stop"], r["count"]) for r in sink.records()) == \
        [(10, 50, 40), (51, 100, 49), (100, 120, 20)]
    lines = [json.loads(line) for line in (tmp_path / "failures.log").read_text().splitlines()]
    assert [(r["file"], r["series"], r["frame"], r["count"]) for r in lines] == \
        [("stream/a", "a", 10, 90), ("stream/a", "a", 100, 20)]
    led.close()
