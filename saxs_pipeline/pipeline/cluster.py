"""The driver's link to the Dask cluster, and what happens when the scheduler goes away.

:class:`ClusterLink` owns (or wraps) the driver's :class:`distributed.Client`: an embedded
LocalCluster of worker processes on loopback, or a connection to a scheduler address. A
monitor thread follows the connection:

* **lost**: the client's connection broke (the scheduler died or the network dropped).
  Said once in the log and in :attr:`ClusterLink.status`; the dispatcher stops submitting
  and puts the frames of the cancelled tasks back in line (none is failed or dropped).
* **back**: the client reconnected by itself (within its connect timeout), or -- when it
  gave up and closed -- a new client reached a scheduler at the same address. The
  on-connect hooks run again (a restarted scheduler knows no plugins: the queue registers
  its integrator and stats plugins there) and :attr:`ClusterLink.generation` goes up, which
  tells the dispatcher to resubmit every frame not yet committed.
* **gone**: no scheduler came back within ``reconnect_timeout`` seconds (None: keep
  trying, as a long-running server does), or the embedded cluster died. The run ends;
  the frames left are pending in the ledger, and ``--resume`` completes the set.

Workers joining, leaving or going silent are followed by :attr:`ClusterLink.workers`
(:mod:`saxs_pipeline.pipeline.workers`). :attr:`ClusterLink.path_map` says where the
workers see the driver's files (:mod:`saxs_pipeline.pipeline.pathmap`): a property of the
cluster, shared by every queue that uses the link.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from saxs_pipeline.pipeline.pathmap import PathMap
from saxs_pipeline.pipeline.workers import WorkerWatch

__all__ = ["ClusterGoneError", "ClusterLink", "LinkStatus", "embedded_cluster_config",
           "embedded_cluster_options"]

log = logging.getLogger(__name__)

Hook = Callable[[Any], None]

_CHECK_INTERVAL = 0.25
_RETRY_INTERVAL = 1.0


class ClusterGoneError(RuntimeError):
    """The cluster is gone for good (see the module doc)."""


@dataclass(frozen=True)
class LinkStatus:
    state: str  # "starting", "connected", "lost", "gone", "closed"
    since: float  # when the state began (time.time())
    generation: int  # bumped at every (re)connection
    address: str | None
    error: str | None = None

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def describe(self) -> str:
        where = self.address or "the embedded cluster"
        if self.state == "connected":
            return f"connected to {where}"
        if self.state in ("lost", "gone"):
            ago = time.time() - self.since
            what = "lost" if self.state == "lost" else "gone"
            return f"scheduler {where} {what} {ago:.0f} s ago" + (
                f" ({self.error})" if self.error else "")
        return f"{self.state} ({where})"


def embedded_cluster_options(n_workers: int) -> dict[str, Any]:
    """The embedded cluster: worker processes on loopback only, and its HTTP endpoints
    (``/metrics``, the SAXS page, and the Dask dashboard where bokeh is installed) on a
    free loopback port (the default 8787 is often taken)."""
    import importlib.util

    dashboard = importlib.util.find_spec("bokeh") is not None
    return {
        "n_workers": n_workers, "threads_per_worker": 1, "processes": True,
        "host": "127.0.0.1", "dashboard_address": None,
        "scheduler_kwargs": {"dashboard": dashboard, "dashboard_address": "127.0.0.1:0"},
    }


# The embedded cluster's scheduler and nannies run on the driver's event loop, where their
# periodic work costs the driver CPU whether frames come or not: idle, 35-44 ms of CPU per
# second with Dask's defaults, 13-14 ms with these (measured on the 2-core machine of the
# benchmarks). Each is a watchdog or a dashboard graph, not the scheduling: the event
# loop's blocked-time probe (every 20 ms in each of the three servers), the scheduler's
# system monitor for the dashboard's graphs (500 ms) and the nannies' memory check of
# their worker process (100 ms; a runaway worker is still stopped within half a second).
_EMBEDDED_CONFIG = {
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def embedded_cluster_config() -> dict[str, Any]:
    """``dask.config.set`` settings around the start of the embedded cluster: our
    workers' (:func:`~saxs_pipeline.plugins.workerconfig.worker_config`) and the
    driver's cheaper periodic work (see ``_EMBEDDED_CONFIG``); a user's own dask config
    for these keys wins."""
    import dask

    from saxs_pipeline.plugins.workerconfig import worker_config

    own = dask.config.collect(dask.config.paths)
    cheaper = {k: v for k, v in _EMBEDDED_CONFIG.items()
               if dask.config.get(k, None, config=own) is None}
    return worker_config() | cheaper


class ClusterLink:
    """See the module doc. Give ``client`` to follow a client made elsewhere (it is not
    closed here and not replaced when it closes), ``scheduler`` / ``scheduler_file`` to
    connect to a cluster, or neither for an embedded cluster of ``threads`` workers."""

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        scheduler_file: str | None = None,
        client: Any = None,
        threads: int = 2,
        cluster_options: dict[str, Any] | None = None,
        connect_timeout: float = 10.0,
        reconnect_timeout: float | None = None,
        path_map: PathMap | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.path_map = path_map or PathMap()
        self.scheduler_file = scheduler_file
        self.threads = max(1, int(threads))
        self.cluster_options = cluster_options or {}
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self._owned = client is None
        self._client = client
        self._cluster: Any = None
        self._lock = threading.Lock()
        self._hooks: dict[str, Hook] = {}
        # Held while hooks run and the link turns connected, so a hook added meanwhile
        # is neither missed nor run twice.
        self._hook_lock = threading.RLock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._status = LinkStatus("starting", time.time(), 0, scheduler)
        self._thread: threading.Thread | None = None
        self.workers = WorkerWatch(self._connected_client)
        if client is not None:
            self._address = self._client_address(client)
            self._set("connected", generation=1)
            self._ready.set()

    # -- life cycle ------------------------------------------------------------------------

    def start(self, wait: bool = False) -> ClusterLink:
        """Connect (or start the embedded cluster) on a background thread that then
        monitors the connection; with ``wait``, block until connected and re-raise a
        start-up failure."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="saxs-cluster-link",
                                            daemon=True)
            self._thread.start()
            self.workers.start()
        if wait:
            self.get(timeout=None)
        return self

    def get(self, timeout: float | None = 120.0) -> Any:
        """The current client; waits for start-up and re-raises its error."""
        if self._thread is None and not self._ready.is_set():
            self.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the Dask cluster is still starting")
        if self._error is not None:
            raise ClusterGoneError(f"Dask client unavailable: {self._error}") from self._error
        with self._lock:
            if self._client is None:
                raise ClusterGoneError(self._status.describe())
            return self._client

    def _connected_client(self) -> Any:
        with self._lock:
            return self._client if self._status.connected else None

    @property
    def ready(self) -> bool:
        """True once the client is there (or its start failed)."""
        return self._ready.is_set()

    @property
    def status(self) -> LinkStatus:
        with self._lock:
            return self._status

    @property
    def address(self) -> str | None:
        return getattr(self, "_address", None)

    def add_hook(self, name: str, hook: Hook) -> None:
        """Run ``hook(client)`` now (when connected) and after every (re)connection."""
        with self._hook_lock:
            with self._lock:
                self._hooks[name] = hook
                client = self._client if self._status.connected else None
            if client is not None:
                hook(client)

    def remove_hook(self, name: str) -> None:
        with self._lock:
            self._hooks.pop(name, None)

    def close(self) -> None:
        self._stop.set()
        self.workers.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.connect_timeout + 5)
        with self._lock:
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
            self._set_locked("closed")
        if not self._owned:
            return
        for obj in (client, cluster):
            if obj is not None:
                try:
                    obj.close(timeout=5) if obj is client else obj.close()
                except Exception as exc:  # shutting down: say so and go on
                    log.debug("closing %s: %s", type(obj).__name__, exc)

    # -- state -------------------------------------------------------------------------------

    def _set(self, state: str, *, generation: int | None = None, error: str | None = None) -> None:
        with self._lock:
            self._set_locked(state, generation=generation, error=error)

    def _set_locked(self, state: str, *, generation: int | None = None,
                    error: str | None = None) -> None:
        old = self._status
        gen = old.generation if generation is None else generation
        since = old.since if (state == old.state and gen == old.generation) else time.time()
        self._status = LinkStatus(state, since, gen, self.address, error)

    @staticmethod
    def _client_address(client: Any) -> str | None:
        try:
            return client.scheduler.address
        except Exception:  # an embedded cluster that is not up yet
            return None

    # -- the monitor thread --------------------------------------------------------------------

    def _run(self) -> None:
        if self._client is None:
            try:
                self._connect_first()
            except BaseException as exc:  # reported to whoever asks for the client
                log.error("the Dask client could not be started: %s", exc)
                self._error = exc
                self._set("gone", error=str(exc))
                self._ready.set()
                return
            self._ready.set()
        while not self._stop.wait(_CHECK_INTERVAL):
            try:
                self._check()
            except Exception:  # the monitor must outlive any one check
                log.exception("cluster monitor check failed")

    def _connect_first(self) -> None:
        from distributed import Client, LocalCluster

        if self.scheduler or self.scheduler_file:
            client = self._new_client()
            log.info("connected to the Dask scheduler at %s", self._client_address(client))
        else:
            import dask

            options = embedded_cluster_options(self.threads)
            options.update(self.cluster_options)
            # the nannies copy the config (allocator environment, profiler off) into
            # every worker process they spawn, now and at restarts
            with dask.config.set(embedded_cluster_config()):
                self._cluster = LocalCluster(**options)
            client = Client(self._cluster)
            log.info("started a local Dask cluster with %d worker process(es)", self.threads)
        with self._lock:
            self._client = client
            self._address = self._client_address(client)
        self._connected(client, 1)

    def _connected(self, client: Any, generation: int) -> bool:
        """Run the hooks, then say connected; False when a hook failed."""
        with self._hook_lock:
            with self._lock:
                hooks = list(self._hooks.items())
            for name, hook in hooks:
                try:
                    hook(client)
                except Exception as exc:
                    # The scheduler may drop again at once; the next check tries again.
                    log.warning("after connecting, %s failed: %s", name, exc)
                    return False
            self._set("connected", generation=generation)
            return True

    def _new_client(self) -> Any:
        from distributed import Client

        if self.scheduler_file:
            return Client(scheduler_file=self.scheduler_file, timeout=self.connect_timeout)
        return Client(self.scheduler, timeout=self.connect_timeout)

    def _check(self) -> None:
        with self._lock:
            client, status = self._client, self._status
        if client is None or status.state in ("gone", "closed"):
            return
        cstatus = client.status
        if cstatus == "running":
            if status.state == "lost":
                self._back(client, same_client=True)
            return
        if status.state == "connected":
            self._set("lost")
            log.warning("lost the Dask scheduler at %s; frames wait until it is back",
                        self.address or "the embedded cluster")
        if cstatus == "closed":
            self._replace_closed_client()

    def _replace_closed_client(self) -> None:
        status = self.status
        if not self._owned or (self.scheduler is None and self.scheduler_file is None):
            self._gone("the client closed" if not self._owned else "the embedded cluster died")
            return
        if self.reconnect_timeout is not None and time.time() - status.since > self.reconnect_timeout:
            self._gone(f"no scheduler within {self.reconnect_timeout:g} s")
            return
        if self._stop.wait(_RETRY_INTERVAL):
            return
        try:
            client = self._new_client()
        except (OSError, TimeoutError, ValueError) as exc:
            log.debug("scheduler still unreachable: %s", exc)
            return
        with self._lock:
            old, self._client = self._client, client
        try:
            old.close(timeout=1)
        except Exception as exc:  # the old client is closed already
            log.debug("closing the old client: %s", exc)
        self._back(client, same_client=False)

    def _back(self, client: Any, *, same_client: bool) -> None:
        if not self._connected(client, self.status.generation + 1):
            return
        log.warning("the Dask scheduler at %s is back (%s client); resubmitting what is not "
                    "committed", self.address, "same" if same_client else "new")

    def _gone(self, why: str) -> None:
        self._set("gone", error=why)
        log.error("the Dask cluster is gone: %s", why)
