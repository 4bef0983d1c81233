"""Real processes for the Bluesky and Tiled tests, on 127.0.0.1 only: bluesky's 0MQ proxy,
a ``tiled serve`` (catalogue or directory) and a ``saxsdog --bluesky`` consumer; each is
stopped by its PID (SIGTERM, then SIGKILL after a bounded wait), its output read on a
thread so the test can wait for a line with a deadline."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Proc:
    """A child process whose merged output is kept (and copied to ``log``)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.log_path = log
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=cwd)
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log_path, "a") as fh:
            for line in self.proc.stdout:
                line = _ANSI.sub("", line)
                fh.write(line)
                fh.flush()
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        """The first line from index ``start`` on matching ``pattern``; AssertionError
        naming the process's last lines when it does not come within ``timeout`` s."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    m = regex.search(line)
                    if m:
                        return m
                start = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    tail = "".join(self.lines[-25:])
                    raise AssertionError(f"{pattern!r} not seen within {timeout:g} s from "
                                         f"{self.proc.args[:3]} (exit {self.proc.poll()}):\n{tail}")
                self._changed.wait(min(left, 0.5))

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._changed:
            return sum(1 for line in self.lines if regex.search(line))

    def stop(self, grace: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def proxy(log: Path) -> tuple[Proc, str, str]:
    """bluesky's 0MQ proxy on random loopback ports: (process, in address, out address)."""
    p = Proc([BIN / "bluesky-0MQ-proxy", "--in-address", "tcp://127.0.0.1",
              "--out-address", "tcp://127.0.0.1"], log)
    m = p.wait_for(r"Receiving on address (\S+); publishing to address (\S+)\.", 60)
    return p, m.group(1), m.group(2)


def api_key() -> str:
    return secrets.token_hex(16)  # Tiled wants letters and digits only


class Tiled:
    """A ``tiled serve`` on a random loopback port; ``uri`` once it listens."""

    def __init__(self, args: list[str], log: Path, key: str, env: dict[str, str] | None = None,
                 timeout: float = 180.0, port: int = 0) -> None:
        self.key = key
        # `serve directory` makes its catalogue in a temporary folder it leaves behind: ours
        tmp = log.parent / f"{log.stem}-tmp"
        tmp.mkdir(exist_ok=True)
        self.proc = Proc([BIN / "tiled", "serve", *args, "--host", "127.0.0.1", "--port", str(port)],
                         log, env={"TILED_SINGLE_USER_API_KEY": key, "TMPDIR": str(tmp),
                                   **(env or {})})
        self.uri = self.proc.wait_for(r"Uvicorn running on (http://\S+)", timeout).group(1)

    def client(self) -> object:
        from tiled.client import from_uri

        return from_uri(self.uri, api_key=self.key)

    def stop(self) -> None:
        self.proc.stop()


def catalog_config(root: Path, readable: list[Path]) -> Path:
    """A ``tiled serve config`` file: a catalogue in SQLite under ``root`` (created on
    start), writable file and SQL-table storage there, ``readable`` folders (raw HDF5)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    readable_list = ", ".join(f'"{r}"' for r in readable)
    text = "\n".join([
        "trees:", "  - path: /", "    tree: catalog", "    args:",
        f"      uri: sqlite:///{root}/catalog.db", "      init_if_not_exists: true",
        f'      writable_storage: ["{root}/data", "sqlite:///{root}/tables.sqlite"]',
        f"      readable_storage: [{readable_list}]", ""])
    path = root / "config.yml"
    path.write_text(text)
    return path


def wait_until(check: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> object:
    """Poll ``check`` until it returns something true; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(every)
