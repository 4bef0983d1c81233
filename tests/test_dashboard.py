"""The SAXS page on the scheduler's dashboard, opened in headless Chromium (module
saxs_pipeline.live.page): it updates from the driver's pushes, survives the browser
closing, serves two browsers at once, shows the latest real frame as a picture with
units on every axis, and the package imports without bokeh."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("bokeh")
from distributed import Client

from saxs_pipeline.live.plugin import dashboard_url
from saxs_pipeline.pipeline.queue import ImageQueue

from realdata import require

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# A new frame shows on the page by itself (push every 0.5 s + the page's next tick, 0.25 s
# after a pause and at most 1 s while frames stream + one integration: ~1 s). That time is
# not asserted: on the shared 2-core machine it measured 0.27-1.92 s over 26 updates
# (issue 21, item 10), so a 2 s bound failed now and then with nothing wrong; a page that
# does not update fails read_page's wait. `python -m benchmarks.pagecost` measures the
# page's part (lone frames: median 0.51 s, max 0.60 s).

# What the page shows, read from its Bokeh document: the info text (frame name, counts)
# and the number of points of the I0/I1/I2 series and of the latest curve.
READ_PAGE = """
const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
if (!doc) return null;
const info = doc.get_model_by_name(arguments[0]);
const series = doc.get_model_by_name(arguments[1]);
const curve = doc.get_model_by_name(arguments[2]);
if (!info || !series || !curve) return null;
return {text: info.text, points: series.data.t.length, curve: Array.from(curve.data.I)};
"""

# The frame picture as the page has it: a hash of its levels, its shape, the caption, the
# beam marker; and the label of every axis on the page.
READ_FRAME = """
const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
if (!doc) return null;
const src = doc.get_model_by_name(arguments[0]);
const caption = doc.get_model_by_name(arguments[1]);
const beam = doc.get_model_by_name(arguments[2]);
if (!src || !caption || !beam || !src.data.image.length) return null;
const img = src.data.image[0];
let hash = 0;
for (let k = 0; k < img.length; k++) hash = (Math.imul(hash, 31) + img[k]) >>> 0;
const labels = Array.from(doc.all_models).filter((m) => typeof m.axis_label === "string")
    .map((m) => m.axis_label);
return {hash: hash, shape: Array.from(img.shape), text: caption.text, labels: labels,
        beam: [Array.from(beam.data.x), Array.from(beam.data.y)]};
"""

IDLE_JS = "return Boolean(window.Bokeh && Bokeh.documents[0] && Bokeh.documents[0].is_idle);"


def _browser_or_skip():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("no headless browser: apt-get install chromium chromium-driver")
    return webdriver


@contextlib.contextmanager
def browser(size: str = "1200,1000") -> Iterator[object]:
    webdriver = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={size}"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()  # stops chromedriver and its browser


class ErrorLog(logging.Handler):
    """Errors logged in this process, where the scheduler runs (distributed's loggers do
    not propagate to the root, so caplog would miss them)."""

    LOGGERS = ("distributed", "bokeh", "tornado", "saxs_pipeline")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ErrorLog:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


@pytest.fixture(scope="module")
def client(inprocess_client: Client) -> Client:
    return inprocess_client  # the scheduler and its log are in this process (conftest)


def read_page(driver, qid: str, timeout: float = 15.0, *, until=None) -> dict:
    """The page's state once it has the queue (and ``until(state)`` holds)."""
    deadline = time.monotonic() + timeout
    while True:
        state = driver.execute_script(READ_PAGE, f"saxs-info-{qid}", f"saxs-series-{qid}",
                                      f"saxs-curve-{qid}")
        if state and (until is None or until(state)):
            return state
        assert time.monotonic() < deadline, f"page did not show it within {timeout} s: {state}"
        time.sleep(0.05)


def new_frame_shows(drivers, q: ImageQueue, setup, i: int) -> None:
    """Write frame ``i``, offer it, and wait until every page shows it without a reload:
    its name, one more point, another curve."""
    before = [read_page(d, q.queue_id) for d in drivers]
    q.submit_paths([setup.write(i)])
    name = os.path.splitext(setup.name(i))[0]
    for d, b in zip(drivers, before, strict=True):
        after = read_page(d, q.queue_id, until=lambda s, b=b: name in s["text"]
                          and s["points"] > b["points"] and s["curve"] != b["curve"])
        assert after["points"] == b["points"] + 1


