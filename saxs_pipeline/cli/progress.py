"""What a run shows while it works: a progress bar for batch work, a live status line in
watch mode, and the ``-m`` live plot."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["LivePlot", "WatchStatus", "show_progress"]

log = logging.getLogger("saxsdog")


def show_progress(queue: Any, *, file: TextIO | None = None, silent: bool = False,
                  interval: float = 0.2, stop: Any = None) -> None:
    """A progress bar (frames done of frames taken) until the walk has ended and every
    frame taken is finished, or until ``stop()`` is true (the cluster went away)."""
    from tqdm import tqdm

    bar = None if silent else tqdm(total=0, unit="frame", file=file or sys.stderr,
                                   dynamic_ncols=True, mininterval=0.5)
    try:
        while True:
            p = queue.progress()
            if bar is not None:
                if p["total"] != bar.total:
                    bar.total = p["total"]
                bar.update(p["done"] - bar.n)
                post = {k: p[k] for k in ("failed", "skipped") if p[k]}
                if not p["cluster"].connected:
                    post["cluster"] = p["cluster"].state
                if post:
                    bar.set_postfix(post, refresh=False)
            if not p["walking"] and p["done"] >= p["total"]:
                break
            if stop is not None and stop():
                break
            time.sleep(interval)
    finally:
        if bar is not None:
            bar.close()


class WatchStatus:
    """One status line, rewritten in place on a terminal (frames done, frames/s over the
    run's busy time so far: the waits for frames do not count, failures, backlog,
    cluster); a log line every ``log_every`` s elsewhere."""

    def __init__(self, queue: Any, *, file: TextIO | None = None, log_every: float = 30.0) -> None:
        self.queue = queue
        self.file = file or sys.stderr
        self.tty = self.file.isatty()
        self.log_every = log_every
        self._logged = 0.0
        self._width = 0

    def line(self) -> str:
        p = self.queue.progress()
        text = (f"watching: {p['processed']} frames ({self.queue.status.clock.describe()}), "
                f"{p['failed']} failed, {p['queued']} queued")
        if not p["cluster"].connected:
            text += f", {p['cluster'].describe()}"
        return text

    def update(self) -> None:
        if self.tty:
            text = self.line()
            pad = max(0, self._width - len(text))
            self.file.write("\r" + text + " " * pad)
            self.file.flush()
            self._width = len(text)
        elif time.monotonic() - self._logged >= self.log_every:
            self._logged = time.monotonic()
            log.info("%s", self.line())

    def end(self) -> None:
        if self.tty and self._width:
            self.file.write("\n")
            self.file.flush()


class LivePlot:
    """The ``-m`` plot: a window when there is a display, else ``live.png`` kept updated."""

    def __init__(self, png: Path) -> None:
        from saxs_pipeline.curves.plot import NoDisplayError, new_figure

        self.png = png
        self.last: str | None = None
        try:
            self.fig = new_figure(interactive=True, figsize=(7, 4.5))
            self.window = True
        except NoDisplayError:
            self.fig = new_figure(figsize=(7, 4.5))
            self.window = False
            log.info("no display: the live plot is kept in %s", png)
        self.ax = self.fig.add_subplot()

    def update(self, latest: dict[str, Any] | None) -> None:
        from saxs_pipeline.curves.plot import INTENSITY_LABEL, Q_LABEL, Band, draw_curve

        if latest is None or latest["filename"] == self.last:
            if self.window:
                self._pause()
            return
        self.last = latest["filename"]
        ax = self.ax
        ax.clear()
        for g in latest["graphs"]:
            if g["kind"] != "Radial":
                continue
            q, mean, err = g["array"]
            draw_curve(ax, q, mean, [Band(err)], floor=1.0, positive_only=True, lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel(Q_LABEL)
        ax.set_ylabel(INTENSITY_LABEL)
        ax.set_title(os.path.basename(latest["filename"]))
        if self.window:
            self.fig.canvas.draw_idle()
            self._pause()
        else:
            self.png.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.png.with_name(f".{self.png.name}.tmp")
            self.fig.savefig(tmp, format="png")
            os.replace(tmp, self.png)

    def _pause(self) -> None:
        import matplotlib.pyplot as plt

        plt.pause(0.01)
