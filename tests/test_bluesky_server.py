"""``saxsdogserver``'s ``new`` with a Bluesky source, on 127.0.0.1 with real processes:
the server (embedded LocalCluster), ``saxsleash new --bluesky`` and the client library,
bluesky's 0MQ proxy, and a RunEngine in the test with an ophyd-async detector writing
HDF5. Every process is stopped by its PID. Frames are 64 x 48."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

pytest.importorskip("ophyd_async")

from bluesky import RunEngine  # noqa: E402
from bluesky.callbacks.zmq import Publisher  # noqa: E402
from bluesky.plans import count  # noqa: E402
from blueskydet import DATASET, make_detector  # noqa: E402
from bsprocs import Tiled, api_key, catalog_config, proxy  # noqa: E402
from test_control_e2e import Env, start_server  # noqa: E402
from test_faults_server import kill_tree  # noqa: E402
from test_server import SECRET, calibration, checked, wait_until  # noqa: E402

from saxs_pipeline.bluesky.wire import pack  # noqa: E402
from saxs_pipeline.config.masks import encode_attachment  # noqa: E402
from saxs_pipeline.control.client import LeashClient  # noqa: E402
from saxs_pipeline.integrator import Integrator  # noqa: E402
from saxs_pipeline.stack.read import read_stack  # noqa: E402

SHAPE = (64, 48)  # test_server's calibration


@dataclass
class Site:
    env: Env
    url: str  # the server's
    log: Any  # the server process
    proxy_out: str
    engine: RunEngine
    publisher: Publisher
    detector: Any
    library: Path

    def client(self) -> LeashClient:
        return LeashClient(self.url, SECRET, timeout=120, retries=1)

    def run(self, n: int, delay: float = 0.0, **md: Any) -> str:
        uid: list[str] = []

        def send(name: str, doc: dict[str, Any]) -> None:
            if name == "start":
                uid.append(doc["uid"])
            self.publisher(name, doc)

        self.engine(count([self.detector], num=n, delay=delay), send, **md)
        return uid[0]

    def hears(self, mark: int, server: Any = None) -> None:
        """Until the server's consumer hears the proxy: 0MQ subscribers join late and
        documents sent before are lost. Probed with stop documents of no run."""
        server = server or self.log
        deadline = time.monotonic() + 120
        for k in range(100_000):
            if "documents arrive" in server.text()[mark:]:
                return
            assert time.monotonic() < deadline and server.popen.poll() is None, \
                server.text()[-3000:]
            self.publisher("stop", {"uid": f"probe-{k}", "time": time.time(),
                                    "run_start": f"probe-{k}", "exit_status": "success"})
            time.sleep(0.1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    env = Env(tmp_path_factory.mktemp("bsserver"))
    (env.base / "runs").mkdir()
    raw = env.root / "raw"  # the detector's folder, outside the server's base directory
    raw.mkdir()
    library = env.root / "calibrations"
    library.mkdir()
    far = calibration(["runs"])
    far["Geometry"]["DedectorDistanceMM"] = 150.0
    far["Masks"][0]["MaskFile"] = str(env.mask)
    (library / "far.json").write_text(json.dumps(far))
    proxy_proc, proxy_in, proxy_out = proxy(env.root / "proxy.log")
    server = publisher = None
    try:
        server, url = start_server(env.root, env.base, env.env, "--calibrations", str(library))
        engine = RunEngine({})
        publisher = Publisher(proxy_in.removeprefix("tcp://"), serializer=pack)
        yield Site(env, url, server, proxy_out, engine, publisher, make_detector(raw, SHAPE),
                   library)
    finally:
        if publisher is not None:  # before the proxy goes (see test_bluesky_e2e)
            publisher.close()
        if server is not None:
            assert server.stop() == 0, server.text()[-3000:]
            assert "Traceback" not in server.text(), server.text()
        proxy_proc.stop()


def _runs(client: LeashClient) -> list[dict[str, Any]]:
    return checked(client.request("stat"))["data"]["stat"].get("runs", [])


def _reduced(client: LeashClient, uid: str, n: int | None,
             timeout: float = 120) -> dict[str, Any]:
    """Run ``uid``'s report once it was reduced (with ``n`` frames by this queue)."""
    def done() -> dict[str, Any] | None:
        return next((r for r in _runs(client) if r["uid"] == uid and r["state"] == "reduced"
                     and n in (None, r["frames"])), None)

    assert wait_until(done, timeout, 0.3), _runs(client)
    return done()


def test_a_bad_source_is_refused_naming_the_field(site: Site) -> None:
    att = encode_attachment(site.env.mask, filename="mask0.msk")
    with site.client() as client:
        for address in ("http://127.0.0.1:5578", "tcp://127.0.0.1", "tcp://127.0.0.1:99999"):
            reply = checked(client.request("new", {"calibration": calibration(["runs"]),
                                                   "bluesky": {"address": address}}, [att]))
            assert reply["result"] == "ValidationError in request", reply
            assert "$.argument.bluesky.address" in reply["data"]["Error"], reply
        reply = checked(client.request("new", {"calibration": calibration(["runs"]),
                                               "bluesky": {"address": site.proxy_out,
                                                           "idle": -1}}, [att]))
        assert "$.argument.bluesky.idle" in reply["data"]["Error"], reply
        assert checked(client.request("stat"))["result"] == "stat"  # still serving


