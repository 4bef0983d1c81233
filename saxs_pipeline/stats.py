"""The scheduler preload: ``dask scheduler --preload saxs_pipeline.stats`` adds the
:class:`~saxs_pipeline.plugins.stats.SaxsStats` plugin when the scheduler starts.

This name is what facility scheduler configurations and ``LocalCluster(scheduler_options=
{"preload": [...]})`` calls carry, so it stays at the package's top while the plugin itself
lives with the other Dask plugins in :mod:`saxs_pipeline.plugins`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from saxs_pipeline.plugins.stats import SaxsStats

if TYPE_CHECKING:
    from distributed import Scheduler

__all__ = ["dask_setup"]


def dask_setup(scheduler: Scheduler) -> None:
    """Called by Dask's preload machinery on scheduler start."""
    scheduler.add_plugin(SaxsStats())
