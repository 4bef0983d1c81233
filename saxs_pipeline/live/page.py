"""The SAXS page of the Dask dashboard (``/saxs``, needs bokeh): per queue the latest
curve on log-log axes with its error band over the previous ones fading, a map of the
last curves (frame x q), I0/I1/I2 over time, frames/s, backlog, latency p50/p99, the
failures with their reason and the calibration in use.

Served by a Bokeh server application of its own added to the scheduler's HTTP
application, on the dashboard's port and event loop: distributed builds its dashboard's
Bokeh server once when the scheduler starts (from a fixed table of pages), and our
plugin arrives later (``register_plugin``), so it cannot join that table. Each browser
session reads the plugin's :class:`~saxs_pipeline.live.state.QueueLive` buffers in a
periodic callback; a session closing leaves them untouched.
"""

from __future__ import annotations

import html
import logging
import math
import time
from functools import partial
from typing import TYPE_CHECKING

import dask.config
import numpy as np
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Div, LinearColorMapper
from bokeh.plotting import figure
from bokeh.server.tornado import BokehTornado
from bokeh.server.util import create_hosts_allowlist
from tornado.ioloop import IOLoop

from saxs_pipeline.live import PAGE_ROUTE
from saxs_pipeline.live.state import OVERLAY, SERIES, QueueLive

if TYPE_CHECKING:
    from distributed import Scheduler

    from saxs_pipeline.live.plugin import SaxsLive

__all__ = ["make_document", "serve_page", "stop_page"]

log = logging.getLogger(__name__)

UPDATE_MS = 500  # twice a second: the issue asks at least once
MAP_SECONDS = 1.0  # the frame x q map is the heaviest part to send and draw: once a second
MAP_COLUMNS = 256  # q bins drawn in the map (every k-th); the curve plot has them all


def serve_page(scheduler: Scheduler, plugin: SaxsLive) -> BokehTornado:
    """Add the page to the scheduler's HTTP server (call on its event loop)."""
    app = Application(FunctionHandler(partial(make_document, plugin)))
    kwargs = dict(dask.config.get("distributed.scheduler.dashboard.bokeh-application"))
    origins = create_hosts_allowlist(kwargs.pop("allow_websocket_origin"),
                                     scheduler.http_server.port)
    server = BokehTornado({f"/{PAGE_ROUTE}": app}, prefix="/", use_index=False,
                          extra_websocket_origins=origins, **kwargs)
    scheduler.http_application.add_application(server)
    server.initialize(IOLoop.current())
    server.start()
    return server


def stop_page(scheduler: Scheduler, server: BokehTornado) -> None:
    apps = getattr(scheduler.http_application, "applications", [])
    if server in apps:
        apps.remove(server)
    server.stop(wait=False)


def _fmt_s(x: float) -> str:
    return "–" if math.isnan(x) else f"{x * 1e3:.0f} ms" if x < 1 else f"{x:.2f} s"


