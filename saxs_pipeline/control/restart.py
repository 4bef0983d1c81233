"""The server's queue across a restart.

The running queue is recorded in ``<basedir>/.saxsdogserver/<name>.json`` at each change
of its state; a server restarted after a crash (or a SIGKILL) takes a queue recorded as
running up again: a directory queue from its ledger (frames taken but not committed are
redone, frames written while it was down are found by a walk of what changed since the
queue started), a Bluesky queue by subscribing again as its ``new`` did (its consumer
takes up the runs left open from their records).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from saxs_pipeline.control.paths import confine

__all__ = ["Host", "restore", "save_state"]

log = logging.getLogger("saxs_pipeline.control.commands")  # the server's queue lines, one logger


class Host(Protocol):
    """What a restart needs of the server's queue host
    (:class:`~saxs_pipeline.control.commands.QueueHost`)."""

    state_file: Path
    basedir: Path
    config: Any  # the server's ServerConfig: outdir, watch, feeder_url
    lifecycle: threading.Lock
    queue: Any

    def make_queue(self, calibration: dict[str, Any], directory: Path, masks: list[dict],
                   **extra: Any) -> Any: ...

    def make_bluesky(self, calibration: dict[str, Any], directory: Path, masks: list[dict],
                     spec: dict[str, Any], queue_id: str | None = None) -> Any: ...


def save_state(path: Path, q: Any, state: str) -> None:
    """Record queue ``q`` and its ``state`` (running, closed, aborted) in ``path``."""
    store = getattr(q, "store", None)
    if store is not None:
        record = {"ledger": str(store.ledger.path)}
    elif hasattr(q, "restart_record"):  # a Bluesky queue: what its "new" was
        record = q.restart_record()
    else:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**record, "state": state, "queue_id": q.queue_id,
                                   "time": time.time()}))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot record the queue in %s: %s", path, exc)


def restore(host: Host) -> None:
    """Take up the queue a previous server process left running in ``host``."""
    try:
        state = json.loads(host.state_file.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", host.state_file, exc)
        return
    if state.get("state") != "running":
        return
    if "bluesky" in state:
        _restore_bluesky(host, state)
        return
    from saxs_pipeline.pipeline.ledger import Why, read_manifest
    from saxs_pipeline.pipeline.ledgerdb import LedgerError

    try:
        _, manifest = read_manifest(state["ledger"])
        if not manifest:
            raise LedgerError("it has no manifest")
        directory = confine(host.basedir, os.path.relpath(manifest["directory"], host.basedir))
        with host.lifecycle:
            q = host.make_queue(manifest["calibration"], directory, manifest["attachments"],
                                resume=True, queue_id=state.get("queue_id"))
            q.start()
            host.queue = q
        if host.config.watch or host.config.feeder_url:
            q.readdir(why=Why.RESUME, since=float(manifest.get("start_time", 0)) - 1.0)
    except Exception as exc:  # a restart must come up even when the old queue cannot
        log.error("could not take up the queue recorded in %s: %s", host.state_file, exc)
        return
    log.warning("took up queue %s on %s from its ledger %s", q.queue_id, directory,
                state["ledger"])


def _restore_bluesky(host: Host, state: dict[str, Any]) -> None:
    try:
        new = state["bluesky"]
        # the server's -o (anywhere, as for any queue), else confined as at "new"
        work = host.config.outdir or confine(host.basedir,
                                             os.path.relpath(new["work"], host.basedir))
        with host.lifecycle:
            q = host.make_bluesky(new["calibration"], work, new["attachments"],
                                  new["source"], queue_id=state.get("queue_id"))
            q.start()
            host.queue = q
    except Exception as exc:  # a restart must come up even when the old queue cannot
        log.error("could not take up the Bluesky queue recorded in %s: %s",
                  host.state_file, exc)
        return
    log.warning("took up Bluesky queue %s from %s into %s", q.queue_id,
                new["source"]["address"], work)
