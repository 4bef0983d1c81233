"""A small disk that fills up, for the full-disk tests: a tmpfs of fixed size mounted in a
private mount namespace the test makes, so nothing shows in (or leaks into) the machine's
mounts; it disappears with the namespace.

Why a mount and not something smaller: a full disk is an ENOSPC from the kernel in the
middle of a write, in whichever process writes (the driver's SQLite ledger and zarr
stack, the workers' ``.chi`` files). Only a real file system of limited size produces it
in all of them at once; a quota or a fake would have to be wired into each writer.

A holder process (``unshare --mount --propagation private`` + ``mount -t tmpfs``, then
``sleep``) keeps the namespace; commands run in it through ``nsenter -t <holder> -m``
(which execs: the PID is the program's), and the test reads and writes the disk from
outside through ``/proc/<holder>/root``. :meth:`PrivateDisk.close` stops what still runs
by PID, then the holder, and with it the mount.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from procs import spawn, stop, wait_until

BIN = Path(sys.executable).parent


def unavailable() -> str | None:
    """Why a private tmpfs cannot be mounted here, or None when it can."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare/nsenter (util-linux) are not installed"
    if os.geteuid() != 0:
        return "mounting a tmpfs in a private mount namespace needs root"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs -o size=1m tmpfs /mnt"],
                       capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return f"unshare + mount are not permitted here: {r.stderr.strip()}"
    return None


class PrivateDisk:
    """A tmpfs of ``size_mb`` MB at ``mount`` (an empty directory), seen only by the
    commands :meth:`run` starts."""

    def __init__(self, mount: Path, size_mb: int, log: Path) -> None:
        mount.mkdir(parents=True, exist_ok=True)
        self.mount = mount
        self.procs: list[subprocess.Popen] = []
        self.holder = spawn(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f"mount -t tmpfs -o size={size_mb}m tmpfs {mount} && exec sleep 3600"],
                            log)
        try:
            wait_until(lambda: self._mounted(), 20, "the private tmpfs", [self.holder])
        except BaseException:
            self.close()
            raise

    def _mounted(self) -> bool:
        mounts = Path(f"/proc/{self.holder.pid}/mounts").read_text()
        return f" {self.mount} tmpfs " in mounts

    def view(self, path: Path | str = "") -> Path:
        """``path`` (absolute, or relative to the mount) as this process sees it."""
        path = self.mount / path
        return Path(f"/proc/{self.holder.pid}/root{path}")

    def run(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``argv`` inside the namespace."""
        p = spawn(["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv], log,
                  env=env, cwd=self.mount.parent)
        self.procs.append(p)
        return p

    def output(self, argv: list[str], timeout: float = 60) -> str:
        """Run ``argv`` inside the namespace to its end; its standard output. (For SQLite:
        it resolves the ``/proc/<pid>/root`` link and would look outside.)"""
        return subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv],
                              capture_output=True, text=True, timeout=timeout,
                              check=True).stdout

    def fill(self) -> None:
        """Take every free byte (another process filling the disk)."""
        block = b"\0" * (1 << 20)
        # unbuffered: the last block is written in part, nothing is left for the close
        with open(self.view("filler"), "wb", buffering=0) as fh:
            try:
                while fh.write(block):
                    pass
            except OSError:  # ENOSPC: the disk is full
                pass

    def free(self) -> None:
        self.view("filler").unlink()

    def free_bytes(self) -> int:
        st = os.statvfs(self.view())
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        stop(self.procs)
        stop([self.holder], grace=5)
