"""Real processes for the fault tests: a ``dask scheduler`` and ``saxs-worker`` processes
on 127.0.0.1 (ephemeral ports), ``saxsdog`` runs, and stopping all of them by PID."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_signals() -> None:
    """Every process the tests start begins with SIGINT and SIGTERM at their defaults,
    however the suite was launched (issue 21, item 9). A script's background job (``cmd &``
    without job control), ``nohup``-style wrappers and many CI runners start pytest with
    SIGINT ignored, some with signals blocked; an ignored disposition and the blocked mask
    survive fork and exec, so every saxsdog, worker and scheduler a test starts would ignore
    its Ctrl-C. A *handled* signal is reset to its default by exec, so this gives pytest
    itself Python's usual KeyboardInterrupt handler (and SIGTERM its default), as when it
    is started from a terminal. Done once, in pytest's main thread before any test starts
    a thread or a process: unlike a ``preexec_fn`` per process (which the subprocess docs
    say is not safe in a process with threads, as our dask clusters have) it needs no
    code at each of the tests' ``Popen``/``run`` calls and also covers the processes that
    multiprocessing and Dask start on the tests' behalf."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def spawn(args: list[str], log: Path, **kw) -> subprocess.Popen:
    fh = open(log, "ab")  # noqa: SIM115 - closed with the process's life
    return subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, **kw)


def stop(procs: list[subprocess.Popen], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` s, every process still running."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def wait_until(check, timeout: float, what: str, procs: list[subprocess.Popen] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for p in procs:
            assert p.poll() is None, f"{p.args[:3]} exited with {p.returncode} while waiting for {what}"
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.05)


def scheduler(port: int, log: Path) -> subprocess.Popen:
    return spawn([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                  "--no-dashboard", "--preload", "saxs_pipeline.stats"], log)


def worker(address: str, log: Path, name: str) -> subprocess.Popen:
    return spawn([str(BIN / "saxs-worker"), address, "--nthreads", "1", "--host", "127.0.0.1",
                  "--no-dashboard", "--name", name], log)


def saxsdog(args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    return spawn([str(BIN / "saxsdog"), *args], log, cwd=cwd)


def ledger_counts(stack: Path) -> dict[str, int]:
    """Frames per ledger state of the run at ``stack``, its rows and its done rows."""
    from saxs_pipeline.pipeline.ledger import Ledger, read_manifest

    cal_id, _ = read_manifest(stack.with_suffix(".ledger"))
    led = Ledger(stack.with_suffix(".ledger"), cal_id)
    try:
        return led.counts() | {"n_rows": led.n_rows, "done_rows": len(list(led.iter_done()))}
    finally:
        led.close()


class PeakRSS:
    """Samples the resident memory of a process and all its descendants (a ``saxsdog``
    and its cluster) every ``every`` s in a thread, keeping each one's peak. A process
    past ``kill_above`` bytes has its whole tree killed at once: a bomb that works fails
    its test without taking the shared machine's memory."""

    def __init__(self, pid: int, every: float = 0.02, kill_above: float = 1.5e9) -> None:
        import threading

        import psutil

        self.root = psutil.Process(pid)
        self.every, self.kill_above = every, kill_above
        self.peaks: dict[int, tuple[int, str]] = {}  # pid -> (peak bytes, command line)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.every):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return  # the root is gone
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    if rss > self.peaks.get(p.pid, (0, ""))[0]:
                        self.peaks[p.pid] = (rss, " ".join(p.cmdline()[:3]))
                except psutil.Error:
                    continue
                if rss > self.kill_above:
                    for q in reversed(procs):
                        try:
                            q.kill()
                        except psutil.Error:
                            pass
                    return

    def stop(self) -> dict[int, tuple[int, str]]:
        self._stop.set()
        self._thread.join(5)
        return self.peaks

    @property
    def peak(self) -> int:
        return max((b for b, _ in self.peaks.values()), default=0)
