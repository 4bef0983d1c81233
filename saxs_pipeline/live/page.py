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

Its websocket takes browsers only from pages of the dashboard's own host
(:func:`own_origins`), not distributed's default ``allow_websocket_origin: ["*"]``, under
which any web page a beamline user opens could read the run's data through their
browser. Other names (an SSH tunnel's port) are added in that setting, or in Bokeh's
``BOKEH_ALLOW_WS_ORIGIN``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import dask.config
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.models import Div
from bokeh.server.tornado import BokehTornado
from bokeh.server.util import create_hosts_allowlist
from distributed.comm import get_address_host
from tornado.ioloop import IOLoop

from saxs_pipeline.live import PAGE_ROUTE
from saxs_pipeline.live.view import QueueView, set_changed

if TYPE_CHECKING:
    from distributed import Scheduler

    from saxs_pipeline.live.state import LiveQueues

__all__ = ["make_document", "own_origins", "serve_page", "shown_queues", "stop_page"]

log = logging.getLogger(__name__)

# Each update costs the browser a redraw of what changed (tens of ms of CPU, on a core
# the workers may need): at most once a second, as the issue asks, checked four times a
# second so that the first frame after a pause shows at once.
MIN_UPDATE_S = 1.0
TICK_MS = 250


def own_origins(scheduler_host: str, port: int, configured: Sequence[str] = ()) -> list[str]:
    """``host:port`` of every name under which a browser reaches this dashboard from its
    own pages: the scheduler's host, this machine's names and IPv4 addresses, localhost;
    plus ``configured`` (distributed's ``allow_websocket_origin``) without ``*``."""
    names = {scheduler_host, "localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
    try:
        names |= {str(a[4][0]) for a in socket.getaddrinfo(socket.gethostname(), None,
                                                           socket.AF_INET)}
    except OSError:  # a host name that does not resolve: its other names still count
        pass
    hosts = [f"{n}:{port}" for n in sorted(names) if n and ":" not in n]  # IPv4 and names
    return create_hosts_allowlist([*hosts, *(h for h in configured if h != "*")], port)


def serve_page(scheduler: Scheduler, plugin: LiveQueues) -> BokehTornado:
    """Add the page to the scheduler's HTTP server (call on its event loop)."""
    app = Application(FunctionHandler(partial(make_document, plugin)))
    kwargs = dict(dask.config.get("distributed.scheduler.dashboard.bokeh-application"))
    origins = own_origins(get_address_host(scheduler.address), scheduler.http_server.port,
                          kwargs.pop("allow_websocket_origin", None) or ())
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


def shown_queues(plugin: LiveQueues) -> list[str]:
    """The queues a page shows: the running ones, else the last one that ran. A closed
    queue's section leaves the page when another queue starts, so the running one is
    at the top and a browser draws no section that no longer changes."""
    running = [qid for qid, live in plugin.queues.items() if not live.closed]
    return running or list(plugin.queues)[-1:]


def make_document(plugin: LiveQueues, doc: Document) -> None:
    """One browser session's document: a header and a section per shown queue (see
    :func:`shown_queues`), brought up to date at most every ``MIN_UPDATE_S``: an update
    after a quiet time goes at the next ``TICK_MS``, so a lone frame shows within a push
    interval + a tick, and a steady run redraws once a second."""
    doc.title = "SAXS live"
    header = Div(text="<h2>SAXS live</h2><p>no queue yet</p>", name="saxs-header")
    doc.add_root(header)
    views: dict[str, QueueView] = {}
    last = [0.0]  # when something was last sent to this browser

    def tick() -> None:
        now = time.monotonic()
        if now - last[0] < MIN_UPDATE_S:
            return
        doc.hold("combine")  # one message to the browser per update, not one per change
        sent = False
        try:
            shown = shown_queues(plugin)
            for qid in [q for q in views if q not in shown]:
                for root in views.pop(qid).roots:
                    doc.remove_root(root)
                sent = True
            for qid in shown:
                view = views.get(qid)
                if view is None:
                    view = views[qid] = QueueView(plugin.queues[qid])
                    for root in view.roots:
                        doc.add_root(root)
                    sent = True
                sent |= view.update()
            closed = len(plugin.queues) - len(views)
            sent |= set_changed(header, text=f"<h2>SAXS live</h2><p>{len(views)} queue(s)"
                                + (f", {closed} finished" if closed else "") + "</p>")
        except Exception:  # one bad update must not end the session's callbacks
            log.exception("SAXS page update failed")
        finally:
            doc.unhold()
        if sent:
            last[0] = now

    tick()
    doc.add_periodic_callback(tick, TICK_MS)