def test_page_shows_each_new_frame_by_itself(client: Client, saxs_setup, tmp_path: Path) -> None:
    _browser_or_skip()
    setup = saxs_setup(0)
    with ErrorLog() as errors, ImageQueue(client, setup.calibration, setup.data) as q:
        q.submit_paths([setup.write(0)])
        assert q.join(30)
        url = dashboard_url(client)
        assert url and url.startswith("http://127.0.0.1:") and url.endswith("/saxs")
        with browser() as d:
            d.get(url)
            first = read_page(d, q.queue_id, until=lambda s: "frame_00000" in s["text"])
            assert first["points"] == 1 and len(first["curve"]) > 10
            for i in (1, 2, 3):
                new_frame_shows([d], q, setup, i)
            shot = tmp_path / "live-page.png"
            assert d.save_screenshot(str(shot))
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
            text = read_page(d, q.queue_id)["text"]
            assert "processed</b> 4" in text and "backlog" in text and "p99" in text
            assert "calibration" in text and q.calibration_id in text
    assert not errors.records, [r.getMessage() for r in errors.records]


def test_reopen_and_two_browsers(client: Client, saxs_setup) -> None:
    _browser_or_skip()
    setup = saxs_setup(0)
    with ErrorLog() as errors, ImageQueue(client, setup.calibration, setup.data) as q:
        q.submit_paths([setup.write(0)])
        assert q.join(30)
        url = dashboard_url(client)
        with browser() as d:
            d.get(url)
            read_page(d, q.queue_id)
            new_frame_shows([d], q, setup, 1)
        q.submit_paths([setup.write(2)])  # while no browser looks
        assert q.join(30)
        with browser() as a, browser() as b:
            for d in (a, b):
                d.get(url)
                # reopened: the whole history is there, frames seen by no one included
                read_page(d, q.queue_id, until=lambda s: s["points"] == 3
                          and "frame_00002" in s["text"])
            new_frame_shows([a, b], q, setup, 3)
            with browser() as c:  # a third one opened and closed meanwhile
                c.get(url)
                read_page(c, q.queue_id)
                # closed once drawn and its first messages are in (as a person would):
                # Bokeh 3.9 logged AssertionErrors (session detached by its keep-alive)
                # for a browser gone while the server still handled those messages
                deadline = time.monotonic() + 15
                while not c.execute_script(IDLE_JS) and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(1.0)
            new_frame_shows([a, b], q, setup, 4)
    assert not errors.records, [r.getMessage() for r in errors.records]


