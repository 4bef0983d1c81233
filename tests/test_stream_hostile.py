"""A DECTRIS stream that misbehaves -- malformed, hostile and repeated messages, a series
armed for 10^6 images and ended after 10, a receiving socket that fails -- against a real
``saxsdog --stream`` (or an ImageQueue on a real cluster) fed by a real ZeroMQ PUSH socket
on 127.0.0.1. Nothing stops the intake, nothing is lost unrecorded, the first copy of an
image wins, and no process grows past 1 GB while the bombs go through."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cbor2
import numpy as np
import pytest
import zmq

from saxs_pipeline.demo.eiger import demo_frames
from saxs_pipeline.stack.read import read_stack
from saxs_pipeline.stream.codec import encode_end, encode_image, encode_start

from procs import PeakRSS, free_port, saxsdog, stop, wait_until
from streamcases import SHAPE, calibration, image_message, zero_bomb

pytestmark = pytest.mark.timeout(240)

GB = 1e9


def pusher(url: str) -> zmq.Socket:
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.setsockopt(zmq.SNDTIMEO, 60_000)  # the first send waits for the receiver to connect
    push.bind(url)
    return push


def failures(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def integrated(cal: Path, frame: np.ndarray) -> np.ndarray:
    from saxs_pipeline.integrator import Integrator

    return Integrator(cal).integrate(frame, invalid=2**32 - 1)[0].mean


def test_hostile_messages_do_not_stop_the_intake(tmp_path: Path) -> None:
    """Items 1, 3 and 4 of issue 22 through a real ``saxsdog -w --stream``: a start whose
    count is "lots", image number 10^9, an image of another series, three messages that
    are no Stream V2 image, a 6 MB image declaring 1 GiB, an image whose header lies about
    its size, and image 1 sent three times with different data; then a valid series of 20
    is integrated completely. The stack holds image 1's first copy; every refused image
    is a failure naming its series; the repeats are reported once; the peak RSS of the
    driver and of every cluster process stays under 1 GB while the bombs go through."""
    url = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    out.mkdir()
    cal = calibration(tmp_path)
    push = pusher(url)
    dog = saxsdog(["-c", str(cal), "-t", "1", "-w", "--stream", url, "--no-chi",
                   "--stream-idle", "3", str(out)], tmp_path / "saxsdog.log", tmp_path)
    rss = PeakRSS(dog.pid)
    frames = list(demo_frames(24, shape=SHAPE))
    try:
        push.send(cbor2.dumps({"type": "start", "series_id": 1, "series_unique_id": "1",
                               "number_of_images": "lots", "image_size_x": SHAPE[1],
                               "image_size_y": SHAPE[0]}))
        push.send(encode_image(1, 0, frames[0]))
        for copy in (1, 2, 3):  # first copy wins
            push.send(encode_image(1, 1, frames[copy]))
        push.send(encode_image(1, 10**9, frames[4]))  # built a list of 10^9 numbers
        push.send(encode_image(99, 0, frames[4]))  # another series' image
        push.send(b"\xff\xfe")
        push.send(cbor2.dumps([1, 2, 3]))
        push.send(cbor2.dumps({"type": "image", "series_id": 1, "image_id": "x", "data": {}}))
        push.send(image_message(1, 2, (16384, 16384), zero_bomb((16384, 16384))))
        push.send(image_message(1, 3, SHAPE, zero_bomb(SHAPE, nbytes=2**30)))  # header lies
        push.send(encode_image(1, 4, frames[5]))
        push.send(encode_end(1))
        push.send(encode_start(2, number_of_images=20, image_shape=SHAPE))
        for i in range(20):
            push.send(encode_image(2, i, frames[4 + i]))
        push.send(encode_end(2))
        log = out / "failures.log"
        stack = out / "out.zarr"

        def complete() -> bool:
            try:
                return read_stack(stack)["n_valid"] >= 23 and len(failures(log)) >= 4
            except Exception:  # the stack is not created yet, or mid-flush
                return False

        wait_until(complete, 120, "series 2 integrated and the 4 failures recorded", [dog])
    finally:
        stop([dog])
        peaks = rss.stop()
        push.close()
    text = (tmp_path / "saxsdog.log").read_text()
    assert dog.returncode == 1, text  # some frames failed; SIGTERM ended the watch
    assert len(peaks) >= 2 and rss.peak < GB, peaks  # measured: 0.26 GB driver, 0.23 GB worker

    st = read_stack(stack)
    rows = {(f, int(i)): r for r, (f, i) in enumerate(zip(st["filename"], st["frame_index"],
                                                          strict=True))}
    assert sorted(rows) == [("stream/1", i) for i in (0, 1, 4)] + [("stream/2", i) for i in range(20)]
    # image 1's first copy: the same engine on the same frame, so float32 storage is the
    # only difference (rtol 1e-6); the later copies differ from it by far more
    want = integrated(cal, frames[1])
    np.testing.assert_allclose(st["curves"]["R0"]["I"][rows["stream/1", 1]], want, rtol=1e-6,
                               equal_nan=True)
    assert not np.allclose(integrated(cal, frames[3]), want, rtol=1e-3, equal_nan=True)

    by_frame = {(r["file"], r["frame"]): r for r in failures(log)}
    assert set(by_frame) == {("stream/1", 10**9), ("stream/99", 0), ("stream/1", 2), ("stream/1", 3)}
    assert all(r["series"] == r["file"].split("/")[1] for r in by_frame.values())
    assert "beyond the ceiling of 100000000 images" in by_frame["stream/1", 10**9]["error"]
    assert "arrived during series 1" in by_frame["stream/99", 0]["error"]
    assert "has shape (16384, 16384), the calibration's Imagesize is [96, 80]; not decoded" in \
        by_frame["stream/1", 2]["error"]
    assert "header says 1073741824 bytes uncompressed" in by_frame["stream/1", 3]["error"]
    assert "field 'number_of_images' is 'lots', not a count" in text
    # the three share one log format: the first line, then the count and the last (rate limit)
    assert "not CBOR" in text and "2 more message(s) like this one" in text and \
        "'image_id' is str" in text
    assert text.count("repeated image(s) ignored") == 1 and "series 1: 2 repeated" in text
    assert "Traceback" not in text


def test_an_aborted_series_of_a_million_costs_one_range(tmp_path: Path, inprocess_client) -> None:
    """Item 2: a series armed for 10^6 images and ended after 10 is recorded within 1 s
    (the issue's bound; measured 1-4 ms, list-based accounting took 46 s for 10^5) as one
    ledger row counting 999,990 failed frames; ``stat`` counts them and the 2 repeats of
    image 3 (item 3), whose first copy is the one in the stack."""
    from saxs_pipeline.pipeline.ledger import Ledger, read_manifest
    from saxs_pipeline.pipeline.queue import ImageQueue

    url = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    out.mkdir()
    cal = calibration(tmp_path)
    frames = list(demo_frames(12, shape=SHAPE))
    q = ImageQueue(inprocess_client, cal, out, stream=url, write_chi=False, stream_idle=3)
    q.start()
    push = pusher(url)
    try:
        push.send(encode_start(5, number_of_images=10**6, image_shape=SHAPE, series_unique_id="run-5"))
        for i in range(10):
            push.send(encode_image(5, i, frames[i], series_unique_id="run-5"))
        for copy in (10, 11):
            push.send(encode_image(5, 3, frames[copy], series_unique_id="run-5"))
        sent = time.time()  # before the end message: its delivery is part of the cost
        push.send(encode_end(5, "run-5"))
        wait_until(lambda: any(r.get("count") for r in q.failures()), 30, "the range recorded")
        record = next(r for r in q.failures() if r.get("count"))
        assert record["time"] - sent < 1.0, record["time"] - sent
        assert (record["file"], record["series"], record["frame"], record["stop"], record["count"]) == \
            ("stream/run-5", "run-5", 10, 10**6, 10**6 - 10)
        assert "images 10..999999 of series 5 (stream/run-5) never arrived" in record["error"]
        wait_until(lambda: q.progress()["processed"] >= 10, 60, "the 10 images integrated")
        stats = q.stats()
        assert (stats["failed"], stats["duplicates"], stats["images processed"]) == (10**6 - 10, 2, 10)
    finally:
        q.close()
        push.close()
    from saxs_pipeline.pipeline.frames import FrameSpan

    path = q.zarr_path.with_suffix(".ledger")
    led = Ledger(path, read_manifest(path)[0])
    try:
        assert led.counts() == {"pending": 0, "done": 10, "failed": 10**6 - 10}
        assert [g for g, _ in led.gaps()] == [FrameSpan("stream/run-5", 10, 10**6)]
    finally:
        led.close()
    st = read_stack(q.zarr_path)
    row = list(st["frame_index"]).index(3)
    np.testing.assert_allclose(st["curves"]["R0"]["I"][row], integrated(cal, frames[3]), rtol=1e-6,
                               equal_nan=True)
    lines = failures(q.failures_log)
    assert len(lines) == 1 and lines[0]["count"] == 10**6 - 10


def test_a_receiver_that_dies_ends_the_watch_with_status_6(tmp_path: Path, inprocess_client,
                                                           monkeypatch, capsys) -> None:
    """Item 1: no message can end the receiving thread any more, so a socket failing under
    it stands in (its receive raises as a closed socket does). ``saxsdog -w --stream`` then
    stops watching within seconds, says why, and exits with status 6 (it kept printing
    ``watching:``)."""
    from saxs_pipeline.cli.saxsdog import run
    from saxs_pipeline.cli.saxsdog_options import parse_args
    from saxs_pipeline.stream.receiver import StreamReceiver

    def broken(self, timeout: float) -> bytes | None:
        raise zmq.ZMQError(zmq.ENOTSOCK)

    monkeypatch.setattr(StreamReceiver, "receive_raw", broken)
    out = tmp_path / "out"
    out.mkdir()
    opts = parse_args(["-c", str(calibration(tmp_path)), "-w", "-S", "--stream",
                       f"tcp://127.0.0.1:{free_port()}", "--no-chi", "--scheduler",
                       inprocess_client.scheduler.address, str(out)])
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(run(opts)), daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "saxsdog -w kept watching a stream it no longer received"
    from saxs_pipeline.cli.saxsdog_options import EXIT_STREAM

    assert result == [EXIT_STREAM]
    assert "the stream receiver stopped: Socket operation on non-socket" in capsys.readouterr().err


def test_a_series_id_cannot_place_outputs_outside_the_outputs_root(tmp_path: Path) -> None:
    """The unique id comes from the sender and becomes part of output names: ``../..``
    in it wrote ``.chi`` files outside the outputs root."""
    from saxs_pipeline.pipeline.frames import FrameRef
    from saxs_pipeline.pipeline.naming import OutputLayout
    from saxs_pipeline.pipeline.streamsource import series_source

    layout = OutputLayout.make(tmp_path / "data")
    names = set()
    for unique in ("../../../etc/x", "/abs/path", "a\\b:c", ".hidden", "x" * 500, {"no": "str"},
                   "", "run.1", "run.2"):
        source = series_source(7, unique)
        base = layout.basename(FrameRef(source, 3, True))
        assert base.resolve().is_relative_to(layout.root) and base.parent.name == "stream", base
        assert len(source) <= len("stream/") + 100
        names.add(base.name)
    assert len(names) == 8  # "run.1" and "run.2" stay apart (a dot was cut as a suffix)
    assert series_source(7, "f3a9-2c_1") == "stream/f3a9-2c_1"
    assert series_source(7, None) == series_source(7, "") == "stream/7"
