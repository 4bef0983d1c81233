"""The saxs_pipeline processes of the multi-host harness, on the hosts of
:class:`netns.Net`: a ``dask scheduler`` (with the stats plugin) on host ``s``,
``saxs-worker`` processes on the others, and ``saxsdog`` as the driver on ``s``."""

from __future__ import annotations

from pathlib import Path

from netns import PYTHON, Net
from procs import wait_until

PORT = 8786  # the scheduler's namespace is private: no other process can hold the port


class Cluster:
    """The processes of the harness: a scheduler on ``s``, workers on the others, each
    worker host with its own operator cache (hosts share no cache, only the data)."""

    def __init__(self, net: Net, tmp: Path, ttl: str = "8s") -> None:
        self.net, self.tmp, self.ttl = net, tmp, ttl
        self.address = f"tcp://{net['s'].ip}:{PORT}"

    def scheduler(self) -> None:
        log = self.tmp / "scheduler.log"
        # worker-ttl: a host whose cable is out never closes its connections; the
        # scheduler removes it (and reruns its tasks) after this much silence.
        self.net["s"].python(["-m", "distributed.cli.dask_scheduler", "--host", self.net["s"].ip,
                              "--port", str(PORT), "--no-dashboard", "--preload",
                              "saxs_pipeline.stats"], log,
                             {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": self.ttl})
        wait_until(lambda: "Scheduler at" in log.read_text(), 60, "the scheduler",
                   self.net["s"].procs)

    def worker(self, name: str, wait: bool = True, view: tuple[Path, Path] | None = None) -> Path:
        """Start ``saxs-worker`` on host ``name``. ``view=(real, seen)``: the worker sees
        directory ``real`` only at ``seen`` (its own mount namespace: ``real`` is hidden
        under an empty tmpfs), as a node mounting the file system elsewhere would."""
        host = self.net[name]
        log = self.tmp / f"{name}.log"
        cache = self.tmp / f"cache-{name}"
        cache.mkdir(exist_ok=True)
        argv = [PYTHON, "-m", "saxs_pipeline.plugins.worker", self.address, "--nthreads", "1", "--host",
                host.ip, "--no-dashboard", "--no-nanny", "--name", name]
        proc = host.run(elsewhere(view, argv) if view else argv, log,
                        {"SAXS_PIPELINE_CACHE": str(cache)})
        if wait:
            wait_until(lambda: "Registered to" in log.read_text(), 60, f"worker {name}", [proc])
        return log

    def saxsdog(self, args: list[str], log: Path, env: dict[str, str] | None = None,
                host: str = "s"):
        return self.net[host].python(["-m", "saxs_pipeline.cli.saxsdog", "--scheduler",
                                     self.address, *args], log, env, cwd=self.tmp)


def elsewhere(view: tuple[Path, Path], argv: list[str]) -> list[str]:
    """``argv`` in a mount namespace where ``view[0]`` is seen only at ``view[1]``."""
    real, seen = view
    script = (f"mkdir -p '{seen}' && mount --bind '{real}' '{seen}' && "
              f"mount -t tmpfs saxs-hidden '{real}' && exec \"$@\"")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]