class QueueView:
    """One queue's part of one browser session."""

    def __init__(self, live: QueueLive) -> None:
        qid = live.queue_id
        self.live, self.version, self.series_seen = live, -1, 0
        self.map_time, self.map_version = 0.0, -1
        self.info = Div(name=f"saxs-info-{qid}", width=1100)
        self.curve = ColumnDataSource({"q": [], "I": [], "lo": [], "hi": []},
                                      name=f"saxs-curve-{qid}")
        self.previous = ColumnDataSource({"xs": [], "ys": [], "alpha": []})
        self.map = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self.series = ColumnDataSource({"t": [], "I0": [], "I1": [], "I2": []},
                                       name=f"saxs-series-{qid}")
        self.failures = Div(name=f"saxs-failures-{qid}", width=540)

        curve = figure(title="I(q): latest, previous fading", x_axis_type="log",
                       y_axis_type="log", width=540, height=330,
                       x_axis_label="q", y_axis_label="I")
        curve.multi_line("xs", "ys", source=self.previous, line_alpha="alpha",
                         line_color="gray")
        curve.varea("q", "lo", "hi", source=self.curve, fill_alpha=0.3, fill_color="orange")
        curve.line("q", "I", source=self.curve, line_width=2)
        self.mapper = LinearColorMapper(palette="Viridis256")
        waterfall = figure(title="log10 I: frame x q (last curves)", width=540, height=330,
                           x_axis_label="q", y_axis_label="frame (newest on top)")
        waterfall.image("image", "x", "y", "dw", "dh", source=self.map,
                        color_mapper=self.mapper)
        params = figure(title="I0 / I1 / I2", x_axis_type="datetime", width=540, height=260)
        for name, color in (("I0", "navy"), ("I1", "firebrick"), ("I2", "green")):
            params.line("t", name, source=self.series, legend_label=name, color=color)
        params.legend.location = "top_left"
        self.layout = column(self.info, row(curve, waterfall), row(params, self.failures))

    def update(self) -> None:
        live = self.live
        s = live.summary()
        cal = ", ".join(f"{k} {v}" for k, v in live.calibration.items())
        state = " (closed)" if live.closed else ""
        text = (
            f"<h3>queue {html.escape(live.queue_id)}{state}</h3>"
            f"<p><b>frame:</b> <span class='saxs-frame'>{html.escape(s['latest'] or '–')}</span>"
            f" · <b>points:</b> {s['points']} · <b>processed</b> {s['processed']}"
            f" · <b>failed</b> {s['failed']} · <b>retried</b> {s['retried']}"
            f" · <b>frames/s</b> {s['fps']:.1f} · <b>backlog</b> {s['backlog']}"
            f" · <b>latency</b> p50 {_fmt_s(s['latency_p50'])} p99 {_fmt_s(s['latency_p99'])}"
            f"</p><p><b>calibration</b> {html.escape(cal)} · curve {html.escape(live.curve_key)}</p>")
        if text != self.info.text:
            self.info.text = text
        now = time.monotonic()
        if now - self.map_time >= MAP_SECONDS:
            self.map_time = now
            self._map()  # also after the last push, so the map catches up
        if live.version == self.version:
            return
        self.version = live.version
        self._curves()
        self._series()
        failures = "<b>failures</b><br>" + ("<br>".join(
            f"{html.escape(str(f.get('file')))}[{f.get('frame')}]: "
            f"{html.escape(str(f.get('error')))}" for f in reversed(live.failures)) or "none")
        if failures != self.failures.text:  # an unchanged text would still be sent
            self.failures.text = failures

    def _curves(self) -> None:
        live, q = self.live, self.live.q.astype(float)
        if not live.curves or not len(q):
            return
        _, intensity, err = live.curves[-1]
        ok = (q > 0) & np.isfinite(intensity) & (intensity > 0)
        lo = np.clip(intensity - err, intensity * 1e-3, None) if len(err) == len(q) else intensity
        hi = intensity + err if len(err) == len(q) else intensity
        self.curve.data = {"q": q[ok], "I": intensity[ok], "lo": lo[ok], "hi": hi[ok]}
        prev = list(live.curves)[:-1][-OVERLAY:]
        xs, ys, alpha = [], [], []
        for k, (_, ii, _) in enumerate(prev):
            good = (q > 0) & np.isfinite(ii) & (ii > 0)
            xs.append(q[good])
            ys.append(ii[good])
            alpha.append(0.6 * (k + 1) / (len(prev) + 1))  # older: fainter
        self.previous.data = {"xs": xs, "ys": ys, "alpha": alpha}

    def _map(self) -> None:
        live, q = self.live, self.live.q.astype(float)
        if not live.waterfall or not len(q) or live.version == self.map_version:
            return
        self.map_version = live.version
        step = max(1, -(-len(q) // MAP_COLUMNS))
        rows = np.vstack(list(live.waterfall))[:, ::step]
        with np.errstate(divide="ignore", invalid="ignore"):
            image = np.where(rows > 0, np.log10(rows), np.nan).astype(np.float32)
        finite = image[np.isfinite(image)]
        if finite.size:
            self.mapper.low, self.mapper.high = float(finite.min()), float(finite.max())
        self.map.data = {"image": [image], "x": [float(q[0])], "y": [0],
                         "dw": [float(q[-1] - q[0]) or 1.0], "dh": [len(rows)]}

    def _series(self) -> None:
        live = self.live
        total = live.series_total
        new = min(total - self.series_seen, len(live.series))
        self.series_seen = total
        if new <= 0:
            return
        points = list(live.series)[-new:]
        self.series.stream({"t": [p[0] * 1e3 for p in points], "I0": [p[1] for p in points],
                            "I1": [p[2] for p in points], "I2": [p[3] for p in points]},
                           rollover=SERIES)


def make_document(plugin: SaxsLive, doc: Document) -> None:
    """One browser session's document: a section per queue, updated every
    ``UPDATE_MS``; queues that start later get their section when they do."""
    doc.title = "SAXS live"
    header = Div(text="<h2>SAXS live</h2><p>no queue yet</p>", name="saxs-header")
    root = column(header)
    views: dict[str, QueueView] = {}

    def tick() -> None:
        doc.hold("combine")  # one message to the browser per update, not one per change
        try:
            for qid, live in list(plugin.queues.items()):
                view = views.get(qid)
                if view is None:
                    view = views[qid] = QueueView(live)
                    root.children = [*root.children, view.layout]
                view.update()
            header.text = f"<h2>SAXS live</h2><p>{len(views)} queue(s)</p>"
        except Exception:  # one bad update must not end the session's callbacks
            log.exception("SAXS page update failed")
        finally:
            doc.unhold()

    tick()
    doc.add_root(root)
    doc.add_periodic_callback(tick, UPDATE_MS)

