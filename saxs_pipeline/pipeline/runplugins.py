"""The plugins a run installs on its cluster: the statistics and live-page plugins on the
scheduler, and on every worker the run's
:class:`~saxs_pipeline.plugins.worker.IntegratorPlugin` (its calibration, masks,
corrections) under a name of the run's own -- registered on every (re)connection of the
:class:`~saxs_pipeline.pipeline.cluster.ClusterLink`, so a restarted scheduler or a worker
joining later has them too, and unregistered when the run ends.
"""

from __future__ import annotations

import logging
from typing import Any

from saxs_pipeline.live.plugin import SaxsLive
from saxs_pipeline.pipeline.cluster import ClusterLink
from saxs_pipeline.pipeline.cpuparts import DRIVER
from saxs_pipeline.plugins.stats import SaxsStats
from saxs_pipeline.plugins.worker import PLUGIN_NAME, IntegratorPlugin, Prepared

__all__ = ["RunPlugins"]

log = logging.getLogger(__name__)


class RunPlugins:
    """The plugins of the run ``queue_id`` (module doc) for its ``prepared`` calibration."""

    def __init__(self, link: ClusterLink, queue_id: str, prepared: Prepared,
                 with_std: bool) -> None:
        self.link, self.queue_id, self.prepared, self.with_std = link, queue_id, prepared, with_std
        self.name = f"{PLUGIN_NAME}-{queue_id}"

    def install(self) -> None:
        """Register them now and on every reconnection."""
        self.link.add_hook(self.name, self._register)

    def _register(self, client: Any) -> None:
        p = self.prepared
        client.loop.add_callback(DRIVER.adopt, "scheduler")  # the driver's CPU by part
        client.register_plugin(SaxsStats())
        client.register_plugin(SaxsLive())
        client.register_plugin(IntegratorPlugin(p.calibration, p.attachments,
                                                queue_id=self.queue_id, with_std=self.with_std,
                                                correction_images=p.corrections,
                                                normalisation=p.normalisation),
                               name=self.name)

    def remove(self) -> None:
        """No more registering; the workers' plugin goes while the scheduler is there."""
        self.link.remove_hook(self.name)
        if self.link.status.connected:
            try:
                self.link.get(timeout=1).unregister_worker_plugin(self.name)
            except Exception as exc:  # workers gone, client closing: nothing to clean up
                log.debug("unregistering %s failed: %s", self.name, exc)
