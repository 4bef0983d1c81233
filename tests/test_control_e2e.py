"""End to end on 127.0.0.1: saxsdogserver as a real process (embedded LocalCluster, the
real ImageQueue), saxsleash as a real process and as a client, saxsfeeder as a real
process; ephemeral ports, bounded waits, everything torn down (SIGTERM, no orphans).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zmq
from test_server import (
    SECRET,
    calibration,
    checked,
    original_client_request,
    send_frames,
    valid_mask,
    wait_until,
    write_frames,
)

from saxs_pipeline.config.masks import encode_attachment, write_fit2d_msk
from saxs_pipeline.control.client import LeashClient
from saxs_pipeline.control.feeder import encode_event
from saxs_pipeline.control.netconf import NetEntry, write_network
from saxs_pipeline.frames.tiff import read_image, write_pilatus_tiff
from saxs_pipeline.integrator import Integrator

PY = sys.executable


class Proc:
    """A child process whose output goes to a log file; stopped with SIGTERM."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._fh = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(args, stdout=self._fh, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text()

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 60) -> int:
        children = self.descendants()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait(10)
            for child in children:
                child.kill()
            raise
        finally:
            self._fh.close()
        # Nanny and worker processes must not outlive the server.
        gone, alive = psutil.wait_procs(children, timeout=15)
        for child in alive:
            child.kill()
        assert not alive, f"orphans left: {alive}"
        return code


def wait_ready(path: Path, proc: Proc, timeout: float = 60) -> str:
    assert wait_until(lambda: path.exists() or proc.popen.poll() is not None, timeout), proc.text()
    assert proc.popen.poll() is None, proc.text()
    return path.read_text().strip()


def start_server(root: Path, base: Path, env: dict[str, str], *extra: str) -> tuple[Proc, str]:
    ready = root / f"server-{time.monotonic_ns()}.ready"
    proc = Proc([PY, "-m", "saxs_pipeline.cli.server", "--config", env["SAXSDOG_NETWORK"],
                 "-p", "0", "-t", "2", "--ready-file", str(ready), *extra, str(base)],
                root / f"{ready.stem}.log", env)
    return proc, wait_ready(ready, proc)


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / "base"
        self.base.mkdir()
        (root / "cache").mkdir()
        self.net = write_network(root / "net", [NetEntry(server="tcp://127.0.0.1:0", secret=SECRET)])
        self.env = dict(os.environ, SAXSDOG_NETWORK=str(self.net),
                        SAXS_PIPELINE_CACHE=str(root / "cache"))
        self.env.pop("DISPLAY", None)
        self.mask = root / "mask0.msk"
        write_fit2d_msk(self.mask, valid_mask())

    def calfile(self, directory: str) -> Path:
        path = self.root / f"cal-{directory.replace('/', '_')}.json"
        path.write_text(json.dumps(calibration(directory.split("/"))))
        return path

    def leash(self, url: str, *args: str, timeout: float = 120) -> tuple[int, dict | None, str]:
        """Run saxsleash as a process; exit code, parsed JSON reply, stderr."""
        res = subprocess.run([PY, "-m", "saxs_pipeline.cli.leash", *args, "-S", url],
                             capture_output=True, text=True, env=self.env, timeout=timeout,
                             cwd=self.root)
        out = json.loads(res.stdout) if res.stdout.strip() else None
        return res.returncode, out, res.stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    return Env(tmp_path_factory.mktemp("e2e"))


@pytest.fixture(scope="module")
def feed():
    """The test's own publisher: the module server's -f subscribes to it."""
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close()


@pytest.fixture(scope="module")
def server(env: Env, feed):
    sock, url = feed
    proc, endpoint = start_server(env.root, env.base, env.env, "-w", "-f", url)
    assert sock.poll(20000), "the server never subscribed to the feeder"
    assert sock.recv() == b"\x01"  # XPUB sees the SUB's subscription to everything
    yield endpoint
    assert proc.stop() == 0, proc.text()
    assert "Traceback" not in proc.text(), proc.text()


@pytest.fixture
def leash(server: str):
    with LeashClient(server, SECRET, timeout=60, retries=1) as client:
        yield client


def start_queue(env: Env, url: str, directory: str) -> dict:
    (env.base / directory).mkdir(parents=True, exist_ok=True)
    code, out, err = env.leash(url, "new", str(env.calfile(directory)), str(env.mask), directory)
    assert code == 0, (out, err)
    checked(out)
    assert out["result"] == "new queue"
    return out


