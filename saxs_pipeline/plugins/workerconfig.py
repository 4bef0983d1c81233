"""The Dask settings our worker processes start with: the environment a nanny gives them
(the allocator's) and the worker config (Dask's statistical profiler off).

Applied where we start workers: ``saxs-worker`` (its own process, with or without a
nanny) and the embedded cluster of :class:`saxs_pipeline.pipeline.cluster.ClusterLink`
(``saxsdog``, ``saxsdogserver``, notebooks) and the scripts that make a LocalCluster.
Plain ``dask worker`` processes keep Dask's defaults.
"""

from __future__ import annotations

from typing import Any

import dask

__all__ = ["PROFILE_KEY", "WORKER_ENVIRON", "nanny_environ_config", "profile_enabled",
           "worker_config"]

# Environment of worker processes started by a nanny. Every frame allocates a few MB and a
# batch a few 10 MB; with Dask's default MALLOC_TRIM_THRESHOLD_=65536 glibc hands that
# memory back after each batch and the next one page-faults it in again: measured 9.5 ms
# CPU per Pilatus frame instead of 5.5 ms. Keeping it (the working set stays at its
# peak, a few hundred MB per worker) is the better trade for a frame loop.
WORKER_ENVIRON = {
    "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30),
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),  # glibc's maximum: frames come from the heap
}

# Dask's statistical profiler samples the running task's stack every 10 ms and keeps one
# call tree per second, twice (per worker and per task prefix), in deques of
# ``distributed.admin.low-level-log-length`` (1000) entries: the worker's memory grows for
# the first ~17 minutes of every run. It was the linear worker growth of the 10^5-frame
# soak (7.4 % over its second half). Measured: the two deques held 3.7 MB after 51 s
# (76 kB/s per worker, ~75 MB at their bound); over the second half of the soak the
# workers grew 104-109 kB/s with it and 6-8 kB/s without (worker CPU per frame the same
# within the noise). Nobody reads those trees during a beamtime (the dashboard's profile
# page does), so our workers run without; a user's dask config (YAML or
# DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=True) turns it back on.
PROFILE_KEY = "distributed.worker.profile.enabled"


def nanny_environ_config() -> dict[str, str]:
    """``dask.config.set`` settings that give worker processes :data:`WORKER_ENVIRON`
    (read by each nanny when it is created)."""
    return {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENVIRON.items()}


def profile_enabled() -> Any:
    """Whether our workers run Dask's profiler: what the user's own dask config (YAML
    files, ``DASK_*`` variables) says, or what was set in this process when it differs
    from Dask's default; otherwise off (see :data:`PROFILE_KEY`)."""
    own = dask.config.get(PROFILE_KEY, None, config=dask.config.collect(dask.config.paths))
    if own is not None:
        return own
    default = dask.config.get(PROFILE_KEY, True, config=dask.config.merge(*dask.config.defaults))
    current = dask.config.get(PROFILE_KEY, default)
    return current if current != default else False


def worker_config() -> dict[str, Any]:
    """``dask.config.set`` settings around the start of worker processes (the nanny
    copies its config into the processes it spawns; a worker without one reads it at
    creation): :func:`nanny_environ_config` and the profiler (:func:`profile_enabled`)."""
    return nanny_environ_config() | {PROFILE_KEY: profile_enabled()}
