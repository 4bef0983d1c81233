"""The Bluesky consumer on a real in-process Dask cluster, fed the documents of a real
RunEngine directly (the 0MQ path is in test_bluesky_e2e.py): every kind of frame location
reduced once into the run's stack, equal to integrating the frames directly; a consumer
stopped mid-run and a new one taking the run up from its record; the calibration of a run."""

from __future__ import annotations

import copy
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

pytest.importorskip("ophyd_async")

from bluesky import RunEngine  # noqa: E402
from bluesky.plans import count  # noqa: E402
from blueskydet import DATASET, ad_hdf5_detector, filled_detector, frame, make_detector  # noqa: E402
from conftest import make_saxs_setup  # noqa: E402

from saxs_pipeline.bluesky.consumer import BlueskyConsumer, ConsumerOptions  # noqa: E402
from saxs_pipeline.bluesky.record import RunRecord  # noqa: E402
from saxs_pipeline.integrator import Integrator  # noqa: E402
from saxs_pipeline.stack.read import read_stack  # noqa: E402

SHAPE = (64, 48)
N = 12
Docs = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, saxs_operator_cache: Path) -> Any:
    return make_saxs_setup(tmp_path_factory.mktemp("bs"), shape=SHAPE)


@pytest.fixture(scope="module")
def engine() -> RunEngine:
    return RunEngine({})


def _run(engine: RunEngine, dets: list[Any], n: int = N, **md: Any) -> Docs:
    docs: Docs = []
    engine(count(dets, num=n), lambda name, doc: docs.append((name, copy.deepcopy(doc))), **md)
    return docs


def _consumer(client: Any, work: Path, calibration: Path | None = None) -> BlueskyConsumer:
    # the address is never reached: these tests hand the documents over directly
    return BlueskyConsumer(client, ConsumerOptions("tcp://127.0.0.1:9", work, calibration,
                                                   idle=600.0)).start()


