"""A DECTRIS Stream V2 through the pipeline, as real processes on 127.0.0.1:
``saxs-stream-sim`` replays frames at a given rate and ``saxsdog --stream`` integrates them,
every image number exactly once; a dropped image is reported; a series that stops before
its end message does not hang the run; a message that is not a Stream V2 image is
reported and the rest goes on."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq

from saxs_pipeline.demo.eiger import demo_frames
from saxs_pipeline.stack.read import read_stack

from procs import BIN, free_port, saxsdog, spawn, stop, wait_until
from streamcases import SHAPE, calibration

pytestmark = pytest.mark.timeout(240)


def run(tmp: Path, sim_args: list[str], n: int, *dog_args: str):
    out = tmp / "out"  # saxsdog --stream creates it: the outputs folder (issue 21)
    # The simulator first, on a port it picks (no free_port() race), waiting for its
    # receiver as a detector does. Its send timeout also bounds saxsdog's start-up (a
    # cluster of 2 processes: the 30 s default can be too short for it on a loaded 2-core
    # machine when both were started together); the send goes the moment saxsdog connects.
    sim_log = tmp / "sim.log"
    sim = spawn([str(BIN / "saxs-stream-sim"), "--bind", "tcp://127.0.0.1:*", "--demo", str(n),
                 "--shape", *map(str, SHAPE), "--send-timeout", "120", *sim_args], sim_log)
    dog = None
    try:
        wait_until(lambda: "PUSH tcp://" in sim_log.read_text(), 60, "the simulator bound", [sim])
        url = sim_log.read_text().split("PUSH ", 1)[1].split()[0]
        dog = saxsdog(["-c", str(calibration(tmp)), "-t", "2", "--stream", url, "--no-chi",
                       "--stream-idle", "3", *dog_args, str(out)], tmp / "saxsdog.log", tmp)
        # the simulator prepares every message first: 2000 demo frames take 50 s (the
        # model's profile costs 23 ms a frame at any shape), more on a loaded machine
        assert sim.wait(200) == 0, sim_log.read_text()
        assert dog.wait(120) in (0, 1), (tmp / "saxsdog.log").read_text()
    finally:
        stop([p for p in (sim, dog) if p is not None])
    # a stream run writes its outputs into the folder it is given, nothing beside it
    assert {"out.zarr", "out.ledger"} <= {p.name for p in out.iterdir()}
    assert not (tmp / "work").exists() and not (tmp / "results").exists()
    return dog.returncode, (tmp / "saxsdog.log").read_text(), out / "out.zarr"


@pytest.mark.timeout(300)
def test_2000_frames_at_200_per_second_each_once(tmp_path) -> None:
    code, log, stack = run(tmp_path, ["--rate", "250"], 2000)
    assert code == 0, log
    st = read_stack(stack)
    assert st["n_valid"] == 2000
    assert sorted(st["frame_index"]) == list(range(2000))
    assert len(set(st["filename"])) == 1 and st["filename"][0].startswith("stream/")
    expected = list(itertools.islice(demo_frames(2000, shape=SHAPE), 3))  # as the simulator made them
    from saxs_pipeline.integrator import Integrator

    engine = Integrator(tmp_path / "cal.json")
    rows = {int(i): r for r, i in enumerate(st["frame_index"])}
    for i, frame in enumerate(expected):
        want = engine.integrate(frame, invalid=2**32 - 1)[0].mean
        np.testing.assert_allclose(st["curves"]["R0"]["I"][rows[i]], want, rtol=1e-6,
                                   equal_nan=True)


def test_a_dropped_image_is_reported(tmp_path) -> None:
    code, log, stack = run(tmp_path, ["--drop", "17"], 100)
    assert code == 1
    assert "image 17 of series" in log and "never arrived" in log
    st = read_stack(stack)
    assert st["n_valid"] == 99 and 17 not in set(st["frame_index"].tolist())


def test_a_series_that_stops_early_does_not_hang(tmp_path) -> None:
    code, log, stack = run(tmp_path, ["--stop-after", "40"], 100)  # a hang fails its wait
    assert code == 1
    assert "without an end message" in log
    assert read_stack(stack)["n_valid"] == 40
    assert "images 40..99 of series 1" in log  # one range, not 60 lines
    records = [json.loads(line) for line in (tmp_path / "out" / "failures.log").read_text().splitlines()]
    assert [(r["file"], r["series"], r["frame"], r["stop"], r["count"]) for r in records] == \
        [("stream/1", "1", 40, 100, 60)]


def test_a_message_of_the_wrong_type_is_reported_and_the_rest_goes_on(tmp_path) -> None:
    import cbor2

    from saxs_pipeline.stream.codec import encode_end, encode_image, encode_start

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = tmp_path / "out"
    out.mkdir()
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.bind(url)
    dog = saxsdog(["-c", str(calibration(tmp_path)), "-t", "1", "--stream", url, "--no-chi",
                   "--stream-idle", "3", str(out)], tmp_path / "saxsdog.log", tmp_path)
    try:
        frames = list(demo_frames(5, shape=SHAPE))
        push.send(encode_start(7, number_of_images=5, image_shape=SHAPE))
        for i, f in enumerate(frames[:2]):
            push.send(encode_image(7, i, f))
        push.send(cbor2.dumps({"type": "status", "series_id": 7}))  # not a Stream V2 message
        push.send(cbor2.dumps([1, 2, 3]))
        for i, f in enumerate(frames[2:], start=2):
            push.send(encode_image(7, i, f))
        push.send(encode_end(7))
        assert dog.wait(120) == 0, (tmp_path / "saxsdog.log").read_text()
    finally:
        stop([dog])
        push.close()
    log = (tmp_path / "saxsdog.log").read_text()
    assert "has type 'status'" in log and "not a map" in log
    assert read_stack(out / "out.zarr")["n_valid"] == 5
    assert sys.executable  # the processes above ran on this interpreter's scripts
