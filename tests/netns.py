"""Hosts for the multi-host tests: Linux network namespaces made by the test itself.

The first host is the hub: it holds a bridge (``br0``, ``<subnet>.1``) and the other
hosts hang on it through veth pairs (``eth0`` in the host, ``v<name>`` on the bridge),
so every host reaches every other one on a private /24 that exists only inside these
namespaces. Nothing is routed to or from the machine's own network, so only the
addresses made here can be contacted. Processes run in a host through ``ip netns exec``
(which execs: the PID is the program's); :meth:`Net.close` kills whatever is still
running in the namespaces (by PID, from ``ip netns pids``) and deletes them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import spawn

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"saxs-probe-{os.getpid()}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """One namespace: its name on the test subnet, its address and its processes."""

    name: str
    netns: str
    ip: str
    dev: str = "eth0"
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, argv: list[str], log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.Popen:
        """Start ``argv`` in this host; ``env`` is passed explicitly through ``env(1)``
        (PYTHONPATH is always set to this worktree, so its code is what runs)."""
        pairs = {"PYTHONPATH": str(REPO), **(env or {})}
        cmd = ["ip", "netns", "exec", self.netns, "env", *(f"{k}={v}" for k, v in pairs.items()),
               *argv]
        p = spawn(cmd, log, cwd=cwd)
        self.procs.append(p)
        return p

    def python(self, args: list[str], log: Path, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> subprocess.Popen:
        return self.run([PYTHON, *args], log, env, cwd)

    def link(self, up: bool) -> None:
        """This host's network cable: in or out."""
        _ip("-n", self.netns, "link", "set", self.dev, "up" if up else "down")

    def pids(self) -> list[int]:
        r = _ip("netns", "pids", self.netns, check=False)
        return [int(p) for p in r.stdout.split()]

    def kill_all(self) -> None:
        """SIGKILL every process in this host (a host that died)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


class Net:
    """Namespaces ``saxs<pid>-<name>`` on ``10.213.<octet>.0/24``; see the module doc."""

    def __init__(self, names: list[str], octet: int | None = None) -> None:
        self.tag = f"saxs{os.getpid() % 100000}"
        self.octet = octet if octet is not None else 100 + os.getpid() % 100
        self.hosts: dict[str, Host] = {}
        try:
            for i, name in enumerate(names):
                self._add(name, i)
        except BaseException:
            self.close()
            raise

    def _add(self, name: str, i: int) -> None:
        netns = f"{self.tag}-{name}"
        _ip("netns", "add", netns)
        host = Host(name, netns, f"10.213.{self.octet}.{i + 1}", "br0" if i == 0 else "eth0")
        self.hosts[name] = host
        _ip("-n", netns, "link", "set", "lo", "up")
        if i == 0:
            _ip("-n", netns, "link", "add", "br0", "type", "bridge")
            _ip("-n", netns, "addr", "add", f"{host.ip}/24", "dev", "br0")
            _ip("-n", netns, "link", "set", "br0", "up")
            return
        hub = next(iter(self.hosts.values()))
        peer = f"v{name}"
        _ip("link", "add", "eth0", "netns", netns, "type", "veth", "peer", "name", peer,
            "netns", hub.netns)
        _ip("-n", hub.netns, "link", "set", peer, "master", "br0")
        _ip("-n", hub.netns, "link", "set", peer, "up")
        _ip("-n", netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and delete the namespaces."""
        hosts = list(self.hosts.values())
        # The workers first, then the hub (driver, scheduler): a worker told to stop while
        # its scheduler is closing waits for it in vain.
        for group in (hosts[1:], hosts[:1]):
            for h in group:
                for p in h.procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for h in group:
                for p in h.procs:
                    try:
                        p.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
        for h in reversed(hosts):  # the hub last: its bridge holds the other ends
            h.kill_all()
            _ip("netns", "del", h.netns, check=False)
        self.hosts.clear()
