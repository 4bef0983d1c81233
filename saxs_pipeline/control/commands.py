"""The leash commands, and the one queue a server runs.

Queue life cycle (``new``/``close``/``abort``/``readdir``) is serialised by one lock.
``new`` is all-or-nothing: the calibration, masks, directory and the new queue's
operators are checked and built, and its curve stack locked, before the running queue
is touched; on any failure the running queue goes on and the reply names the problem.
``close`` only stops the queue taking frames; the queued frames finish in the queue's
background thread, so ``abort`` can still cut a long ``close`` short.

The running queue is recorded in ``<basedir>/.saxsdogserver/<name>.json``; a server
restarted after a crash (or a SIGKILL) takes the queue up again from its ledger: frames
taken but not committed are redone, frames written while it was down are found by a walk
of what changed since the queue started.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saxs_pipeline.config.calibration import load_calibration
from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.config.masks import MaskError, decode_attachment, mask_from_bytes
from saxs_pipeline.control import protocol as proto
from saxs_pipeline.control.feeder import relative_to
from saxs_pipeline.control.paths import confine, confined_relpath, state_file
from saxs_pipeline.ops.budget import check_budget

__all__ = ["QueueHost"]

log = logging.getLogger(__name__)

_INT_STAT_KEYS = {"images processed", "queue length", "pics", "failed", "skipped", "workers",
                  "workers joined", "workers left", "documents rejected"}


def _default_queue_factory(*args: Any, **kwargs: Any) -> Any:
    from saxs_pipeline.pipeline.queue import ImageQueue  # imported late: it pulls in Dask

    return ImageQueue(*args, **kwargs)


class QueueHost:
    """Runs the server's queue; ``config`` is the server's ServerConfig, ``client`` a
    ClusterLink, a Dask client or None (tests with a stand-in ``queue_factory``)."""

    def __init__(self, config: Any, basedir: Path, client: Any,
                 queue_factory: Callable[..., Any] | None, stopping: threading.Event) -> None:
        self.config, self.basedir, self.client = config, basedir, client
        self.queue_factory = queue_factory or _default_queue_factory
        self.stopping = stopping
        self.queue: Any = None
        self.lifecycle = threading.Lock()
        self._count = 0
        self.state_file = state_file(basedir, config.name, ".json")

    # -- helpers ---------------------------------------------------------------------------

    def stat(self, q: Any = None) -> dict[str, Any]:
        q = self.queue if q is None else q
        return {} if q is None else self.filter_stat(q.stats())

    @staticmethod
    def filter_stat(stats: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (stats or {}).items():
            if value is None:
                continue
            if key in _INT_STAT_KEYS:
                out[key] = int(value)
            elif isinstance(value, int | float):
                out[key] = float(value)
            elif isinstance(value, list | dict):  # the workers' lists, frames by worker
                out[key] = value
            else:
                out[key] = str(value)
        out["time"] = time.time()
        return out

    def _live_queue(self) -> Any:
        q = self.queue
        if q is None or q.aborted or q.closed:
            raise proto.RequestError("ValueError", "Start Queue first")
        return q

    def feed(self, paths: list[str]) -> None:
        q = self.queue
        if q is None or q.closed or q.aborted:
            log.debug("feeder: %d path(s) ignored, no open queue", len(paths))
            return
        resolved = list(dict.fromkeys(relative_to(p, self.basedir) for p in paths))
        n = q.submit_paths(resolved)
        log.debug("feeder: %d of %d path(s) queued", n or 0, len(resolved))

    def _save_state(self, q: Any, state: str) -> None:
        store = getattr(q, "store", None)
        if store is not None:
            record = {"ledger": str(store.ledger.path)}
        elif hasattr(q, "restart_record"):  # a Bluesky queue: what its "new" was
            record = q.restart_record()
        else:
            return
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({**record, "state": state, "queue_id": q.queue_id,
                                       "time": time.time()}))
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.warning("cannot record the queue in %s: %s", self.state_file, exc)

    def _make_queue(self, calibration: dict[str, Any], directory: Path, masks: list[dict],
                    **extra: Any) -> Any:
        self._count += 1
        relpath = self.config.relpath if self.config.outdir else confined_relpath(
            self.basedir, directory, self.config.relpath)
        return self.queue_factory(
            self.client, calibration, directory, attachments=masks,
            out_dir=self.config.outdir, relpath=relpath, pattern=self.config.pattern,
            watch=self.config.watch, poll=self.config.poll,
            queue_id=extra.pop("queue_id", f"{self.config.name}-{self._count}"),
            filelist_base=self.basedir, **extra, **self.config.queue_options)

    # -- commands ----------------------------------------------------------------------------

    @staticmethod
    def dashboard(q: Any) -> dict[str, str]:
        """``{"dashboard": URL of the SAXS page}`` where the queue's cluster serves it.
        Not a key of the original's replies: v1 replies drop it (control.compat)."""
        live = getattr(q, "live", None)
        url = live.url() if live is not None else None
        return {"dashboard": url} if url else {}

    def cmd_stat(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        return proto.reply("stat", {"stat": self.stat(), **self.dashboard(self.queue)})

    def cmd_plot(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        q = self.queue
        if q is None:
            return proto.reply("no queue", {})
        latest = q.latest()
        if not latest:
            # The original answered ServerError 'data' here.
            return proto.reply("no image yet", {"stat": self.stat(q)})
        hist = q.history() or {}
        return proto.reply("plot", {
            "filename": str(latest.get("filename", "")),
            "graphs": list(latest.get("graphs", [])),
            "stat": self.stat(q),
            "history": list(hist.get("history", [])),
            "IntegralParameters": dict(hist.get("IntegralParameters", {})),
        })

    def cmd_get(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        q = self.queue
        if q is None:
            return proto.reply("no queue", {})
        return proto.reply("cal", {"cal": q.calibration_dict,
                                   "attachments": list(q.attachments or [])})

    def cmd_failures(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        q = self.queue
        if q is None:
            return proto.reply("no queue", {})
        return proto.reply("failures", {"failures": list(q.failures()), "stat": self.stat(q)})

    def cmd_listdir(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        components = request.get("argument", {}).get("directory")
        directory = confine(self.basedir, components)
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise proto.RequestError("OSError", f"{exc.strerror}: {components!r}") from None
        content = [{"isdir": os.path.isdir(directory / n), "path": n} for n in names]
        return proto.reply("listdir", {"dircontent": content,
                                       "directory": str(directory).split(os.sep)})

    def cmd_fileslist(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        q = self.queue
        files = q.fileslist() if q is not None else {}
        return proto.reply("resultfileslists", {
            "fileslist": {str(k): [str(p) for p in v] for k, v in (files or {}).items()}
        })

    def _check_new(self, calibration: Any, attachments: list[bytes]) -> tuple[list[dict], Path]:
        masks = [proto.parse_attachment(f, i) for i, f in enumerate(attachments)]
        try:
            cal = load_calibration(calibration)
            check_budget(cal)  # before any mask is decoded or operator built
        except CalibrationError as exc:
            raise proto.RequestError("ValueError", str(exc)) from None
        if len(masks) < len(cal.masks):
            raise proto.RequestError(
                "ValueError",
                f"the calibration has {len(cal.masks)} mask(s) but {len(masks)} mask "
                "attachment(s) were sent (the server never reads mask files from its disk)",
            )
        for mc, att in zip(cal.masks, masks, strict=False):
            try:
                mask_from_bytes(decode_attachment(att), str(att.get("filename", mc.mask_file)),
                                cal.geometry.image_shape)
            except MaskError as exc:
                raise proto.RequestError("ValueError", str(exc)) from None
        directory = confine(self.basedir, list(cal.directory))
        if not directory.is_dir():
            raise proto.RequestError(
                "IOError", f"directory {os.path.join(*cal.directory)!r} does not exist")
        return masks, directory

    def _make_bluesky(self, calibration: dict[str, Any], directory: Path, masks: list[dict],
                      spec: dict[str, Any], queue_id: str | None = None) -> Any:
        """A Bluesky source in the queue slot (see :mod:`saxs_pipeline.control.bluesky`)."""
        try:
            from saxs_pipeline.control.bluesky import BlueskyQueue
        except ImportError as exc:
            raise proto.RequestError("ValueError", f"a Bluesky source needs {exc.name}: pip "
                                     "install 'saxs-pipeline[bluesky]' on the server") from None
        self._count += 1
        c = self.config
        return BlueskyQueue(self.client, calibration, masks, c.outdir or directory, spec,
                            queue_id or f"{c.name}-{self._count}", calibrations=c.calibrations,
                            overrides=c.bluesky_overrides, tiled=c.tiled,
                            data_roots=c.queue_options.get("data_roots", ()))

    def cmd_new(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        calibration = request["argument"]["calibration"]
        bluesky = request["argument"].get("bluesky")
        masks, directory = self._check_new(calibration, attachments)
        if self.stopping.is_set():
            raise proto.RequestError(proto.SERVER_ERROR, "the server is shutting down")
        # Built (operators, budget) before the running queue is touched: a calibration
        # that cannot run leaves the old queue running.
        q = self._make_bluesky(calibration, directory, masks, bluesky) if bluesky else \
            self._make_queue(calibration, directory, masks)
        with self.lifecycle:
            old = self.queue
            same_stack = old is not None and getattr(old, "zarr_path", None) == getattr(
                q, "zarr_path", object())
            if not same_stack and hasattr(q, "prepare"):
                q.prepare()  # takes the stack's lock: a clash fails here, old untouched
            if old is not None and not old.aborted and not old.closed:
                log.info("new: aborting the running queue")
                old.abort()
            q.start()
            self.queue = q
            self._save_state(q, "running")
            if self.stopping.is_set():  # shut down while this queue was being built
                q.abort()
                raise proto.RequestError(proto.SERVER_ERROR, "the server is shutting down")
        if not (self.config.watch or self.config.feeder_url or bluesky):
            log.warning("queue on %s takes frames only from readdir: this server neither "
                        "watches (-w) nor has a feeder (-f)", directory)
        log.info("new queue on %s", directory)
        return proto.reply("new queue", {"cal": calibration, **self.dashboard(q)})

    def cmd_abort(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        with self.lifecycle:
            q = self.queue
            if q is None:
                return proto.reply("no queue", {})
            stats = q.abort()
            self._save_state(q, "aborted")
        log.info("queue aborted")
        return proto.reply("queue aborted", {"stat": self.filter_stat(stats or q.stats())})

    def cmd_close(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        with self.lifecycle:
            q = self.queue
            if q is None:
                return proto.reply("no queue", {})
            # Stops the watcher and walks at once; the queued frames finish in the
            # queue's own background thread, which outlives this reply if need be.
            stats = q.close(wait=False)
            self._save_state(q, "closed")
        end = time.monotonic() + self.config.close_reply_timeout
        while not (q.closed or q.aborted) and time.monotonic() < end:
            time.sleep(0.05)
        if q.closed or q.aborted:
            stats = q.stats()
        log.info("queue closed%s", "" if q.closed else " (still finishing queued frames)")
        return proto.reply("queue closed", {"stat": self.filter_stat(stats)})

    def cmd_readdir(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        with self.lifecycle:
            q = self._live_queue()
            # The queue's directory was checked at "new"; check it again now in case it was
            # swapped for a symlink leading out of the base directory since.
            current = confine(self.basedir, os.path.relpath(q.directory, self.basedir))
            if current != Path(os.path.realpath(q.directory)):
                raise PermissionError("the queue's directory changed since 'new'")
            wanted = request.get("argument", {}).get("directory")
            if wanted is not None and confine(self.basedir, wanted) != current:
                raise proto.RequestError(
                    "ValueError", "readdir walks the queue's directory only (start a new "
                    "queue for another directory)")
            try:
                q.readdir(wait=False)
            except RuntimeError as exc:  # QueueClosedError: closing or not started
                raise proto.RequestError("ValueError", f"Start Queue first ({exc})") from None
        log.info("readdir of %s started", q.directory)
        return proto.reply("queue restarted with all files", {"stat": self.stat(q)})

    # -- restart -------------------------------------------------------------------------------

    def restore(self) -> None:
        """Take up the queue a previous server process left running (see the module doc)."""
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.state_file, exc)
            return
        if state.get("state") != "running":
            return
        if "bluesky" in state:
            self._restore_bluesky(state)
            return
        from saxs_pipeline.pipeline.ledger import Why, read_manifest
        from saxs_pipeline.pipeline.ledgerdb import LedgerError

        try:
            _, manifest = read_manifest(state["ledger"])
            if not manifest:
                raise LedgerError("it has no manifest")
            directory = confine(self.basedir, os.path.relpath(manifest["directory"], self.basedir))
            with self.lifecycle:
                q = self._make_queue(manifest["calibration"], directory, manifest["attachments"],
                                     resume=True, queue_id=state.get("queue_id"))
                q.start()
                self.queue = q
            if self.config.watch or self.config.feeder_url:
                q.readdir(why=Why.RESUME, since=float(manifest.get("start_time", 0)) - 1.0)
        except Exception as exc:  # a restart must come up even when the old queue cannot
            log.error("could not take up the queue recorded in %s: %s", self.state_file, exc)
            return
        log.warning("took up queue %s on %s from its ledger %s", q.queue_id, directory,
                    state["ledger"])

    def _restore_bluesky(self, state: dict[str, Any]) -> None:
        """Subscribe again as the recorded Bluesky "new" did; the consumer takes up the
        runs it left open from their records."""
        try:
            new = state["bluesky"]
            work = confine(self.basedir, os.path.relpath(new["work"], self.basedir))
            with self.lifecycle:
                q = self._make_bluesky(new["calibration"], work, new["attachments"],
                                       new["source"], queue_id=state.get("queue_id"))
                q.start()
                self.queue = q
        except Exception as exc:  # a restart must come up even when the old queue cannot
            log.error("could not take up the Bluesky queue recorded in %s: %s",
                      self.state_file, exc)
            return
        log.warning("took up Bluesky queue %s from %s into %s", q.queue_id,
                    new["source"]["address"], work)

    def close_queue(self, q: Any, timeout: float) -> None:
        """Let queued frames finish for a while, then stop (what is left stays pending in
        the ledger); waits until the queue's threads are done."""
        if q is None:
            return

        def close() -> None:
            try:
                q.close(wait=True, timeout=timeout)
            except Exception:
                log.exception("closing the queue failed")

        closer = threading.Thread(target=close, name="saxsdog-shutdown-close", daemon=True)
        closer.start()
        closer.join(timeout + 15)
        if closer.is_alive():  # an earlier "close" is still draining a long backlog
            log.warning("queued frames did not finish in time; aborting the queue")
            try:
                q.abort()
            except Exception:
                log.exception("aborting the queue failed")
            closer.join(15)