def stat(client: LeashClient) -> dict:
    return checked(client.request("stat"))["data"]["stat"]


def processed(client: LeashClient) -> int:
    return stat(client).get("images processed", -1)


def chi_files(env: Env, directory: str) -> list[Path]:
    folder = env.base / directory  # the run's .chi files: work/<its name>/ beside it
    work = folder.parent / "work" / folder.name
    return sorted(work.glob("*.chi")) if work.exists() else []


# --------------------------------------------------------------------------------------


def test_new_watch_stat_plot_get_fileslist(env, server, leash):
    start_queue(env, server, "run1/data")
    frames = write_frames(env.base / "run1" / "data", 12)
    assert wait_until(lambda: processed(leash) == 12, timeout=60), stat(leash)
    assert stat(leash)["queue length"] == 0

    plot = checked(leash.request("plot"))
    assert plot["result"] == "plot"
    # The latest finished frame (two workers may finish out of order), and its curve is
    # the engine's integration of that frame.
    by_stem = {f.stem: f for f in frames}
    frame = by_stem[Path(plot["data"]["filename"]).name]
    assert len(plot["data"]["history"]) == 12
    (graph,) = plot["data"]["graphs"]
    att = encode_attachment(env.mask, filename="mask0.msk")
    expected = Integrator(calibration(["run1", "data"]), [att], cache_dir=False).integrate(
        read_image(frame))[0]
    np.testing.assert_allclose(graph["array"][0], expected.radial, rtol=1e-6)
    np.testing.assert_allclose(graph["array"][1], expected.mean, rtol=1e-5, equal_nan=True)

    got = checked(leash.request("get"))
    assert got["data"]["cal"] == calibration(["run1", "data"])
    (mask,) = got["data"]["attachments"]
    assert mask["filename"] == "mask0.msk"
    assert mask["data"].encode("latin-1") == env.mask.read_bytes()

    files = checked(leash.request("fileslist"))["data"]["fileslist"]
    assert files["Radial0"] == [str(p) for p in chi_files(env, "run1/data")]
    assert len(files["Radial0"]) == 12


def test_readdir_reprocesses_all(env, server, leash):
    start_queue(env, server, "run2/data")
    write_frames(env.base / "run2" / "data", 8)
    assert wait_until(lambda: processed(leash) == 8, timeout=60)
    before = {p: p.stat().st_mtime_ns for p in chi_files(env, "run2/data")}
    time.sleep(0.05)
    reply = checked(leash.request("readdir"))
    assert reply["result"] == "queue restarted with all files"
    assert wait_until(lambda: processed(leash) == 16, timeout=60), stat(leash)
    after = {p: p.stat().st_mtime_ns for p in chi_files(env, "run2/data")}
    assert after.keys() == before.keys() and all(after[p] > before[p] for p in before)


def _stage_and_move(env: Env, directory: str, n: int) -> list[Path]:
    """Write ``n`` frames outside the queue directory, then rename them in at once."""
    staging = env.base / f"{directory}-staging"
    frames = write_frames(staging, n)
    target = env.base / directory
    moved = []
    for f in frames:
        dest = target / f.name
        os.rename(f, dest)
        moved.append(dest)
    return moved


def test_close_finishes_queued_frames_and_ignores_new_ones(env, server, leash):
    start_queue(env, server, "run3/data")
    _stage_and_move(env, "run3/data", 300)
    seen: list[dict] = []

    def all_taken() -> bool:
        seen.append(stat(leash))
        return seen[-1]["images processed"] + seen[-1]["queue length"] == 300

    assert wait_until(all_taken, timeout=30, interval=0.005)
    reply = checked(leash.request("close"))
    print(f"\nclose sent with {seen[-1]['queue length']} frame(s) queued")
    assert reply["result"] == "queue closed"
    assert reply["data"]["stat"]["images processed"] == 300
    assert reply["data"]["stat"]["queue length"] == 0
    late = write_frames(env.base / "run3" / "data", 3, start=1000)
    time.sleep(2)
    assert processed(leash) == 300
    assert len(chi_files(env, "run3/data")) == 300
    assert not any((f.parent.parent / "work" / "data" / f"{f.stem}.chi").exists() for f in late)
    assert checked(leash.request("readdir"))["result"] == "ValueError"


