"""One queue's part of one browser session of the SAXS page (:mod:`.page`), built to be
cheap for the browser to draw, which on a beamline computer shares the cores with the
workers (``python -m benchmarks.pagecost`` measures it):

* each part that changes on its own is a document root of its own: Bokeh lays out a
  whole root again when any text in it changes (a Div's text measures every axis of
  every plot beside it), so the texts never share a root with the plots;
* a property is set only when its value changed (Bokeh sends, and the browser redraws,
  whatever is set), and the caller calls :meth:`QueueView.update` at most once a second;
* curves are thinned to about one point per pixel column of their log q axis;
* I0/I1/I2 arrive by ``stream`` (only the new points), the frame x q map is sent only
  when new curves came.
"""

from __future__ import annotations

import html
import math

import numpy as np
from bokeh.layouts import row
from bokeh.models import ColorBar, ColumnDataSource, Div, LinearColorMapper
from bokeh.plotting import figure

from saxs_pipeline.live.frameview import FRAME_WIDTH, FrameView
from saxs_pipeline.live.state import OVERLAY, SERIES, QueueLive
from saxs_pipeline.live.units import axis_label, i_unit, intensity_label, param_unit

__all__ = ["QueueView", "display_index", "set_changed"]

PLOT_WIDTH = 540
MAP_COLUMNS = 256  # q bins drawn in the map (every k-th)


def display_index(q: np.ndarray, columns: int = PLOT_WIDTH) -> np.ndarray:
    """Indices of the q > 0 points to draw on a log q axis ``columns`` pixels wide: the
    first of each pixel column. Detector bins are linear in q, so on a log axis most of
    them crowd into the last decade, several to a pixel."""
    pos = np.flatnonzero(q > 0)
    if len(pos) < 2:
        return pos
    lq = np.log(q[pos])
    span = float(lq[-1] - lq[0]) or 1.0
    _, first = np.unique(np.floor((lq - lq[0]) / span * (columns - 1)), return_index=True)
    return pos[first]


def _fmt_s(x: float) -> str:
    return "–" if math.isnan(x) else f"{x * 1e3:.0f} ms" if x < 1 else f"{x:.2f} s"


def set_changed(model: object, **values: object) -> bool:
    """Set what differs (an equal value set again would still be sent and drawn)."""
    changed = {k: v for k, v in values.items() if getattr(model, k) != v}
    for k, v in changed.items():
        setattr(model, k, v)
    return bool(changed)