def test_new_reduces_runs_until_close(site: Site) -> None:
    env, mark = site.env, len(site.log.text())
    code, out, err = env.leash(site.url, "new", "--bluesky", site.proxy_out,
                               str(env.calfile("runs")), str(env.mask), "runs")
    assert code == 0 and out["result"] == "new queue", (out, err)
    site.hears(mark)
    with site.client() as client:
        uid = site.run(6)  # no saxs_calibration: the request's calibration
        report = _reduced(client, uid, 6)
        assert report["failed"] == 0 and "stop document" in report["how"]
        stack = Path(report["stack"])
        assert stack.parent.parent == env.base / "runs"  # the calibration's Directory
        st = read_stack(stack)
        assert sorted(st["frame_index"].tolist()) == list(range(6))
        att = encode_attachment(env.mask, filename="mask0.msk")
        engine = Integrator(calibration(["runs"]), [att], cache_dir=False)
        with h5py.File(site.detector.writer.path, "r") as f:
            frames = f[DATASET][()]
        # rtol 1e-6: the stack stores float32 (rounding 6e-8); any real error is far larger
        for row, index in enumerate(st["frame_index"]):
            np.testing.assert_allclose(st["curves"]["R0"]["I"][row],
                                       engine.integrate(frames[int(index)])[0].mean,
                                       rtol=1e-6, equal_nan=True)
        plot = checked(client.request("plot"))  # the latest run's latest frame
        assert plot["result"] == "plot" and plot["data"]["graphs"]

        far = site.run(3, saxs_calibration="far")  # an id of the server's --calibrations
        report = _reduced(client, far, 3)
        assert read_stack(Path(report["stack"]))["calibration"]["Geometry"][
            "DedectorDistanceMM"] == 150.0

        closed = checked(client.request("close"))
        assert closed["result"] == "queue closed", closed
        assert {r["uid"] for r in closed["data"]["stat"]["runs"]} >= {uid, far}
        late = site.run(2)  # no one listens: not reduced
        time.sleep(2.0)
        assert late not in {r["uid"] for r in _runs(client)}
        assert not list((env.base / "runs").glob(f"*{late[:8]}*"))



def test_abort_mid_run_and_a_new_takes_the_run_up_every_frame_once(site: Site) -> None:
    att = encode_attachment(site.env.mask, filename="mask0.msk")
    argument = {"calibration": calibration(["runs"]),
                "bluesky": {"address": site.proxy_out, "idle": 5.0}}
    mark = len(site.log.text())
    with site.client() as client:
        assert checked(client.request("new", argument, [att]))["result"] == "new queue"
    site.hears(mark)
    replies: list[dict[str, Any]] = []

    def abort_and_new() -> None:  # the RunEngine runs in the test's main thread
        with site.client() as client:
            assert wait_until(lambda: any(r["state"] == "reducing" and r["frames"] >= 8
                                          for r in _runs(client)), 120, 0.1)
            replies.append(checked(client.request("abort")))
            # the run's record is open: the new queue takes it up, its frames from the file
            replies.append(checked(client.request("new", argument, [att])))

    side = threading.Thread(target=abort_and_new, daemon=True)
    side.start()
    uid = site.run(60, delay=0.1)
    side.join(150)
    assert [r["result"] for r in replies] == ["queue aborted", "new queue"], replies
    with site.client() as client:
        # the stop may come before the new consumer hears: then the idle time closes it
        report = _reduced(client, uid, None)  # frames: those the new queue did
    st = read_stack(Path(report["stack"]))
    assert st["n_valid"] == 60 and sorted(st["frame_index"].tolist()) == list(range(60))
    assert "was not finished by the last consumer: taken up" in site.log.text()[mark:]


def test_the_server_s_bluesky_options_are_checked(tmp_path: Path) -> None:
    from saxs_pipeline.cli.server import build_parser, config_from_args
    from saxs_pipeline.control.netconf import NetEntry, write_network

    net = write_network(tmp_path / "net", [NetEntry(server="tcp://127.0.0.1:0", secret=SECRET)])

    def config(*extra: str) -> Any:
        return config_from_args(build_parser().parse_args(["--config", str(net), *extra,
                                                           str(tmp_path)]))

    cfg = config("--bluesky-override", "energy=mono_energy,distance", "--calibrations",
                 str(tmp_path), "--tiled", "http://127.0.0.1:8000")
    assert cfg.bluesky_overrides == (("energy", "mono_energy"), ("distance", "distance"))
    assert cfg.calibrations == tmp_path and cfg.tiled == "http://127.0.0.1:8000"
    assert config().bluesky_overrides == ()  # never unless asked
    with pytest.raises(ValueError, match="'wavelength' cannot be overridden"):
        config("--bluesky-override", "wavelength=lam")
    with pytest.raises(ValueError, match="--calibrations .*nowhere: not a directory"):
        config("--calibrations", str(tmp_path / "nowhere"))


