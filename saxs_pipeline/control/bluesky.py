"""A Bluesky source in the server's queue slot: ``new`` with ``argument.bluesky``.

The server's ``new`` normally starts a queue on a directory; with
``{"bluesky": {"address": "tcp://HOST:PORT", "field": NAME, "idle": S}}`` beside the
calibration it starts a :class:`~saxs_pipeline.bluesky.consumer.BlueskyConsumer`
instead, as ``saxsdog --bluesky`` does: one folder and curve stack per Bluesky run in the
calibration's Directory (or the server's ``-o``). The request's calibration, with its
mask attachments, is the one for runs whose start names none; runs may name a file or
an id of the server's ``--calibrations`` folder, and ``--bluesky-override`` lets their
start metadata set energy and distance.

:class:`BlueskyQueue` answers what the leash commands ask of a queue: ``stat`` lists
the runs, ``plot``/``get``/``failures``/``fileslist`` show the latest run, ``close``
stops receiving and lets the runs' queued frames finish, ``abort`` drops them, and a
following ``new`` aborts it like any queue. Runs still in progress stay open in their
records: the next Bluesky ``new`` on the same folder takes them up, and so does the
server restarted after a crash, which subscribes again as the recorded ``new`` did.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from saxs_pipeline.bluesky.consumer import BlueskyConsumer, ConsumerOptions
from saxs_pipeline.control import protocol as proto

__all__ = ["BlueskyQueue", "bluesky_options"]

log = logging.getLogger(__name__)

ARG = "$.argument.bluesky"


def bluesky_options(spec: dict[str, Any]) -> tuple[str, str | None, float]:
    """``(address, field, idle)`` of a request's ``bluesky`` argument (its shape is the
    schema's); a RequestError naming the field when the address is not tcp://HOST:PORT."""
    address = spec["address"]
    try:
        url = urlparse(address)
        port = url.port
    except ValueError:
        port = None
    if url.scheme != "tcp" or not url.hostname or not port:
        raise proto.RequestError(proto.VALIDATION_ERROR, f"{ARG}.address: {address!r} is not "
                                 "the proxy's out address tcp://HOST:PORT (a port of 1-65535)")
    return address, spec.get("field"), float(spec.get("idle", 120.0))


class BlueskyQueue:
    """See the module doc. ``options`` is the server's: ``calibrations``, ``overrides``,
    ``tiled`` and the queue options (``data_roots``)."""

    zarr_path = None  # one stack per run: no stack of its own to lock
    store = None  # no ledger of its own: a restart is recorded by restart_record
    live = None

    def __init__(self, link: Any, calibration: dict[str, Any], attachments: list[dict],
                 work: Path, spec: dict[str, Any], queue_id: str, *,
                 calibrations: Path | None = None,
                 overrides: tuple[tuple[str, str], ...] = (), tiled: str | None = None,
                 data_roots: tuple[str, ...] = ()) -> None:
        address, field, idle = bluesky_options(spec)
        self.spec = dict(spec)
        self.queue_id, self.directory = queue_id, work
        self.calibration_dict, self.attachments = calibration, attachments
        self.tiled = tiled
        self.publisher: Any = None
        self.options = ConsumerOptions(
            address, work, calibration, field, idle,
            data_roots=tuple(Path(r) for r in data_roots), attachments=tuple(attachments),
            calibrations=calibrations, overrides=overrides)
        self.link = link
        self.consumer: BlueskyConsumer | None = None
        self._ended: str | None = None  # "closed" / "aborted" once stopped
        self._stopper: threading.Thread | None = None
        self._start_time = time.time()
        self._lock = threading.Lock()

    def restart_record(self) -> dict[str, Any]:
        """What a restarted server needs to subscribe again (its state file keeps it)."""
        return {"bluesky": {"source": self.spec, "work": str(self.directory),
                            "calibration": self.calibration_dict,
                            "attachments": list(self.attachments)}}

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.tiled:
            from saxs_pipeline.tiled.publisher import TiledPublisher

            self.publisher = TiledPublisher(self.tiled).start()
        self.consumer = BlueskyConsumer(self.link, self.options, self.publisher).start()
        log.info("queue %s: Bluesky runs from %s into %s", self.queue_id,
                 self.options.address, self.directory)

    def _stop(self, abort: bool, timeout: float | None) -> None:
        if self.consumer is not None:  # an abort may come while a close finishes: both stop
            self.consumer.stop(timeout, abort=abort)
        with self._lock:
            publisher, self.publisher = self.publisher, None
        if publisher is not None:
            publisher.stop()

    def close(self, wait: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Stop receiving; the runs' queued frames finish (in the background unless
        ``wait``)."""
        if self._stopper is None:
            self._stopper = threading.Thread(target=self._stop, args=(False, timeout),
                                             name="saxs-bluesky-close", daemon=True)
            self._stopper.start()
        if wait:
            self._stopper.join()
        return self.stats()

    def abort(self) -> dict[str, Any]:
        if self._ended != "aborted":
            self._ended = "aborted"
            self._stop(True, 10.0)
        return self.stats()

    @property
    def closed(self) -> bool:
        return self._stopper is not None and not self._stopper.is_alive()

    @property
    def aborted(self) -> bool:
        return self._ended == "aborted"

    def readdir(self, wait: bool = False, **_: Any) -> None:
        raise RuntimeError("a Bluesky queue takes its frames from the runs' documents; "
                           "it has no directory to read")

    def submit_paths(self, paths: Any) -> int:
        return 0  # feeder events: frames come from the documents

    # -- what the commands read ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        runs = self.consumer.progress() if self.consumer is not None else []
        return {"images processed": sum(r["frames"] for r in runs),
                "failed": sum(r["failed"] for r in runs),
                "queue length": sum(r.get("queue length", 0) for r in runs),
                "start time": self._start_time, "bluesky": self.options.address,
                "documents rejected": self.consumer.errors if self.consumer is not None else 0,
                "runs": runs}

    def _latest(self) -> Any:
        return self.consumer.latest_queue if self.consumer is not None else None

    def latest(self) -> dict[str, Any] | None:
        q = self._latest()
        return q.latest() if q is not None else None

    def history(self) -> dict[str, Any]:
        q = self._latest()
        return q.history() if q is not None else {}

    def failures(self) -> list[dict[str, Any]]:
        q = self._latest()
        return q.failures() if q is not None else []

    def fileslist(self) -> dict[str, list[str]]:
        q = self._latest()
        return q.fileslist() if q is not None else {}
