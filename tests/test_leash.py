"""saxsleash: the CLI against a server loop in a thread (stand-in queue), and the
lazy-pirate client against a server that is down."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from matplotlib.figure import Figure
from test_server import (  # _fresh_instances: the autouse fixture, shared
    SECRET,
    FakeQueue,
    ServerThread,
    _fresh_instances,  # noqa: F401
    calibration,
    make_server,
    wait_until,
    write_frames,
    write_masks,
)

from saxs_pipeline.cli import leash
from saxs_pipeline.control.client import LeashClient, ServerUnavailable
from saxs_pipeline.control.netconf import NetEntry, write_network
from saxs_pipeline.control.server import SaxsdogServer, ServerConfig


@pytest.fixture
def base(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    (base / "data").mkdir(parents=True)
    return base


@pytest.fixture
def server(base: Path, tmp_path: Path, monkeypatch):
    st = make_server(base)
    net = write_network(tmp_path / "net", [NetEntry(server="tcp://127.0.0.1:1", secret="wrong"),
                                           NetEntry(server=st.url, secret=SECRET)])
    monkeypatch.setenv("SAXSDOG_NETWORK", str(net))
    yield st
    st.stop()


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = leash.main(list(argv))
    captured = capsys.readouterr()
    out = json.loads(captured.out) if captured.out.strip() else None
    return code, out, captured.err


@pytest.fixture
def calfiles(tmp_path: Path) -> Path:
    """A calibration file whose MaskFile entries lie beside it."""
    where = tmp_path / "cal"
    where.mkdir()
    write_masks(where, 2)
    (where / "cal.json").write_text(json.dumps(calibration(["data"], masks=2)))
    return where


def test_stat_prints_indented_json(server, capsys):
    code, out, _ = run(capsys, "stat", "-N", "1")
    assert code == 0 and out == {"result": "stat", "data": {"stat": {}}}
    code = leash.main(["stat", "-N", "1"])
    assert '\n    "result": "stat"' in capsys.readouterr().out


def test_server_override_and_legacy_signature(server, capsys):
    code, out, _ = run(capsys, "stat", "-S", server.url, "--legacy-sign")  # entry 0's secret is wrong
    assert code == 1 and out["data"]["Error"] == "'Wrong signature.'"
    code, out, _ = run(capsys, "stat", "-N", "1", "--legacy-sign")
    assert code == 0 and out["result"] == "stat"


def test_new_with_explicit_masks_and_directory(server, base, calfiles, capsys):
    cal, m0, m1 = calfiles / "cal.json", calfiles / "mask0.msk", calfiles / "mask1.msk"
    (base / "run2").mkdir()
    code, out, _ = run(capsys, "new", str(cal), str(m0), str(m1), "run2", "-N", "1")
    assert code == 0 and out["result"] == "new queue"
    q = FakeQueue.instances[-1]
    assert q.directory == (base / "run2").resolve()
    assert [a["filename"] for a in q.attachments] == ["mask0.msk", "mask1.msk"]
    assert q.attachments[0]["data"].encode("latin-1") == m0.read_bytes()


def test_new_reads_masks_named_in_the_calibration(server, base, calfiles, capsys, monkeypatch):
    monkeypatch.chdir(base)  # mask paths resolve beside the calibration, not in the CWD
    code, out, _ = run(capsys, "new", str(calfiles / "cal.json"), "-N", "1")
    assert code == 0, out
    assert FakeQueue.instances[-1].directory == (base / "data").resolve()
    (base / "other").mkdir()
    code, out, _ = run(capsys, "new", str(calfiles / "cal.json"), "other", "-N", "1")
    assert code == 0 and FakeQueue.instances[-1].directory == (base / "other").resolve()


def test_new_input_errors(server, calfiles, capsys):
    code, _, err = run(capsys, "new", str(calfiles / "cal.json"), str(calfiles / "mask0.msk"),
                       "x", "data", "-N", "1")
    assert code == 1 and "x: cannot be read" in err
    code, _, err = run(capsys, "new", str(calfiles / "cal.json"), str(calfiles / "mask0.msk"),
                       "data", "-N", "1")
    assert code == 1 and "2 Masks entries but 1 mask file(s)" in err
    (calfiles / "bad.json").write_text('{"Geometry": {}}')
    code, _, err = run(capsys, "new", str(calfiles / "bad.json"), "-N", "1")
    assert code == 1 and "Wavelength" in err


def test_error_replies_exit_1_and_listdir(server, base, capsys):
    code, out, _ = run(capsys, "readdir", "-N", "1")
    assert code == 1 and out["result"] == "ValueError"
    (base / "data" / "sub").mkdir()
    code, out, _ = run(capsys, "listdir", "data", "-N", "1")
    assert code == 0 and out["data"]["dircontent"] == [{"isdir": True, "path": "sub"}]
    code, out, _ = run(capsys, "listdir", "../..", "-N", "1")
    assert code == 1 and out["result"] == "PermissionError"


def test_plot_writes_png_and_svg(server, base, calfiles, tmp_path, capsys):
    code, out, _ = run(capsys, "plot", "-N", "1", "--out", str(tmp_path / "none.png"))
    assert code == 1 and out["result"] == "no queue"
    run(capsys, "new", str(calfiles / "cal.json"), "-N", "1")
    code, out, err = run(capsys, "plot", "-N", "1", "--out", str(tmp_path / "early.png"))
    assert code == 1 and "nothing to plot yet" in err
    write_frames(base / "data", 3)
    run(capsys, "readdir", "-N", "1")
    assert wait_until(lambda: FakeQueue.instances[-1].stats()["images processed"] == 3)
    for name in ("p.png", "p.svg"):
        code, out, _ = run(capsys, "plot", "-N", "1", "-s", "1", "-k", "1", "-y", "symlog",
                           "--out", str(tmp_path / name), "--wait", "10")
        assert code == 0 and out["data"]["filename"] == "frame_00002"
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()[:400]
    code, out, _ = run(capsys, "plotdata", "-N", "1")
    assert code == 0 and out["result"] == "plot"


def test_plot_without_display_writes_a_file(server, base, calfiles, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    run(capsys, "new", str(calfiles / "cal.json"), "-N", "1")
    write_frames(base / "data", 1)
    run(capsys, "readdir", "-N", "1")
    code, _, err = run(capsys, "plot", "-N", "1", "--wait", "10")
    assert code == 0 and "no display" in err
    assert (tmp_path / "saxsleash-plot.png").exists()


def test_draw_skips_and_clips():
    class Args:
        skip, clip, xscale, yscale = 2, 3, "linear", "log"

    x = np.linspace(0.1, 1, 10)
    data = {"filename": "f", "graphs": [{"kind": "Radial", "columnLabels": ["q", "I", "e"],
                                         "array": [x.tolist(), (x + 1).tolist(), (x * 0).tolist()]}]}
    fig = Figure()
    leash.draw(fig, data, Args)
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_xdata(), x[2:7])
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_title() == "Radial f"


def test_server_down_exit_code_2(tmp_path, monkeypatch, capsys):
    sock = zmq.Context.instance().socket(zmq.ROUTER)  # bound but never answers
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    net = write_network(tmp_path / "net", [NetEntry(server=f"tcp://127.0.0.1:{port}", secret=SECRET)])
    monkeypatch.setenv("SAXSDOG_NETWORK", str(net))
    t0 = time.monotonic()
    code, out, err = run(capsys, "stat", "--timeout", "0.3", "--retries", "2")
    assert code == 2 and out is None
    assert "no reply from the server" in err and "after 2 attempt(s)" in err
    assert time.monotonic() - t0 < 3
    sock.close()


def test_lazy_pirate_retries_until_the_server_answers(base):
    # The first attempt gets no reply (nothing listens yet); the retry is signed anew (the
    # replay cache would refuse the same signature) and answered once the server is up.
    probe = zmq.Context.instance().socket(zmq.ROUTER)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close()
    started: list[ServerThread] = []

    def late_start():
        time.sleep(0.7)
        cfg = ServerConfig(basedir=base, secret=SECRET, endpoint=f"tcp://127.0.0.1:{port}")
        started.append(ServerThread(SaxsdogServer(cfg, None, queue_factory=FakeQueue)))

    t = threading.Thread(target=late_start)
    t.start()
    client = LeashClient(f"tcp://127.0.0.1:{port}", SECRET, timeout=0.5, retries=5)
    try:
        assert client.request("stat")["result"] == "stat"
    finally:
        t.join()
        client.close()
        for st in started:
            st.stop()


def test_client_raises_server_unavailable():
    client = LeashClient("tcp://127.0.0.1:9", SECRET, timeout=0.1, retries=1)
    with pytest.raises(ServerUnavailable, match="after 1 attempt"):
        client.request("stat")


def test_a_stopped_server_is_told_within_3_s(tmp_path):
    """Issue 21: ``saxsleash stat`` (a real process, default timeout and retries) against a
    loopback port nothing listens on says "no server at tcp://..." within 3 s, not after
    three 10 s tries. 3 s holds the interpreter's start (~1 s here) and the pauses
    between the refused attempts (~0.8 s) with room for a busy machine."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port just free: bound, then closed again
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    net = write_network(tmp_path / "net", [NetEntry(server=url, secret=SECRET)])
    t0 = time.monotonic()
    proc = subprocess.run([str(Path(sys.executable).parent / "saxsleash"), "stat", "--config",
                           str(net)], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert f"no server at {url}" in proc.stderr
    assert took < 3.0, f"took {took:.1f} s: {proc.stderr}"


def test_the_probe_tells_only_what_a_plain_connection_can() -> None:
    import socket

    from saxs_pipeline.control.client import probe_tcp

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert probe_tcp(f"tcp://127.0.0.1:{port}") is None  # something listens
    assert probe_tcp(f"tcp://127.0.0.1:{port}") == "Connection refused"
    # not a plain TCP address: left to ZeroMQ and the reply timeout
    for url in ("ipc:///tmp/saxsdog", f"tcp://lo;127.0.0.1:{port}", "tcp://*:5"):
        assert probe_tcp(url) is None