def test_abort_drops_queued_frames(env, server, leash):
    write_frames(env.base / "run4" / "data", 1500)  # before "new": the watcher ignores them
    start_queue(env, server, "run4/data")
    checked(leash.request("readdir"))
    assert wait_until(lambda: processed(leash) >= 16, timeout=60, interval=0.005)
    reply = checked(leash.request("abort"))
    assert reply["result"] == "queue aborted"
    done = reply["data"]["stat"]["images processed"]
    time.sleep(2)
    written = len(chi_files(env, "run4/data"))
    print(f"\nabort: {done} frames counted, {written} .chi files of 1500")
    assert done < 1500 and written < 1500, (done, written)
    assert stat(leash)["images processed"] == done  # nothing counted after the abort


def test_stat_answers_fast_while_readdir_runs(env, server, leash):
    write_frames(env.base / "run5" / "data", 2000)  # before "new": the watcher ignores them
    start_queue(env, server, "run5/data")
    checked(leash.request("readdir"))
    latencies = []
    while True:
        t0 = time.perf_counter()
        s = stat(leash)
        latencies.append(time.perf_counter() - t0)
        if s["images processed"] >= 2000:
            break
        assert len(latencies) < 20000
        time.sleep(0.01)
    lat = np.array(latencies) * 1000
    print(f"\nstat latency during readdir of 2000 frames: n={lat.size} median={np.median(lat):.1f} ms "
          f"p95={np.percentile(lat, 95):.1f} ms max={lat.max():.1f} ms")
    assert lat.size >= 10
    # The server itself needs well under a millisecond per stat (0.3-0.4 ms median, p95
    # 2-6 ms measured inside the process); rare spikes come from other processes starving
    # it of CPU on a shared 2-core machine, so the bound is on 90 % of the replies.
    assert np.percentile(lat, 90) < 50, lat


def test_feeder_events_sent_twice_integrate_once(env, server, leash, feed):
    sock, _url = feed
    frames = write_frames(env.base / "run6" / "data", 100)  # before "new": watch ignores them
    start_queue(env, server, "run6/data")
    for f in frames:
        sock.send(encode_event(str(f)))
        sock.send(encode_event(os.path.relpath(f, env.base)))  # relative to basedir, as the original
    sock.send(encode_event(str(env.root / "elsewhere.tif")))
    assert wait_until(lambda: processed(leash) == 100, timeout=60), stat(leash)
    time.sleep(1.5)
    s = stat(leash)
    assert s["images processed"] == 100 and s["queue length"] == 0 and s["failed"] == 0
    assert len(chi_files(env, "run6/data")) == 100


def test_security_on_the_real_server(env, server):
    url = server
    assert checked(original_client_request(url, SECRET, "stat"))["result"] == "stat"

    def served() -> None:
        assert original_client_request(url, SECRET, "stat")["result"] == "stat"

    refused = [
        (original_client_request(url, "forged", "stat"), "AuthenticationError", "'Wrong signature.'"),
        (original_client_request(url, SECRET, "stat", now=time.time() - 3600),
         "AuthenticationError", "'Untimely request.'"),
        (send_frames(url, [b"z" * (5 * 2**20)]), "ValueError in request", "request too large"),
        (send_frames(url, [b"\x00 not json"]), "ValueError in request", "not valid JSON"),
        (send_frames(url, LeashClient(url, SECRET).frames("stat", {"bogus": 1})),
         "ValidationError in request", "bogus"),
    ]
    frames = LeashClient(url, SECRET, legacy=True).frames("stat")
    send_frames(url, frames)
    refused.append((send_frames(url, frames), "AuthenticationError", "'Replayed request.'"))
    for reply, result, text in refused:
        checked(reply)
        assert reply["result"] == result and text in reply["data"]["Error"], reply
        served()


