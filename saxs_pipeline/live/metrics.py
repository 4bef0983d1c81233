"""Prometheus metrics of the running queues, on the scheduler's ``/metrics``.

distributed serves ``/metrics`` from ``prometheus_client``'s default registry; a
collector registered there is scraped with the scheduler's own metrics. One collector
for the process reads every started :class:`~saxs_pipeline.live.plugin.SaxsLive`
(tests start several schedulers in one process, and a registry refuses two collectors
of the same names). Needs prometheus_client, imported here only.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

if TYPE_CHECKING:
    from saxs_pipeline.live.state import LiveQueues

__all__ = ["SaxsCollector", "register", "unregister"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_plugins: weakref.WeakSet[Any] = weakref.WeakSet()
_collector: SaxsCollector | None = None


class SaxsCollector:
    """``saxs_frames_{processed,failed,retried}_total``, ``saxs_backlog_frames``,
    ``saxs_latency_seconds`` and ``saxs_integration_seconds``, labelled by queue."""

    def collect(self) -> Iterator[Any]:
        labels = ["queue"]
        processed = CounterMetricFamily("saxs_frames_processed", "Frames integrated", labels=labels)
        failed = CounterMetricFamily("saxs_frames_failed", "Frames failed after their last try",
                                     labels=labels)
        retried = CounterMetricFamily("saxs_frames_retried", "Tries again of frames still being "
                                      "written", labels=labels)
        backlog = GaugeMetricFamily("saxs_backlog_frames", "Frames taken and not yet finished",
                                    labels=labels)
        latency = HistogramMetricFamily("saxs_latency_seconds", "File closed (mtime) to its "
                                        "curves written", labels=labels)
        integration = HistogramMetricFamily("saxs_integration_seconds", "A worker's "
                                            "integration time per frame", labels=labels)
        for plugin in list(_plugins):
            for qid, live in list(plugin.queues.items()):
                processed.add_metric([qid], live.processed)
                failed.add_metric([qid], live.failed)
                retried.add_metric([qid], live.retried)
                backlog.add_metric([qid], live.backlog)
                latency.add_metric([qid], live.latency.cumulative(), live.latency.total)
                integration.add_metric([qid], live.integration.cumulative(),
                                       live.integration.total)
        yield from (processed, failed, retried, backlog, latency, integration)

    def describe(self) -> list[Any]:
        return []  # no check of names at registration: they are fixed above


def register(plugin: LiveQueues) -> None:
    global _collector
    with _lock:
        _plugins.add(plugin)
        if _collector is None:
            _collector = SaxsCollector()
            REGISTRY.register(_collector)


def unregister(plugin: LiveQueues) -> None:
    with _lock:
        _plugins.discard(plugin)