def read_frame(driver, qid: str, until, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = driver.execute_script(READ_FRAME, f"saxs-frame-{qid}",
                                      f"saxs-frame-caption-{qid}", f"saxs-beam-{qid}")
        if state and until(state):
            return state
        assert time.monotonic() < deadline, f"no such frame picture within {timeout} s: {state}"
        time.sleep(0.05)


def test_frame_picture_shows_and_changes_with_a_new_frame(client: Client,
                                                          tmp_path: Path) -> None:
    # real Pilatus 1M frames with the buffer set-up's geometry: the buffer, then the AgBh
    # frame of another set-up (its rings off the marked beam centre: the beam "moved")
    _browser_or_skip()
    calibration = require("cal_flat.json")
    buffer, agbh = require("buf1_00000.tif"), require("agbeh2_1M.tif")
    data = tmp_path / "data"
    data.mkdir()
    with ErrorLog() as errors, ImageQueue(client, calibration, data) as q:
        q.submit_paths([shutil.copy(buffer, data)])
        assert q.join(120)
        with browser("1200,1150") as d:
            d.get(dashboard_url(client))
            first = read_frame(d, q.queue_id, lambda s: "buf1_00000" in s["text"])
            assert first["shape"] == [209, 197]  # 1043 x 981 in blocks of 5
            assert first["beam"] == [[387.772], [808.37]]  # BeamCenter [Y, X] at (X, Y)
            assert {"q (nm⁻¹)", "I (counts/pixel)", "X (px from the left)",
                    "Y (px from the bottom)", "time (UTC)"} <= set(first["labels"])
            assert all(first["labels"]), first["labels"]  # no axis without its label
            q.submit_paths([shutil.copy(agbh, data)])
            second = read_frame(d, q.queue_id, lambda s: "agbeh2_1M" in s["text"])
            assert second["hash"] != first["hash"] and second["shape"] == [209, 197]
            shot = tmp_path / "live-page.png"  # docs/live-page.png is this one
            assert d.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert not errors.records, [r.getMessage() for r in errors.records]


def test_imports_and_runs_without_bokeh(tmp_path: Path) -> None:
    # bokeh and prometheus_client made unimportable: the package imports, the plugin
    # starts without a page and without metrics.
    code = """
import sys
sys.modules["bokeh"] = sys.modules["prometheus_client"] = None
import asyncio
import saxs_pipeline.pipeline.queue, saxs_pipeline.live.plugin as p
from distributed import Scheduler
async def main():
    async with Scheduler(host="127.0.0.1", dashboard_address="127.0.0.1:0") as s:
        plugin = p.SaxsLive()
        await plugin.start(s)
        assert plugin.url() is None and plugin.info()["url"] is None and not plugin._metrics
        assert plugin.push({"queue": "q", "processed": 2})["url"] is None
        await plugin.close()
asyncio.run(main())
assert not [m for m in sys.modules if m.split(".")[0] in ("bokeh", "prometheus_client")
            and sys.modules[m] is not None]
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


async def _handshake(ws_url: str, origin: str) -> str | None:
    """Open the page's websocket as a browser on a page of ``origin`` would (with a
    session token, as the page's own script sends it); Bokeh's first message, its ACK."""
    from bokeh.util.token import generate_jwt_token, generate_session_id
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    token = generate_jwt_token(generate_session_id())
    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Origin": origin}),
                                   subprotocols=["bokeh", token])
    try:
        return await conn.read_message()
    finally:
        conn.close()


def test_page_takes_its_own_origin_only_and_shows_paths_relative_to_the_data_root(
        client: Client, saxs_setup) -> None:
    """A page of another site (Origin evil.example) cannot open the page's websocket, a
    page of the dashboard's own host can; what the page shows of a failed frame in a
    sub-folder names it relative to the data root, never with the machine's full path."""
    import asyncio

    from bokeh.client import pull_session
    from tornado.httpclient import HTTPClientError

    setup = saxs_setup(0)
    (setup.data / "s1").mkdir()
    broken = setup.data / "s1" / "broken.tif"
    broken.write_bytes(b"not a frame at all")
    with ImageQueue(client, setup.calibration, setup.data, retries=0) as q:
        q.submit_paths([setup.write(0), broken])
        assert q.join(30)
        url = dashboard_url(client)
        host = url.split("/")[2]  # 127.0.0.1:<port>
        deadline = time.monotonic() + 15  # the driver pushes every 0.5 s
        info = lambda: client.sync(client.scheduler.saxs_live_info)["queues"]  # noqa: E731
        while info().get(q.queue_id, {}).get("failed", 0) < 1:
            assert time.monotonic() < deadline, "the failure never reached the scheduler"
            time.sleep(0.1)

        ws_url = url.replace("http://", "ws://") + "/ws"
        with pytest.raises(HTTPClientError) as refused:
            asyncio.run(_handshake(ws_url, "http://evil.example:8000"))
        assert refused.value.code == 403
        for own in (f"http://{host}", f"http://localhost:{host.split(':')[1]}"):
            assert asyncio.run(_handshake(ws_url, own)) is not None  # Bokeh's ACK

        session = pull_session(url=url)  # no Origin: not a browser, let in by design
        try:
            shown = "\n".join(str(m.properties_with_values()) for m in session.document.models)
        finally:
            session.close()
        assert "s1/broken.tif" in shown, shown[:2000]
        assert str(setup.data) not in shown and str(setup.root) not in shown