def test_new_and_stat_name_the_live_page_v2_only(env, server, leash):
    import urllib.request

    from saxs_pipeline.control.compat import V1_DATA_KEYS, V1_STAT_KEYS

    pytest.importorskip("bokeh")
    directory = "run-live/data"
    (env.base / directory).mkdir(parents=True, exist_ok=True)
    code, out, err = env.leash(server, "new", str(env.calfile(directory)), str(env.mask),
                               directory)
    assert code == 0, (out, err)
    url = checked(out)["data"]["dashboard"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/saxs")
    assert f"live page {url}" in err  # saxsleash tells the person; stdout stays JSON
    assert checked(leash.request("stat"))["data"]["dashboard"] == url
    # The original's clients reject unknown keys: a v1-signed reply has none.
    v1 = checked(original_client_request(server, SECRET, "stat"))
    assert set(v1["data"]) <= V1_DATA_KEYS and set(v1["data"]["stat"]) <= set(V1_STAT_KEYS)
    with urllib.request.urlopen(url, timeout=10) as page:
        assert page.status == 200 and b"SAXS live" in page.read()


def test_paths_out_of_basedir_are_refused(env, server, leash, tmp_path):
    outside = tmp_path / "outside"
    write_frames(outside, 2)
    (env.base / "link-out").symlink_to(outside)
    for directory in ("../..", "link-out"):
        code, out, _ = env.leash(server, "listdir", directory)
        assert code == 1 and out["result"] == "PermissionError"
        cal = calibration(directory.split("/"))
        reply = checked(leash.request("new", {"calibration": cal},
                                      [encode_attachment(env.mask, filename="mask0.msk")]))
        assert reply["result"] == "PermissionError"
    start_queue(env, server, "run7/data")
    reply = checked(leash.request("readdir", {"directory": ["..", "..", ".."]}))
    assert reply["result"] == "PermissionError"
    os.rename(env.base / "run7" / "data", env.base / "run7" / "data.old")
    (env.base / "run7" / "data").symlink_to(outside)
    reply = checked(leash.request("readdir"))
    assert reply["result"] == "PermissionError"
    time.sleep(1)
    assert not (outside.parent / "work").exists()


# --------------------------------------------------------------------------------------
# the long one: nobody polls for 60 s while frames arrive through saxsfeeder


def test_no_client_polls_for_60_s_everything_is_processed(tmp_path):
    env = Env(tmp_path)
    det = env.base / "beam" / "data"
    det.mkdir(parents=True)
    feeder_ready = tmp_path / "feeder.ready"
    feeder = Proc([PY, "-m", "saxs_pipeline.cli.feeder", str(det), "-p", "0", "--bind", "127.0.0.1",
                   "--ready-file", str(feeder_ready), "-v"], tmp_path / "feeder.log", env.env)
    server_proc = None
    try:
        feeder_url = wait_ready(feeder_ready, feeder)
        server_proc, url = start_server(tmp_path, env.base, env.env, "-f", feeder_url)
        assert wait_until(lambda: "subscriber joined" in feeder.text(), timeout=30), feeder.text()
        start_queue(env, url, "beam/data")

        # The detector: ~4 frames/s for 55 s, each written in two parts with a pause.
        rng = np.random.default_rng(0)
        written: list[Path] = []
        stop_at = time.monotonic() + 55
        scratch = tmp_path / "scratch.tif"
        while time.monotonic() < stop_at:
            write_pilatus_tiff(scratch, rng.poisson(100, (64, 48)).astype(np.int32))
            data = scratch.read_bytes()
            path = det / f"img_{len(written):05d}.tif"
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(0.05)
                fh.write(data[len(data) // 2:])
            written.append(path)
            time.sleep(0.2)
        time.sleep(5)  # 60 s in all without a single request to the server

        with LeashClient(url, SECRET, timeout=30, retries=1) as client:
            assert wait_until(lambda: processed(client) == len(written), timeout=60), stat(client)
            s = stat(client)
        assert s["failed"] == 0 and s["queue length"] == 0
        assert len(written) > 150
        assert len(chi_files(env, "beam/data")) == len(written)
    finally:
        if server_proc is not None:
            assert server_proc.stop() == 0, server_proc.text()
        assert feeder.stop() == 0, feeder.text()


def test_outdir_and_sigterm_during_a_readdir_leave_no_orphans(tmp_path):
    env = Env(tmp_path)
    out = tmp_path / "out"
    proc, url = start_server(tmp_path, env.base, env.env, "-o", str(out))
    try:
        write_frames(env.base / "big" / "data", 400)
        start_queue(env, url, "big/data")
        with LeashClient(url, SECRET, timeout=30, retries=1) as client:
            checked(client.request("readdir"))
            assert wait_until(lambda: processed(client) > 0, timeout=60)
        assert len(proc.descendants()) >= 2  # nannies and workers of the embedded cluster
        # -o works (the original's server always exited): flattened names in OUTDIR.
        # Batches finish in any order: wait for this one rather than assume it came first.
        assert wait_until((out / "data_frame_00000.chi").exists, timeout=60)
    finally:
        assert proc.stop(timeout=60) == 0, proc.text()
    assert "stopped" in proc.text()

