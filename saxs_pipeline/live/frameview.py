"""The latest frame's picture on the SAXS page (one queue, one browser session): the
levels of :mod:`saxs_pipeline.ops.picture` through a colour map whose first colour marks
blocks without data and whose last marks saturated ones, the calibration's mask as a haze
that the legend hides, and the beam centre, on the calibration's axes (X from the left,
Y from the bottom: :mod:`saxs_pipeline.live.picture`).
"""

from __future__ import annotations

import html

import numpy as np
from bokeh.models import ColorBar, ColumnDataSource, Div, LinearColorMapper, LogColorMapper
from bokeh.palettes import Viridis256
from bokeh.plotting import figure

from saxs_pipeline.live.picture import beam_xy, placement
from saxs_pipeline.live.state import QueueLive
from saxs_pipeline.ops.picture import HIGHEST, LOWEST

__all__ = ["FRAME_WIDTH", "FrameView"]

FRAME_WIDTH = 470  # px, with its colour bar
NO_DATA_COLOUR, SATURATED_COLOUR, BEAM_COLOUR = "#b0b0b0", "#ff0000", "#ff00ff"
# level k in LOWEST..HIGHEST takes the k-th of as many colours spread over Viridis
_SCALE = [Viridis256[round(i * 255 / (HIGHEST - LOWEST))] for i in range(HIGHEST - LOWEST + 1)]
PALETTE = [NO_DATA_COLOUR, *_SCALE, SATURATED_COLOUR]


class FrameView:
    """``caption`` (a text: a document root of its own, see :mod:`.view`) and ``figure``."""

    def __init__(self, live: QueueLive) -> None:
        qid = live.queue_id
        self.live, self.seen = live, -1
        self._mask_key: tuple[bytes, float] | None = None
        self.source = ColumnDataSource(_empty(), name=f"saxs-frame-{qid}")
        self.mask = ColumnDataSource(_empty(), name=f"saxs-frame-mask-{qid}")
        self.beam = ColumnDataSource({"x": [], "y": []}, name=f"saxs-beam-{qid}")
        self.caption = Div(name=f"saxs-frame-caption-{qid}", width=1100)
        self.scale = LogColorMapper(palette=_SCALE, low=1, high=10)
        fig = figure(title="latest frame, log scale (grey: no data, red: saturated)",
                     width=FRAME_WIDTH, height=420, match_aspect=True,
                     x_axis_label="X (px from the left)", y_axis_label="Y (px from the bottom)",
                     tools="pan,wheel_zoom,reset")
        fig.image("image", "x", "y", "dw", "dh", source=self.source,
                  color_mapper=LinearColorMapper(palette=PALETTE, low=0, high=len(PALETTE) - 1))
        fig.image("image", "x", "y", "dw", "dh", source=self.mask, global_alpha=0.45,
                  color_mapper=LinearColorMapper(palette=["#00000000", "#ffffff"], low=0, high=1),
                  legend_label="mask")
        fig.scatter("x", "y", source=self.beam, marker="circle_cross", size=16, line_width=2,
                    line_color=BEAM_COLOUR, fill_alpha=0, legend_label="beam centre")
        fig.legend.click_policy = "hide"  # the mask's haze off, to see what it covers
        fig.legend.location = "top_right"
        fig.legend.background_fill_alpha = 0.6
        fig.add_layout(ColorBar(color_mapper=self.scale, title="counts/pixel", width=10), "right")
        self.figure = fig

    def update(self) -> bool:
        """Draw the latest picture when another came; True when anything was sent."""
        live, p = self.live, self.live.picture
        if p is None or live.pictures_total == self.seen:
            return False
        self.seen = live.pictures_total
        h, w = p.levels.shape
        rows, cols = p.shape
        place = {k: [v] for k, v in placement(p).items()}
        self.source.data = dict(place, image=[np.ascontiguousarray(p.levels[::-1])])
        mask_key = (b"" if p.mask is None else np.packbits(p.mask).tobytes(), place["y"][0])
        if mask_key != self._mask_key:  # the mask changes with the calibration only
            self._mask_key = mask_key
            self.mask.data = (_empty() if p.mask is None else
                              dict(place, image=[np.ascontiguousarray(p.mask[::-1], np.uint8)]))
        beam = beam_xy(live.calibration)
        beam_data = {"x": [beam[0]], "y": [beam[1]]} if beam else {"x": [], "y": []}
        if self.beam.data != beam_data:  # it changes with the calibration only
            self.beam.data = beam_data
        if (self.scale.low, self.scale.high) != (p.low, p.high):  # frames alike share one
            self.scale.update(low=p.low, high=p.high)
        saturated = (f" · <b style='color:{SATURATED_COLOUR}'>{p.saturated} saturated "
                     "pixel(s)</b>" if p.saturated else " · none saturated")
        self.caption.text = (
            f"<b>frame picture:</b> {html.escape(live.picture_name)} · {rows} x {cols} px "
            f"shown as {h} x {w} blocks of {p.block} x {p.block} (mean counts/pixel, "
            f"{p.low:.3g} to {p.high:.3g} on a log scale){saturated}")
        return True


def _empty() -> dict[str, list[float]]:
    return {"image": [], "x": [], "y": [], "dw": [], "dh": []}
