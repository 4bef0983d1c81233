"""The driver's CPU by part: a thread's own part and the blocks it charges elsewhere,
counted from thread CPU clocks (so a loaded machine does not change them)."""

from __future__ import annotations

import threading
import time

from saxs_pipeline.pipeline.cpuparts import PARTS, CpuParts


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_threads_part_and_the_blocks_it_charges_elsewhere() -> None:
    parts = CpuParts()
    before = parts.seconds()
    inside = threading.Event()
    go_on = threading.Event()

    def work() -> None:
        with parts.owned("result"):
            burn(0.05)
            with parts.charge("stack row"):
                burn(0.03)
            inside.set()
            go_on.wait(10)

    t = threading.Thread(target=work)
    t.start()
    assert inside.wait(10)
    alive = parts.seconds()  # read from the thread's clock while it runs
    go_on.set()
    t.join(10)
    ended = parts.seconds()  # and kept when it ended
    for now in (alive, ended):
        spent = {p: now[p] - before[p] for p in PARTS}
        assert 0.05 <= spent["result"] < 0.065
        assert 0.03 <= spent["stack row"] < 0.04
        assert sum(spent.values()) < 0.1


def test_a_walk_run_inline_keeps_the_callers_part() -> None:
    parts = CpuParts()
    with parts.owned("batching"):
        with parts.owned("file event"):  # nested: already the batching thread's
            burn(0.02)
    spent = parts.seconds()
    assert spent["file event"] == 0.0 and spent["batching"] >= 0.02
