"""A Bluesky beamline on 127.0.0.1 with real parts: a RunEngine in the test with an
ophyd-async detector writing HDF5 (StreamResource/StreamDatum), bluesky's 0MQ proxy and
``Publisher``, ``saxsdog --bluesky ... --tiled ...`` processes, and a ``tiled serve config``
with a temporary SQLite catalogue. Every process is stopped by its PID.

Frames are 64 x 48 (the functional path; Pilatus-1M frames are in benchmarks/bluesky.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import zmq

pytest.importorskip("ophyd_async")
pytest.importorskip("tiled.server")

from bluesky import RunEngine  # noqa: E402
from bluesky.callbacks.zmq import Publisher  # noqa: E402
from bluesky.plans import count  # noqa: E402
from blueskydet import DATASET, make_detector  # noqa: E402
from bsprocs import BIN, Proc, Tiled, api_key, catalog_config, proxy, wait_until  # noqa: E402
from conftest import make_saxs_setup  # noqa: E402

from saxs_pipeline.bluesky.wire import pack  # noqa: E402
from saxs_pipeline.integrator import Integrator  # noqa: E402
from saxs_pipeline.stack.read import read_stack  # noqa: E402
from saxs_pipeline.tiled.reducedrun import reduced_key  # noqa: E402

from procs import free_port, ledger_counts  # noqa: E402

SHAPE = (64, 48)
IDLE = 4.0  # s: a run without a stop document is closed after this


@dataclass
class Beamline:
    root: Path
    calibration: Path
    raw: Path
    proxy_in: str
    proxy_out: str
    tiled: Tiled
    tiled_args: list[str]
    tiled_port: int
    engine: RunEngine
    publisher: Publisher
    detector: Any
    procs: list[Proc] = field(default_factory=list)

    def consumer(self, name: str) -> Proc:
        """A ``saxsdog --bluesky`` process subscribed and receiving (probed)."""
        env = {"TILED_API_KEY": self.tiled.key, "TILED_RETRY_ATTEMPTS": "2",
               "TILED_RETRY_TIMEOUT": "2"}  # Tiled's client gives up a request in seconds
        work = self.root / name
        p = Proc([BIN / "saxsdog", "--bluesky", self.proxy_out, "--tiled", self.tiled.uri,
                  "-c", self.calibration, "-t", "1", "--bluesky-idle", str(IDLE), work],
                 self.root / f"{name}.log", env=env, cwd=self.root)
        self.procs.append(p)
        p.work = work  # type: ignore[attr-defined]
        p.wait_for("receiving Bluesky documents", 180)
        # 0MQ subscribers join late: documents sent before are lost. Probe until it hears.
        deadline = time.monotonic() + 120
        k = 0
        while p.count("documents arrive") == 0:
            assert time.monotonic() < deadline and p.proc.poll() is None, "".join(p.lines[-20:])
            self.publisher("stop", {"uid": f"probe-{k}", "time": time.time(),
                                    "run_start": f"probe-{name}-{k}", "exit_status": "success"})
            k += 1
            time.sleep(0.1)
        return p

    def run(self, n: int, delay: float = 0.0, *, drop_stop: bool = False,
            events: list[int] | None = None, dets: list[Any] | None = None,
            uid: list[str] | None = None) -> str:
        """A ``count`` plan of ``n`` frames through the proxy; returns the run's uid (also
        put into ``uid`` as soon as the run starts)."""
        uid = [] if uid is None else uid

        def send(name: str, doc: dict[str, Any]) -> None:
            if name == "start":
                uid.append(doc["uid"])
            if name == "event" and events is not None:
                events.append(doc["seq_num"])
            if not (drop_stop and name == "stop"):
                self.publisher(name, doc)

        self.engine(count(dets or [self.detector], num=n, delay=delay), send,
                    saxs_calibration=str(self.calibration))
        return uid[0]


@pytest.fixture(scope="module")
def beamline(tmp_path_factory: pytest.TempPathFactory, saxs_operator_cache: Path
             ) -> Iterator[Beamline]:
    root = tmp_path_factory.mktemp("beamline")
    setup = make_saxs_setup(root, shape=SHAPE)
    raw = root / "raw"
    raw.mkdir()
    proxy_proc, proxy_in, proxy_out = proxy(root / "proxy.log")
    procs = [proxy_proc]
    port = free_port()
    args = ["config", str(catalog_config(root / "tiled", [raw]))]
    tiled = publisher = None
    try:
        tiled = Tiled(args, root / "tiled.log", api_key(), port=port)
        engine = RunEngine({})
        publisher = Publisher(proxy_in.removeprefix("tcp://"), serializer=pack)
        bl = Beamline(root, setup.calibration, raw, proxy_in, proxy_out, tiled, args, port,
                      engine, publisher, make_detector(raw, SHAPE), procs)
        yield bl
    finally:
        # first, while the proxy takes what it still holds: a 0MQ context left to the
        # garbage collector with messages for a peer that is gone blocks it for ever
        # (pyzmq's linger is infinite), and with it whatever test runs then
        if publisher is not None:
            publisher.close()
        for p in procs:
            p.stop()
        if tiled is not None:
            tiled.stop()


@pytest.fixture(scope="module")
def consumer(beamline: Beamline) -> Proc:
    """A consumer that has reduced a first short run (a service that has been running:
    its cluster, plugins and operator are warm)."""
    p = beamline.consumer("work")
    uid = beamline.run(2)
    p.wait_for(rf"run {uid} \(\S+\) reduced: 2 frame\(s\)", 180)
    return p


def _direct(calibration: Path, h5: Path, rows: np.ndarray) -> np.ndarray:
    engine = Integrator(calibration)
    with h5py.File(h5, "r") as f:
        return np.array([engine.integrate(f[DATASET][int(i)])[0].mean for i in rows])


def _n_committed(client: Any, uid: str) -> int:
    key = reduced_key(uid)
    if key not in client:
        return 0
    return int((client[key].metadata.get("summary") or {}).get("n_committed", 0))


def test_count_plan_reduced_once_and_read_live_from_tiled(beamline: Beamline, consumer: Proc) -> None:
    client = beamline.tiled.client()
    seen: list[int] = []
    uid_box: list[str] = []
    done = threading.Event()

    def watch() -> None:  # a notebook polling the reduced run while the plan runs
        watcher = beamline.tiled.client()
        while not done.is_set():
            if uid_box:
                try:
                    seen.append(_n_committed(watcher, uid_box[0]))
                except Exception:  # noqa: BLE001 - created meanwhile: next poll
                    pass
            time.sleep(0.2)

    poller = threading.Thread(target=watch, daemon=True)
    poller.start()
    uid = beamline.run(200, delay=0.1, uid=uid_box)  # 10 frames/s, as SAXS runs go
    done.set()
    poller.join(10)
    consumer.wait_for(rf"run {uid} \(\S+\) reduced: 200 frame\(s\), 0 failed", 240)
    wait_until(lambda: _n_committed(client, uid) == 200, 120, "200 rows in Tiled")
    assert any(0 < n < 200 for n in seen), f"no rows seen while the plan ran: {seen[-10:]}"
    red = client[reduced_key(uid)]
    assert red.metadata["start"]["raw_uid"] == uid
    ds = red["R0"].read()
    assert ds.sizes["frame"] == 200 and ds["q"].attrs["units"] == "1/nm"
    index = ds["frame_index"].values
    assert sorted(index.tolist()) == list(range(200))
    h5 = beamline.detector.writer.path
    # rtol 1e-6: the stack stores float32 (rounding 6e-8); any real error is far larger
    np.testing.assert_allclose(ds["I"].values, _direct(beamline.calibration, h5, index),
                               rtol=1e-6, equal_nan=True)
    stack = next(consumer.work.glob(f"*{uid[:8]}/*.zarr"))  # type: ignore[attr-defined]
    counts = ledger_counts(stack)
    assert counts["done"] == 200 and counts["n_rows"] == 200 and counts["pending"] == 0


def test_a_run_without_stop_is_closed_after_the_idle_time(beamline: Beamline, consumer: Proc) -> None:
    uid = beamline.run(10, drop_stop=True)
    consumer.wait_for(rf"run {uid} \(\S+\) closed: no document for {IDLE:g} s and no stop "
                      "document", 60)
    consumer.wait_for(rf"run {uid} \(\S+\) reduced: 10 frame\(s\)", 60)


def test_a_run_without_the_image_field_is_ignored_with_one_line(beamline: Beamline,
                                                                consumer: Proc) -> None:
    from ophyd.sim import det

    uid = beamline.run(3, dets=[det])
    consumer.wait_for(rf"run {uid} ended .*: no stream has a 2-D field; ignored", 60)
    assert consumer.count(uid) == 1
    assert not list(consumer.work.glob(f"*{uid[:8]}*"))  # type: ignore[attr-defined]


def test_hostile_documents_are_named_and_the_consumer_keeps_serving(beamline: Beamline,
                                                                   consumer: Proc) -> None:
    import pickle

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(beamline.proxy_in)
    try:
        deadline = time.monotonic() + 60
        for k in range(10_000):  # until this socket's messages reach the consumer
            sock.send(b" stop " + pack({"uid": "h", "time": 1.0, "run_start": f"hostile-{k}",
                                        "exit_status": "success"}))
            if consumer.count("run hostile-") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        mark = len(consumer.lines)
        sock.send(b" bogus_name " + pack({"uid": "x"}))
        sock.send(b" start " + pickle.dumps({"uid": "evil", "time": 1.0}))
        sock.send(b" event " + pack({"uid": "e-bad", "time": 1.0}))
        sock.send(b" descriptor [1, 2, 3]")
    finally:
        sock.close()
        ctx.term()
    consumer.wait_for("unknown document name 'bogus_name'", 30, mark)
    consumer.wait_for(r"start document: neither msgpack nor JSON \(pickled\?", 30, mark)
    consumer.wait_for(r"event document e-bad: the document: .* is a required property", 30, mark)
    consumer.wait_for("descriptor document: a list, not a document", 30, mark)
    uid = beamline.run(5)  # still serving
    consumer.wait_for(rf"run {uid} \(\S+\) reduced: 5 frame\(s\), 0 failed", 120)
    assert consumer.proc.poll() is None


def test_sigkill_mid_run_and_restart_every_frame_once(beamline: Beamline) -> None:
    first = beamline.consumer("killed")
    events: list[int] = []
    restarted: list[Proc] = []

    def kill_and_restart() -> None:  # the RunEngine runs in the test's main thread
        wait_until(lambda: len(events) >= 100, 120, "100 frames taken")
        first.kill()  # SIGKILL at about frame 100
        # documents sent while no consumer listens are lost: the restarted one takes the
        # frames from the HDF5 file its run's record names
        second = Proc(first.proc.args, beamline.root / "killed.log", cwd=beamline.root,
                      env={"TILED_API_KEY": beamline.tiled.key, "TILED_RETRY_ATTEMPTS": "2",
                           "TILED_RETRY_TIMEOUT": "2"})
        beamline.procs.append(second)
        restarted.append(second)

    killer = threading.Thread(target=kill_and_restart, daemon=True)
    killer.start()
    uid = beamline.run(200, 0.05, events=events)
    killer.join(130)
    assert restarted and first.proc.returncode == -9
    second = restarted[0]
    second.wait_for("was not finished by the last consumer: taken up", 180)
    second.wait_for(rf"run {uid} \(\S+\) reduced: \d+ frame\(s\), 0 failed", 240)
    stack = next((beamline.root / "killed").glob("*/*.zarr"))
    st = read_stack(stack)
    assert st["n_valid"] == 200 and sorted(st["frame_index"].tolist()) == list(range(200))
    counts = ledger_counts(stack)
    assert counts["done"] == 200 and counts["n_rows"] == 200
    client = beamline.tiled.client()
    wait_until(lambda: _n_committed(client, uid) == 200, 120, "200 rows in Tiled")
    ds = client[reduced_key(uid)]["R0"].read()
    assert sorted(ds["frame_index"].values.tolist()) == list(range(200))


def test_tiled_unreachable_reduction_goes_on_and_is_published_when_back(
        beamline: Beamline, consumer: Proc) -> None:
    beamline.tiled.stop()
    mark = len(consumer.lines)
    uid = beamline.run(30)
    consumer.wait_for(rf"run {uid} \(\S+\) reduced: 30 frame\(s\), 0 failed", 120, mark)
    consumer.wait_for(r"Tiled at \S+ cannot be reached .*: the reduction goes on locally", 60, mark)
    stack = next(consumer.work.glob(f"*{uid[:8]}/*.zarr"))  # type: ignore[attr-defined]
    assert read_stack(stack)["n_valid"] == 30  # reduced locally meanwhile
    beamline.tiled = Tiled(beamline.tiled_args, beamline.root / "tiled-again.log",
                           beamline.tiled.key, port=beamline.tiled_port)
    beamline.procs.append(beamline.tiled.proc)  # stopped by PID with the others
    consumer.wait_for(r"Tiled at \S+ is back after", 120, mark)
    assert consumer.count("cannot be reached") - sum(
        "cannot be reached" in line for line in consumer.lines[:mark]) == 1  # one clear message
    client = beamline.tiled.client()
    wait_until(lambda: _n_committed(client, uid) == 30, 60, "the run published after the outage")
    assert sorted(client[reduced_key(uid)]["R0"].read()["frame_index"].values.tolist()) == \
        list(range(30))