def _finish(consumer: BlueskyConsumer, runs: int = 1, timeout: float = 120.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(consumer.finished) < runs:
        assert time.monotonic() < deadline, f"{runs} run(s) not finished in {timeout:g} s"
        time.sleep(0.1)
    consumer.stop()
    return consumer.finished


def _check_stack(stack: Path, frames: dict[int, np.ndarray], calibration: Path) -> None:
    """Each frame once, its curve equal to integrating it directly: rtol 1e-6, the
    float32 rounding of the stored curve (6e-8) with room, far below any real error."""
    st = read_stack(stack)
    assert sorted(st["frame_index"].tolist()) == sorted(frames)
    assert set(st["filename"]) == {"primary"}
    engine = Integrator(calibration)
    for row, index in enumerate(st["frame_index"]):
        want = engine.integrate(frames[int(index)])[0].mean
        np.testing.assert_allclose(st["curves"]["R0"]["I"][row], want, rtol=1e-6, equal_nan=True)


def test_stream_datum_run_reduced_once(inprocess_client: Any, setup: Any, engine: RunEngine,
                                       tmp_path: Path) -> None:
    det = make_detector(tmp_path, SHAPE)
    docs = _run(engine, [det], saxs_calibration=str(setup.calibration))
    consumer = _consumer(inprocess_client, tmp_path / "work")
    for name, doc in docs:
        consumer.handle(name, doc)
    (report,) = _finish(consumer)
    assert report["frames"] == N and report["failed"] == 0 and "stop document" in report["how"]
    with h5py.File(det.writer.path, "r") as f:
        frames = dict(enumerate(f[DATASET][()]))
    _check_stack(Path(report["stack"]), frames, setup.calibration)
    record = RunRecord.load(Path(report["stack"]).parent / "bluesky-run.json")
    assert record.closed and record.start.uid == docs[0][1]["uid"]


@pytest.mark.parametrize("kind", ["datum", "filled"])
def test_ophyd_v1_datum_and_filled_runs_reduced(inprocess_client: Any, setup: Any,
                                                engine: RunEngine, tmp_path: Path,
                                                kind: str) -> None:
    det = ad_hdf5_detector(tmp_path, SHAPE) if kind == "datum" else filled_detector(SHAPE)
    docs = _run(engine, [det])
    consumer = _consumer(inprocess_client, tmp_path / "work", setup.calibration)
    for name, doc in docs:
        consumer.handle(name, doc)
    (report,) = _finish(consumer)
    assert report["frames"] == N and report["failed"] == 0
    if kind == "datum":
        frames = {i: frame(i, SHAPE) for i in range(N)}
    else:  # the frames the events carried
        frames = {d["seq_num"] - 1: np.asarray(d["data"]["img"]) for n, d in docs if n == "event"}
    _check_stack(Path(report["stack"]), frames, setup.calibration)
    if kind == "filled":  # spooled beside the run's outputs, one file per event
        assert len(list(Path(report["stack"]).parent.glob("filled/primary_*.h5"))) == N


def test_a_new_consumer_takes_up_the_run_of_one_stopped_mid_run(
        inprocess_client: Any, setup: Any, engine: RunEngine, tmp_path: Path) -> None:
    det = make_detector(tmp_path, SHAPE)
    docs = _run(engine, [det], saxs_calibration=str(setup.calibration))
    half = next(i for i, (n, d) in enumerate(docs) if n == "event" and d["seq_num"] == N // 2)
    first = _consumer(inprocess_client, tmp_path / "work")
    for name, doc in docs[: half + 1]:
        first.handle(name, doc)
    first.stop()  # the documents up to the stop never reach it: lost, as over 0MQ
    assert first.finished == []
    second = _consumer(inprocess_client, tmp_path / "work")  # takes the run up from its record
    for name, doc in docs[-3:]:  # the last frame's documents and the stop
        second.handle(name, doc)
    (report,) = _finish(second)
    assert report["failed"] == 0
    st = read_stack(Path(report["stack"]))
    assert sorted(st["frame_index"].tolist()) == list(range(N))  # every frame, once


def test_the_calibration_of_a_run(inprocess_client: Any, setup: Any, engine: RunEngine,
                                  tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    det = make_detector(tmp_path, SHAPE)
    consumer = _consumer(inprocess_client, tmp_path / "work")  # no calibration of its own
    caplog.set_level(logging.INFO)
    for name, doc in _run(engine, [det], 2):  # the start names none
        consumer.handle(name, doc)
    for name, doc in _run(engine, [det], 2, saxs_calibration=str(tmp_path / "nope.json")):
        consumer.handle(name, doc)
    small = make_detector(tmp_path, (32, 24))  # not the calibration's Imagesize
    for name, doc in _run(engine, [small], 2, saxs_calibration=str(setup.calibration)):
        consumer.handle(name, doc)
    consumer.stop()
    text = caplog.text
    assert "no calibration (the start document has no saxs_calibration" in text
    assert f"calibration {tmp_path / 'nope.json'} does not exist; not reduced" in text
    assert f"frames of 32x24, but Imagesize of {setup.calibration} is [64, 48]" in text
    assert consumer.finished == [] and not list((tmp_path / "work").glob("*/*.zarr"))


def test_frames_outside_the_frame_roots_are_not_read(inprocess_client: Any, setup: Any,
                                                     engine: RunEngine, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A server's consumer (frame roots set): a run whose detector wrote outside them is
    reported once and not reduced, and the next run, inside them, is reduced whole."""
    base, elsewhere = tmp_path / "base", tmp_path / "elsewhere"
    base.mkdir(), elsewhere.mkdir()
    consumer = BlueskyConsumer(inprocess_client, ConsumerOptions(
        "tcp://127.0.0.1:9", base / "work", setup.calibration, idle=600.0,
        frame_roots=(base,))).start()
    caplog.set_level(logging.INFO)
    outside = make_detector(elsewhere, SHAPE)
    for name, doc in _run(engine, [outside], 4):
        consumer.handle(name, doc)
    inside = make_detector(base, SHAPE)
    for name, doc in _run(engine, [inside], 4):
        consumer.handle(name, doc)
    (report,) = _finish(consumer)
    assert report["frames"] == 4 and report["failed"] == 0
    assert caplog.text.count("outside the base directory and the data roots") == 1
    assert len(list((base / "work").glob("*/*.zarr"))) == 1


def test_runs_ended_while_a_close_and_an_abort_reap_are_reported_once(
        inprocess_client: Any, setup: Any, engine: RunEngine, tmp_path: Path) -> None:
    """A server's ``close`` stops the consumer in one thread and an ``abort`` (or the next
    ``new``) in another, both reaping the closing runs: each run is reported once and
    neither thread fails. Four threads reap while two runs close, with a 10 us switch
    interval so they interleave; bounded by 120 s."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    docs = [*_run(engine, [make_detector(tmp_path / "a", SHAPE)],
                  saxs_calibration=str(setup.calibration)),
            *_run(engine, [make_detector(tmp_path / "b", SHAPE)],
                  saxs_calibration=str(setup.calibration))]
    consumer = _consumer(inprocess_client, tmp_path / "work")
    errors: list[BaseException] = []
    done = threading.Event()

    def reap() -> None:
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            try:
                consumer._reap()
            except BaseException as exc:  # told below, naming it
                errors.append(exc)
                return

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    reapers = [threading.Thread(target=reap) for _ in range(4)]
    try:
        for t in reapers:
            t.start()
        for name, doc in docs:
            consumer.handle(name, doc)
        deadline = time.monotonic() + 120
        while len(consumer.finished) < 2 and not errors and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        for t in reapers:
            t.join(10)
        sys.setswitchinterval(switch)
        consumer.stop()
    assert not errors, errors
    assert sorted(r["uid"] for r in consumer.finished) == \
        sorted(d["uid"] for n, d in docs if n == "start")