class QueueView:
    """The models of one queue on one page; ``roots`` go into the document in order."""

    def __init__(self, live: QueueLive) -> None:
        qid = live.queue_id
        self.live, self.version, self.series_seen = live, -1, 0
        self.curves_seen = self.map_seen = -1
        self._q_id: tuple[int, int] | None = None
        self._index = np.zeros(0, int)
        self.info = Div(name=f"saxs-info-{qid}", width=1100)
        self.curve = ColumnDataSource({"q": [], "I": [], "lo": [], "hi": []},
                                      name=f"saxs-curve-{qid}")
        self.previous = ColumnDataSource({"xs": [], "ys": [], "alpha": []})
        self.map = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self.series = ColumnDataSource({"t": [], "I0": [], "I1": [], "I2": []},
                                       name=f"saxs-series-{qid}")
        self.failures = Div(name=f"saxs-failures-{qid}", width=1100)
        self.frame = FrameView(live)
        # the queue's units came with its first push, before its view is made
        x_label, i_label = axis_label(*live.axis), intensity_label(live.calibration)

        curve = figure(title="I(q): latest, previous fading", x_axis_type="log",
                       y_axis_type="log", width=PLOT_WIDTH, height=330,
                       x_axis_label=x_label, y_axis_label=i_label, tools="pan,wheel_zoom,reset")
        curve.multi_line("xs", "ys", source=self.previous, line_alpha="alpha",
                         line_color="gray")
        curve.varea("q", "lo", "hi", source=self.curve, fill_alpha=0.3, fill_color="orange")
        curve.line("q", "I", source=self.curve, line_width=2)
        self.mapper = LinearColorMapper(palette="Viridis256")
        waterfall = figure(title="log10 I: frame x q (last curves)", width=PLOT_WIDTH,
                           height=330, x_axis_label=x_label,
                           y_axis_label="curve (count, newest on top)", tools="pan,wheel_zoom,reset")
        waterfall.image("image", "x", "y", "dw", "dh", source=self.map,
                        color_mapper=self.mapper)
        waterfall.add_layout(ColorBar(color_mapper=self.mapper, width=10,
                                      title=f"log₁₀ {i_label}"), "right")
        params = figure(title="I0 / I1 / I2", x_axis_type="datetime",
                        width=2 * PLOT_WIDTH - FRAME_WIDTH, height=420,
                        x_axis_label="time (UTC)", y_axis_label="I0, I1, I2 (units in the legend)",
                        tools="pan,wheel_zoom,reset")
        unit = i_unit(live.calibration)
        for power, (name, color) in enumerate((("I0", "navy"), ("I1", "firebrick"),
                                               ("I2", "green"))):
            params.line("t", name, source=self.series, color=color,
                        legend_label=f"{name} ({param_unit(unit, live.axis[1], power)})")
        params.legend.location = "top_left"
        self.roots = [self.info, row(curve, waterfall), self.frame.caption,
                      row(self.frame.figure, params), self.failures]

    def update(self) -> bool:
        """Bring this view up to date; True when anything was sent to the browser."""
        sent = set_changed(self.info, text=self._info_text())
        live = self.live
        if live.version == self.version:
            return sent
        self.version = live.version
        sent |= self._curves()
        sent |= self._map()
        sent |= self._series()
        sent |= self.frame.update()
        failures = "<b>failures</b><br>" + ("<br>".join(
            f"{html.escape(str(f.get('file')))}[{f.get('frame')}]: "
            f"{html.escape(str(f.get('error')))}" for f in reversed(live.failures)) or "none")
        return set_changed(self.failures, text=failures) or sent

    def _info_text(self) -> str:
        live = self.live
        s = live.summary()
        cal = ", ".join(f"{k} {v}" for k, v in live.calibration.items())
        state = " (closed)" if live.closed else ""
        return (
            f"<h3>queue {html.escape(live.queue_id)}{state}</h3>"
            f"<p><b>frame:</b> <span class='saxs-frame'>{html.escape(s['latest'] or '–')}</span>"
            f" · <b>points:</b> {s['points']} · <b>processed</b> {s['processed']}"
            f" · <b>failed</b> {s['failed']} · <b>retried</b> {s['retried']}"
            f" · <b>frames/s</b> {s['fps']:.1f} · <b>backlog</b> {s['backlog']}"
            f" · <b>latency</b> p50 {_fmt_s(s['latency_p50'])} p99 {_fmt_s(s['latency_p99'])}"
            f"</p><p><b>calibration</b> {html.escape(cal)} · curve {html.escape(live.curve_key)}</p>")

    def _shown(self) -> np.ndarray:
        """The drawn q indices, computed again only for another q axis."""
        q = self.live.q
        key = (id(q), len(q))
        if key != self._q_id:
            self._q_id, self._index = key, display_index(q.astype(float))
        return self._index

    def _curves(self) -> bool:
        live = self.live
        if not live.curves or not len(live.q):
            return False
        if live.curves_total == self.curves_seen:
            return False  # no new curve since the last update
        self.curves_seen = live.curves_total
        _, intensity, err = live.curves[-1]
        idx = self._shown()
        q, i = live.q[idx].astype(float), intensity[idx].astype(float)
        ok = np.isfinite(i) & (i > 0)
        e = err[idx].astype(float) if len(err) == len(live.q) else np.zeros_like(i)
        lo = np.clip(i - e, i * 1e-3, None)
        self.curve.data = {"q": q[ok], "I": i[ok], "lo": lo[ok], "hi": (i + e)[ok]}
        prev = list(live.curves)[:-1][-OVERLAY:]
        xs, ys, alpha = [], [], []
        for k, (_, ii, _) in enumerate(prev):
            ii = ii[idx].astype(float)
            good = np.isfinite(ii) & (ii > 0)
            xs.append(q[good])
            ys.append(ii[good])
            alpha.append(0.6 * (k + 1) / (len(prev) + 1))  # older: fainter
        self.previous.data = {"xs": xs, "ys": ys, "alpha": alpha}
        return True

    def _map(self) -> bool:
        live = self.live
        if not live.waterfall or not len(live.q) or live.curves_total == self.map_seen:
            return False
        self.map_seen = live.curves_total
        q = live.q.astype(float)
        step = max(1, -(-len(q) // MAP_COLUMNS))
        rows = np.vstack(list(live.waterfall))[:, ::step]
        with np.errstate(divide="ignore", invalid="ignore"):
            image = np.where(rows > 0, np.log10(rows), np.nan).astype(np.float32)
        finite = image[np.isfinite(image)]
        if finite.size:
            set_changed(self.mapper, low=float(finite.min()), high=float(finite.max()))
        self.map.data = {"image": [image], "x": [float(q[0])], "y": [0],
                         "dw": [float(q[-1] - q[0]) or 1.0], "dh": [len(rows)]}
        return True

    def _series(self) -> bool:
        live = self.live
        total = live.series_total
        new = min(total - self.series_seen, len(live.series))
        self.series_seen = total
        if new <= 0:
            return False
        points = list(live.series)[-new:]
        self.series.stream({"t": [p[0] * 1e3 for p in points], "I0": [p[1] for p in points],
                            "I1": [p[2] for p in points], "I2": [p[3] for p in points]},
                           rollover=SERIES)
        return True
