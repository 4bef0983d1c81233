"""Publishing reduced runs to a Tiled server, a sink fed from the local curve stacks.

The local stack stays the record (its rows are committed to the run ledger first); every
``every`` seconds the publisher sends each run's rows committed since the last round
(:mod:`saxs_pipeline.tiled.reducedrun`), so a notebook sees the reduction while the run
goes on. When Tiled cannot be reached the reduction is not held up: one error line says
so, the publisher retries with a growing pause, says when Tiled is back and catches up
from the stacks (resending from the reduced run's ``n_committed``: a partly sent batch is
sent again, harmlessly). A run that ended is finished (its stop in the metadata) once all
its rows are out; ``<run folder>/.tiled-published`` then records it, so a restarted
consumer knows which runs still need publishing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saxs_pipeline.tiled.reducedrun import ReducedRun, read_rows

__all__ = ["MARKER", "Publication", "TiledPublisher"]

log = logging.getLogger(__name__)

MARKER = ".tiled-published"


@dataclass
class Publication:
    """One reduced run to publish: the raw run's uid, its stack, what its start says."""

    raw_uid: str
    stack: Path
    start: dict[str, Any]
    stop: dict[str, Any] | None = None  # set when the run ended
    node: ReducedRun | None = field(default=None, repr=False)
    sent: int = 0

    @property
    def folder(self) -> Path:
        return self.stack.parent


def _is_outage(exc: BaseException) -> bool:
    """Tiled unreachable or failing (connection, timeout, 5xx), not a refused request."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError)


class TiledPublisher:
    """See the module doc. ``connect`` returns the Tiled root client (default:
    ``tiled.client.from_uri(url)``; the API key comes from ``TILED_API_KEY``)."""

    def __init__(self, url: str, *, every: float = 0.5, batch_rows: int = 1024,
                 connect: Callable[[], Any] | None = None, max_pause: float = 10.0) -> None:
        self.url, self.every, self.batch_rows, self.max_pause = url, every, batch_rows, max_pause
        self._connect = connect or self._from_uri
        self._runs: dict[str, Publication] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._client: Any = None
        self.down_since: float | None = None
        self.published_rows = 0
        self._thread = threading.Thread(target=self._loop, name="saxs-tiled", daemon=True)

    def _from_uri(self) -> Any:
        from tiled.client import from_uri

        return from_uri(self.url)

    # -- what to publish -------------------------------------------------------------------

    def add(self, pub: Publication) -> None:
        """Publish ``pub`` (again: a run taken up after it ended goes on)."""
        (pub.folder / MARKER).unlink(missing_ok=True)
        with self._lock:
            known = self._runs.setdefault(pub.raw_uid, pub)
            known.stop = None
        self._wake.set()

    def finish(self, raw_uid: str, stop: Mapping[str, Any]) -> None:
        """The run ended: publish the rest of its rows, then ``stop``."""
        with self._lock:
            pub = self._runs.get(raw_uid)
            if pub is not None:
                pub.stop = dict(stop)
        self._wake.set()

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> TiledPublisher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """One last round (bounded by ``timeout``), then stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        pause = self.every
        while True:
            stopping = self._stop.is_set()
            try:
                self._round()
                if self.down_since is not None:
                    log.warning("Tiled at %s is back after %.0f s: the reduced runs are caught "
                                "up", self.url, time.monotonic() - self.down_since)
                    self.down_since = None
                pause = self.every
            except Exception as exc:
                if not _is_outage(exc):
                    log.exception("publishing to Tiled at %s failed", self.url)
                elif self.down_since is None:
                    self.down_since = time.monotonic()
                    log.error("Tiled at %s cannot be reached (%s: %s): the reduction goes on "
                              "locally and is published when Tiled is back", self.url,
                              type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                self._client = None
                for pub in self._runs.values():
                    pub.node = None  # looked up again: the server may have restarted
                pause = min(self.max_pause, max(pause * 2, 1.0))
            if stopping:
                return
            self._wake.wait(pause)
            self._wake.clear()

    def _round(self) -> None:
        if self._client is None:  # at once, not with the first run: that one is live
            self._client = self._connect()
            log.info("publishing reduced runs to Tiled at %s", self.url)
        with self._lock:
            runs = list(self._runs.values())
        for pub in runs:
            self._publish(pub)

    def _publish(self, pub: Publication) -> None:
        if pub.node is None:
            pub.node = ReducedRun(self._client, pub.raw_uid)
            pub.sent = pub.node.n_committed
        if pub.node.node is None:
            try:
                first = read_rows(pub.stack, 0, 0)
            except (FileNotFoundError, KeyError):  # not created yet, or still being created
                return
            pub.node.create(pub.start, first)
        stop = pub.stop  # read once: rows committed before the run ended are all there
        while True:
            try:
                rows = read_rows(pub.stack, pub.sent, self.batch_rows)
            except (FileNotFoundError, KeyError):  # the stack is still being created
                break
            if rows.stop <= rows.start:
                break
            pub.sent = pub.node.append(pub.start, rows)
            self.published_rows += rows.stop - rows.start
        if stop is not None:
            pub.node.finish(dict(stop, num_frames=pub.sent))
            with self._lock:
                if pub.stop is not stop:  # taken up again meanwhile: it goes on
                    return
                self._runs.pop(pub.raw_uid, None)
            (pub.folder / MARKER).write_text(f"{pub.sent}\n")
            log.info("reduced run of %s published to Tiled (%d rows)", pub.raw_uid, pub.sent)
