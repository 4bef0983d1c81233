"""Receiver on real zmq sockets on 127.0.0.1 (ephemeral ports), fed by the simulator in a
thread. Every loop is bounded by timeouts; every socket and thread is closed/joined."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from saxs_pipeline.stream.messages import EndMessage, ImageMessage, StartMessage
from saxs_pipeline.stream.receiver import StreamReceiver
from saxs_pipeline.stream.sim import StreamSimulator

N = 6


def _stack() -> np.ndarray:
    stack = np.random.default_rng(4).poisson(30, (N, 24, 18)).astype(np.uint32)
    stack[:, 3, :] = np.iinfo(np.uint32).max
    return stack


@pytest.fixture
def pair() -> Iterator[tuple[StreamSimulator, StreamReceiver]]:
    sim = StreamSimulator("tcp://127.0.0.1:*", send_timeout=5.0)
    rx = StreamReceiver(sim.endpoint, poll_interval=0.02)
    yield sim, rx
    rx.stop()
    rx.close()
    sim.close()


def _run(sim: StreamSimulator, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=sim.send_series, args=(iter(_stack()), N), kwargs=kwargs, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("compression", ["bslz4", "none"])
def test_frames_arrive_equal_to_the_source(pair, compression: str) -> None:
    sim, rx = pair
    thread = _run(sim, compression=compression, rate=200.0)
    messages = list(rx.series(idle_timeout=5.0))
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(messages[0], StartMessage) and messages[0].image_shape == (24, 18)
    assert isinstance(messages[-1], EndMessage)
    images = [m for m in messages if isinstance(m, ImageMessage)]
    assert [m.image_number for m in images] == list(range(N))
    for m, ref in zip(images, _stack(), strict=True):
        np.testing.assert_array_equal(m.array, ref)  # exact: lossless codec
    assert rx.tracker.ended and rx.tracker.missing() == []


def test_dropped_image_is_detected(pair) -> None:
    sim, rx = pair
    thread = _run(sim, drop=[2, 5])
    numbers = [m.image_number for m in rx.series(idle_timeout=5.0) if isinstance(m, ImageMessage)]
    thread.join(10)
    assert numbers == [0, 1, 3, 4]
    assert rx.tracker.gaps() == [(2, 3)] and rx.tracker.missing() == [(2, 3), (5, 6)]
    assert rx.tracker.ended


def test_series_without_end_times_out(pair) -> None:
    sim, rx = pair
    thread = _run(sim, stop_after=3)
    t0 = time.monotonic()
    messages = list(rx.series(idle_timeout=0.5))
    elapsed = time.monotonic() - t0
    thread.join(10)
    assert [type(m).__name__ for m in messages] == ["StartMessage"] + ["ImageMessage"] * 3
    assert rx.tracker.timed_out and not rx.tracker.ended
    assert rx.tracker.missing() == [(3, 6)]
    assert elapsed < 5.0  # bounded: the idle timeout, not a hang


def test_stop_from_another_thread_ends_a_wait(pair) -> None:
    _sim, rx = pair
    timer = threading.Timer(0.2, rx.stop)
    timer.start()
    t0 = time.monotonic()
    assert rx.receive(timeout=10.0) is None
    assert time.monotonic() - t0 < 2.0
    timer.join()


def test_bad_message_is_recorded_not_fatal(pair) -> None:
    sim, rx = pair
    sim._socket.send(b"\xff\xfe")
    thread = _run(sim)
    messages = list(rx.series(idle_timeout=5.0))
    thread.join(10)
    assert len([m for m in messages if isinstance(m, ImageMessage)]) == N
    assert any("not CBOR" in e for e in rx.tracker.errors)
