"""The rates a run prints are over its busy time, first frame taken to last frame done
(issue 21, item 8): the clock itself, and a watching ``saxsdog`` whose waits before and
after its frames do not count."""

from __future__ import annotations

import re
import time

import pytest

from saxs_pipeline.pipeline.busyclock import BusyClock

from procs import saxsdog, stop, wait_until


def test_the_rate_is_frames_over_first_taken_to_last_done() -> None:
    clock = BusyClock()
    clock.taken(100.0)
    clock.taken(101.0)  # later takes do not move the start
    clock.finished(3, 102.0)
    clock.finished(0, 150.0)  # nothing done: the clock does not move
    clock.finished(5, 104.0)
    assert clock.busy == 4.0 and clock.done == 8
    assert clock.rate() == 2.0
    assert clock.describe() == "2.0 frames/s over 4.0 s busy"


def test_no_rate_for_one_frame_or_no_time() -> None:
    assert BusyClock().rate() is None and BusyClock().busy == 0.0
    one = BusyClock()
    one.taken(1.0)
    one.finished(1, 1.5)
    assert one.rate() is None and "fewer than 2 frames" in one.describe()
    instant = BusyClock()
    instant.finished(32, 7.0)  # done without a take seen: the clock starts there
    assert instant.busy == 0.0 and instant.rate() is None
    assert "all done at one instant" in instant.describe()


@pytest.mark.timeout(180)
def test_a_watching_run_reports_its_rate_over_busy_time(saxs_setup, tmp_path) -> None:
    """4 s of waiting before the frames and 4 s after them are not busy time: the busy
    seconds printed lie within the window from writing the first frame to seeing the last
    ``.chi`` (3 s here: the worker's first frame loads its operator), with 1 s for the
    result to reach the driver after its file is seen; the whole run lasted 8 s more."""
    setup = saxs_setup(n_frames=0)
    log = tmp_path / "watch.log"
    t0 = time.monotonic()
    dog = saxsdog(["-c", str(setup.calibration), "-t", "1", "-w", str(setup.data)], log, tmp_path)
    try:
        wait_until(lambda: "watching" in log.read_text(), 90, "watching", [dog])
        time.sleep(4.0)
        t_first = time.monotonic()
        for i in range(6):
            setup.write(i)
        wait_until(lambda: len(list((setup.root / "exp" / "work" / "data").glob("*.chi"))) == 6,
                   60, "the frames", [dog])
        window = time.monotonic() - t_first
        time.sleep(4.0)
        stop([dog])  # SIGTERM: the watch ends as with Ctrl-C
        assert dog.returncode == 0, log.read_text()
    finally:
        stop([dog])
    text = log.read_text()
    assert time.monotonic() - t0 > 8.0
    m = re.search(r"6 frames in [\d.]+ s: ([\d.]+) frames/s over ([\d.]+) s busy", text)
    assert m is not None, text
    assert float(m.group(2)) < window + 1.0, text
