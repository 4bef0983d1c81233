"""The live view of running queues: what the driver pushes (:mod:`.feed`), what the
scheduler keeps of it (:mod:`.state`, :mod:`.plugin`), the SAXS page in the Dask
dashboard (:mod:`.page`, needs bokeh) and the Prometheus metrics (:mod:`.metrics`, needs
prometheus_client). Importing this package imports neither bokeh nor prometheus_client.
"""

from __future__ import annotations

PAGE_ROUTE = "saxs"  # the page's path under the dashboard's prefix
PUSH_HANDLER = "saxs_live_push"
INFO_HANDLER = "saxs_live_info"
PLUGIN_NAME = "saxs-live"

__all__ = ["INFO_HANDLER", "PAGE_ROUTE", "PLUGIN_NAME", "PUSH_HANDLER"]
