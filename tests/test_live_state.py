"""The live view's data path without a cluster: what a driver's LiveFeed gathers and
sends, and what the scheduler's QueueLive keeps of it (modules saxs_pipeline.live.feed
and saxs_pipeline.live.state)."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np
import pytest

from saxs_pipeline.integrator import Curve
from saxs_pipeline.live import feed as feed_module
from saxs_pipeline.live.feed import (
    MAX_CURVES_PER_PUSH,
    PICTURE_INTERVAL,
    LiveFeed,
    calibration_summary,
)
from saxs_pipeline.live.state import FPS_WINDOW, OVERLAY, WATERFALL, QueueLive, decode
from saxs_pipeline.ops.picture import frame_picture
from saxs_pipeline.pipeline.frames import FrameRef
from saxs_pipeline.pipeline.jobs import Job
from saxs_pipeline.pipeline.tasktypes import CurveData, FrameResult

NQ = 20
Q = np.linspace(0.1, 2.0, NQ)


def template() -> Curve:
    return Curve("Radial", 0, Q, Q, Q, None, {}, ["q", "I", "err"])


def result(i: int, closed: float) -> tuple[Job, FrameResult]:
    curve = CurveData(template().key, np.full(NQ, 1.0 + i, np.float32),
                      np.full(NQ, 0.1, np.float32), None, {"I0": 10.0 + i, "I1": 1.0, "I2": 2.0})
    r = FrameResult("ok", fingerprint=(100, int(closed * 1e9)), processed_time=closed + 0.25,
                    curves=[curve], integration_time=0.004)
    return Job(FrameRef(f"/d/frame_{i:05d}.tif"), f"/d/frame_{i:05d}.tif",
               f"/w/frame_{i:05d}"), r


def feed(counts: dict[str, int] | None = None) -> LiveFeed:
    def no_client():
        raise ConnectionError("no cluster in this test")

    return LiveFeed("q1", no_client, [template()], calibration_summary(
        {"Geometry": {"DedectorDistanceMM": 1000.0}, "Wavelength": 1.54, "Masks": [{}]}, "cal-id"),
        lambda: counts or {"backlog": 3, "retried": 1})


def test_feed_message_carries_what_the_results_had() -> None:
    f = feed()
    now = time.time()
    f.add([result(i, now) for i in range(3)] + [(result(9, now)[0], FrameResult("error"))])
    f.fail({"file": "/d/bad.tif", "frame": 0, "error": "broken", "attempts": 3, "time": now})
    msg = f.message()
    assert (msg["processed"], msg["failed"], msg["backlog"], msg["retried"]) == (3, 1, 3, 1)
    assert msg["calibration"] == {"id": "cal-id", "I_unit": "counts/pixel", "distance_mm": 1000.0,
                                  "wavelength": 1.54, "masks": 1, "slices": 0}
    assert msg["axis"] == ["q", "1/nm"] and "picture" not in msg
    np.testing.assert_array_equal(decode(msg["q"]), Q.astype(np.float32))
    assert [c["name"] for c in msg["curves"]] == ["frame_00000", "frame_00001", "frame_00002"]
    np.testing.assert_array_equal(decode(msg["curves"][2]["I"]), np.full(NQ, 3.0, np.float32))
    frame = msg["frames"][1]
    assert frame["latency"] == pytest.approx(0.25, abs=1e-6)  # mtime -> written
    assert frame["integration"] == 0.004 and frame["I0"] == 11.0
    assert msg["failures"] == [{"file": "/d/bad.tif", "frame": 0, "error": "broken", "time": now}]
    # taken: the next message has only the totals; a failed push keeps sending the axis
    assert not f.push()
    again = f.message()
    assert again["frames"] == [] and again["curves"] == [] and again["processed"] == 3
    assert "q" in again


def test_feed_caps_the_curves_of_one_push_not_the_frames() -> None:
    f = feed()
    f.add([result(i, time.time()) for i in range(MAX_CURVES_PER_PUSH + 10)])
    msg = f.message()
    assert len(msg["frames"]) == MAX_CURVES_PER_PUSH + 10  # every frame counts in /metrics
    assert len(msg["curves"]) == MAX_CURVES_PER_PUSH
    assert msg["curves"][-1]["name"] == f"frame_{MAX_CURVES_PER_PUSH + 9:05d}"  # the newest


def test_feed_asks_for_a_picture_at_most_every_interval_and_pushes_the_latest(
        monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(feed_module, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                             time=time.time))
    f, live = feed(), QueueLive("q1")
    assert f.picture_due() and not f.picture_due()  # one task of those submitted now
    clock[0] += PICTURE_INTERVAL
    assert f.picture_due()
    pairs = [result(i, time.time()) for i in range(3)]
    for i in (0, 1):  # two tasks' pictures in one push: only the newer one goes
        pairs[i][1].picture = frame_picture(np.full((6, 4), 10.0 + i), long_side=4)
    f.add(pairs)
    live.push(f.message())
    assert live.picture_name == "frame_00001" and live.pictures_total == 1
    assert live.picture.shape == (6, 4) and live.picture.block == 2
    version = live.version
    live.push(f.message())  # sent once: the next push has none and changes nothing
    assert live.pictures_total == 1 and live.version == version
    assert calibration_summary({"Normalisation": {"AbsoluteScale": 2.0}}, "c")["I_unit"] == "1/cm"


def test_queue_live_is_bounded_and_counts_every_frame() -> None:
    f, live = feed(), QueueLive("q1")
    now = time.time()
    for start in range(0, WATERFALL + 50, 25):
        f.add([result(i, now) for i in range(start, start + 25)])
        live.push(f.message())
    n = len(range(0, WATERFALL + 50, 25)) * 25
    assert live.processed == n and live.latency.count == n and live.integration.count == n
    assert len(live.waterfall) == WATERFALL and len(live.curves) == OVERLAY + 1
    assert live.series_total == n and live.latest_name == f"frame_{n - 1:05d}"
    assert live.backlog == 3 and live.retried == 1
    p50, p99 = live.latency_percentiles()
    assert p50 == pytest.approx(0.25, abs=1e-3) and p99 == pytest.approx(0.25, abs=1e-3)
    assert live.fps(now) == pytest.approx(n / FPS_WINDOW)
    assert live.fps(now + FPS_WINDOW + 1) == 0.0  # nothing in the window any more
    summary = live.summary()
    assert summary["points"] == n and summary["calibration"]["id"] == "cal-id"


def test_another_axis_starts_the_map_again() -> None:
    live = QueueLive("q1")
    f = feed()
    f.add([result(0, time.time())])
    live.push(f.message())
    assert len(live.waterfall) == 1
    live.push({"queue": "q1", "q": np.linspace(0, 1, NQ + 5, dtype=np.float32).tobytes(),
               "curves": [{"name": "old-shape", "I": np.ones(NQ, np.float32).tobytes()}]})
    assert len(live.q) == NQ + 5 and len(live.waterfall) == 0  # old rows do not fit
    assert live.latest_name == "frame_00000"  # a curve of the wrong length is dropped
    assert math.isnan(QueueLive("empty").latency_percentiles()[0])


def test_an_idle_push_changes_no_version() -> None:
    # a page redraws on a new version: the pushes of an idle queue must not make one
    live = QueueLive("q")
    live.push({"queue": "q", "processed": 0, "backlog": 0, "q": Q.astype(np.float32).tobytes()})
    v = live.version
    live.push({"queue": "q", "processed": 0, "backlog": 0, "frames": [], "curves": []})
    assert live.version == v
    live.push({"queue": "q", "processed": 0, "backlog": 1})
    assert live.version == v + 1


def test_curves_are_thinned_to_a_point_per_pixel_of_the_log_axis() -> None:
    pytest.importorskip("bokeh")
    from saxs_pipeline.live.view import display_index

    q = np.linspace(0.0, 0.5, 2000)  # detector bins: linear in q, the first at q = 0
    idx = display_index(q, columns=300)
    assert 0 < len(idx) <= 300 and q[idx[0]] == q[1] and idx[-1] >= 1900
    assert np.all(np.diff(idx) > 0)
    # the sparse low-q bins are all kept: there each pixel holds at most one
    assert set(range(1, 6)) <= set(idx.tolist())