def test_a_server_killed_mid_run_subscribes_again_and_finishes_the_run(
        site: Site, tmp_path: Path) -> None:
    env = Env(tmp_path)  # a server of its own: this one is SIGKILLed
    (env.base / "runs").mkdir()
    server, url = start_server(env.root, env.base, env.env)
    restarted: list[tuple[Any, str]] = []
    try:
        with LeashClient(url, SECRET, timeout=120, retries=1) as client:
            reply = client.request("new", {"calibration": calibration(["runs"]), "bluesky": {
                "address": site.proxy_out, "idle": 5.0}},
                [encode_attachment(env.mask, filename="mask0.msk")])
            assert reply["result"] == "new queue", reply
        site.hears(0, server)

        def kill_and_restart() -> None:  # the RunEngine runs in the test's main thread
            with LeashClient(url, SECRET, timeout=120, retries=1) as client:
                assert wait_until(lambda: any(r["frames"] >= 10 for r in _runs(client)),
                                  120, 0.1)
            kill_tree(server)
            restarted.append(start_server(env.root, env.base, env.env))

        side = threading.Thread(target=kill_and_restart, daemon=True)
        side.start()
        uid = site.run(60, delay=0.1)
        side.join(150)
        assert restarted, "the server was not killed and started again"
        again, url = restarted[0]
        assert wait_until(lambda: "took up Bluesky queue" in again.text(), 60), again.text()
        with LeashClient(url, SECRET, timeout=120, retries=1) as client:
            # documents sent while no server listened are lost: the frames come from the
            # file the run's record names, and silence (5 s) or its stop closes the run
            report = _reduced(client, uid, None)
        st = read_stack(Path(report["stack"]))
        assert st["n_valid"] == 60 and sorted(st["frame_index"].tolist()) == list(range(60))
    finally:
        if server.popen.poll() is None:
            kill_tree(server)
        for proc, _ in restarted:
            assert proc.stop() == 0, proc.text()[-3000:]
            assert "Traceback" not in proc.text(), proc.text()


def test_runs_published_to_tiled_with_the_energy_of_their_start(site: Site,
                                                                tmp_path: Path) -> None:
    pytest.importorskip("tiled.server")
    from saxs_pipeline.bluesky.geometry import wavelength_a
    from saxs_pipeline.tiled.reducedrun import reduced_key

    env = Env(tmp_path)
    (env.base / "runs").mkdir()
    tiled = Tiled(["config", str(catalog_config(tmp_path / "tiled", [tmp_path]))],
                  tmp_path / "tiled.log", api_key())
    server = None
    try:
        server, url = start_server(env.root, env.base, dict(env.env, TILED_API_KEY=tiled.key),
                                   "--tiled", tiled.uri, "--bluesky-override", "energy=mono_energy")
        att = encode_attachment(env.mask, filename="mask0.msk")
        with LeashClient(url, SECRET, timeout=120, retries=1) as client:
            reply = client.request("new", {"calibration": calibration(["runs"]),
                                           "bluesky": {"address": site.proxy_out}}, [att])
            assert reply["result"] == "new queue", reply
            site.hears(0, server)
            uid = site.run(4, mono_energy=15.0)
            _reduced(client, uid, 4)
        tc = tiled.client()

        def published() -> bool:
            key = reduced_key(uid)
            return key in tc and tc[key].metadata["summary"]["n_committed"] == 4

        assert wait_until(published, 60, 0.3), server.text()[-3000:]
        red = tc[reduced_key(uid)]
        start = red.metadata["start"]
        assert start["geometry_override"]["Wavelength"] == {
            "Calibration": 1.54, "EnergyKeV": 15.0, "FromMetadata": "mono_energy"}
        assert start["calibration_source"] == "the server's calibration"
        assert start["calibration"]["Wavelength"] == pytest.approx(wavelength_a(15.0), rel=1e-12)
        # q = 4 pi sin(theta) / lambda, theta the geometry's: the calibration's q scaled by
        # 1.54 A / lambda(15 keV); rtol 1e-6 holds the float32 q of the stack
        q_cal = Integrator(calibration(["runs"]), [att], cache_dir=False).integrate(
            np.zeros(SHAPE))[0].radial
        np.testing.assert_allclose(red["R0"].read()["q"].values, q_cal * 1.54 / wavelength_a(15.0),
                                   rtol=1e-6)
    finally:
        if server is not None:
            assert server.stop() == 0, server.text()[-3000:]
            assert "Traceback" not in server.text(), server.text()
        tiled.stop()
