"""The embedded cluster the benchmarks time: started as ``saxsdog`` starts it, and warmed
up on every worker before a timed case."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.files import Source, copy_frames


@contextlib.contextmanager
def embedded(workers: int) -> Iterator[Any]:
    """A client of an embedded cluster as ``saxsdog`` starts it (our worker settings)."""
    import dask
    from distributed import Client, LocalCluster

    from saxs_pipeline.pipeline.cluster import embedded_cluster_config, embedded_cluster_options

    with dask.config.set(embedded_cluster_config()):
        cluster = LocalCluster(**embedded_cluster_options(workers))
    with cluster, Client(cluster) as client:
        yield client


def pids_of(client: Any) -> Callable[[], set[int]]:
    """The benchmark's own processes: this one (driver, scheduler) and the workers."""

    def pids() -> set[int]:
        return {os.getpid(), *client.run(os.getpid).values()}

    return pids


def warm_workers(client, source: Source, root: Path) -> None:
    """Integrate frames on every worker before any timed case, as pyFAI's loop is timed
    after its first call: a worker's first frame loads the compiled kernels from numba's
    cache (~0.2 s), and a warm-up of 4 frames (one task) had warmed only one worker."""
    from saxs_pipeline.pipeline.queue import ImageQueue

    workers = set(client.scheduler_info()["workers"])
    for attempt in range(3):  # tasks of 2 frames: every worker gets some almost surely
        data = root / f"data-{attempt}"
        copy_frames(source.frame, data, 8 * len(workers))
        with ImageQueue(client, source.calibration, data, batch_size=2,
                        relpath=f"../work-{attempt}") as q:  # no attempt replaces another's
            q.readdir()
            q.join(120)
            done = q.dispatcher.by_worker()
        if len(done) >= len(workers):
            break
    else:
        print(f"warm-up: not every worker integrated a frame ({done})", file=sys.stderr)


def quiet_dask_logs() -> None:
    """Warnings on the console, Dask's and tornado's only from errors up (a benchmark's
    table should not drown in a cluster's start-up and shutdown lines)."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    import distributed  # noqa: F401  (sets its loggers' levels when imported: quiet them after)

    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
