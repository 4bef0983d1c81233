"""The scheduler's side of the live view: :class:`SaxsLive` keeps each queue's pushes
(:class:`~saxs_pipeline.live.state.QueueLive`), serves the SAXS page on the dashboard
(when bokeh is installed) and adds the ``saxs_*`` metrics to ``/metrics`` (when
prometheus_client is). Registered by every :class:`~saxs_pipeline.pipeline.queue.ImageQueue`
(idempotent), or ``dask scheduler --preload saxs_pipeline.live.plugin``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from distributed.comm import get_address_host
from distributed.diagnostics.plugin import SchedulerPlugin

from saxs_pipeline.live import INFO_HANDLER, PAGE_ROUTE, PLUGIN_NAME, PUSH_HANDLER
from saxs_pipeline.live.state import QueueLive

if TYPE_CHECKING:
    from distributed import Client, Scheduler

__all__ = ["SaxsLive", "dashboard_url", "dask_setup"]

log = logging.getLogger(__name__)

KEEP_CLOSED = 8  # closed queues still shown; older ones are dropped


class SaxsLive(SchedulerPlugin):
    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.queues: dict[str, QueueLive] = {}
        self.scheduler: Scheduler | None = None
        self._page: Any = None
        self._metrics = False

    async def start(self, scheduler: Scheduler) -> None:
        self.scheduler, self.queues = scheduler, {}
        scheduler.handlers[PUSH_HANDLER] = self.push
        scheduler.handlers[INFO_HANDLER] = self.info
        try:
            from saxs_pipeline.live import metrics

            metrics.register(self)
            self._metrics = True
        except ImportError:
            log.info("prometheus_client is not installed: no saxs_* metrics on /metrics")
        if getattr(scheduler, "http_application", None) is None:
            return
        try:
            from saxs_pipeline.live.page import serve_page
        except ImportError:
            log.info("bokeh is not installed: no SAXS page (pip install saxs-pipeline[dashboard])")
            return
        self._page = serve_page(scheduler, self)
        log.info("SAXS page at %s", self.url())

    async def close(self) -> None:
        if self.scheduler is None:
            return
        for h in (PUSH_HANDLER, INFO_HANDLER):
            self.scheduler.handlers.pop(h, None)
        if self._metrics:
            from saxs_pipeline.live import metrics

            metrics.unregister(self)
        if self._page is not None:
            from saxs_pipeline.live.page import stop_page

            stop_page(self.scheduler, self._page)
            self._page = None

    # -- handlers ------------------------------------------------------------------------

    def push(self, msg: dict[str, Any]) -> dict[str, Any]:
        """``saxs_live_push``: one push of a driver's :class:`LiveFeed`."""
        qid = str(msg.get("queue", ""))
        live = self.queues.get(qid)
        if live is None:
            live = self.queues[qid] = QueueLive(qid)
            self._drop_old()
        live.push(msg)
        return {"has_q": len(live.q) > 0, "url": self.url()}

    def info(self, queue: str | None = None) -> dict[str, Any]:
        """``saxs_live_info``: the page's URL and what it shows, per queue."""
        return {"url": self.url(),
                "queues": {qid: live.summary() for qid, live in self.queues.items()
                           if queue is None or qid == queue}}

    def url(self) -> str | None:
        """``http://host:port/saxs``, or None without a page."""
        if self._page is None or self.scheduler is None:
            return None
        host = get_address_host(self.scheduler.address)
        return f"http://{host}:{self.scheduler.http_server.port}/{PAGE_ROUTE}"

    def _drop_old(self) -> None:
        closed = [qid for qid, q in self.queues.items() if q.closed]
        for qid in closed[:-KEEP_CLOSED] if len(closed) > KEEP_CLOSED else []:
            del self.queues[qid]


def dask_setup(scheduler: Scheduler) -> None:
    """``dask scheduler --preload saxs_pipeline.live.plugin``."""
    scheduler.add_plugin(SaxsLive())


def dashboard_url(client: Client) -> str | None:
    """The SAXS page's URL from a synchronous client, None where there is no page."""
    try:
        return client.sync(getattr(client.scheduler, INFO_HANDLER))["url"]
    except Exception as exc:  # no plugin (old scheduler), no connection: no page to name
        log.debug("no SAXS page: %s", exc)
        return None
