"""saxsdogserver: the leash command server.

One zmq ROUTER socket (``ROUTER_MANDATORY``) and one poll loop. The original's REQ clients
work unchanged: a request arrives as ``[identity, b"", frame0, attachments...]`` and the
reply goes back as ``[identity, b"", reply]``. Unlike the original's REP socket, nothing can
wedge it: every request gets exactly one reply, and a client that went away only costs a
logged ``EHOSTUNREACH``.

Per request, in this order: size limits -> JSON -> authentication (v1 or v2, with the replay
cache) -> LeashRequestSchema -> dispatch. Cheap commands (``stat``, ``plot``, ``get``) are
answered from the loop; everything that can take long (``new`` builds operators,
``close`` waits for queued frames, ``readdir`` walks a beamtime, ``listdir`` and
``fileslist`` can be huge, ``abort``) runs on a small thread pool, and its reply is handed
back to the loop, which alone touches the socket. So ``stat`` answers within milliseconds
while a long command runs, and nothing blocks for lack of a polling client: frames flow
from the queue's own watcher or from the feeder subscriber straight into the Dask queue.

Queue life cycle (``new``/``close``/``abort``/``readdir``) is serialised by one lock.
``close`` only stops the queue taking frames under it; the queued frames finish in the
queue's background thread, so ``abort`` can still cut a long ``close`` short. The ``close``
reply waits for them up to ``close_reply_timeout`` seconds.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue as queue_mod
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from saxs_pipeline.control import protocol as proto
from saxs_pipeline.control.feeder import FeederSubscriber, relative_to
from saxs_pipeline.control.signing import (
    LEGACY_WINDOW,
    V2_WINDOW,
    AuthenticationError,
    Verifier,
)
from saxs_pipeline.io.calibration import CalibrationError, load_calibration
from saxs_pipeline.io.masks import MaskError, decode_attachment, mask_from_bytes

__all__ = [
    "STAT_KEYS",
    "ClientHandle",
    "SaxsdogServer",
    "ServerConfig",
    "confine",
]

log = logging.getLogger(__name__)

STAT_KEYS = ("images processed", "queue length", "time", "start time", "frames per sec",
             "time interval", "pics", "failed")
_INT_STAT_KEYS = {"images processed", "queue length", "pics", "failed"}


@dataclass
class ServerConfig:
    """Everything ``saxsdogserver`` was told on its command line."""

    basedir: Path
    secret: str
    endpoint: str = "tcp://127.0.0.1:9723"  # zmq bind endpoint; port "*" = ephemeral
    feeder_url: str | None = None
    watch: bool = False
    poll: bool = False
    relpath: str = os.path.join("..", "work")
    outdir: Path | None = None
    pattern: str = "*.tif"
    limits: proto.Limits = field(default_factory=proto.Limits)
    legacy_window: float = LEGACY_WINDOW
    v2_window: float = V2_WINDOW
    allow_legacy: bool = True
    # close replies once the queued frames are done, or after this many seconds with the
    # stats so far (the queue keeps draining in the background either way).
    close_reply_timeout: float = 20.0
    shutdown_timeout: float = 10.0
    name: str = "Queue1"
    queue_options: dict[str, Any] = field(default_factory=dict)


def confine(basedir: str | os.PathLike[str], components: Sequence[str] | str | None) -> Path:
    """The real path of ``basedir``/``components``; PermissionError unless it lies inside
    the real path of ``basedir`` (``..``, absolute parts and symlinks may not leave it)."""
    base = Path(os.path.realpath(basedir))
    if components is None:
        parts: list[str] = []
    elif isinstance(components, str):
        parts = [components]
    else:
        parts = list(components)
    if not all(isinstance(p, str) for p in parts):
        raise PermissionError("directory components must be strings")
    shown = os.path.join(*parts) if parts else "."
    if any("\x00" in p for p in parts):
        raise PermissionError(f"directory {shown!r} is not a valid path")
    real = Path(os.path.realpath(base.joinpath(*parts)))
    if real != base and base not in real.parents:
        raise PermissionError(f"directory {shown!r} is outside the server's base directory")
    return real


class ClientHandle:
    """The server's Dask client, started in the background so the control socket answers
    at once: an embedded LocalCluster of ``threads`` single-threaded worker processes, or a
    connection to ``scheduler``."""

    def __init__(self, scheduler: str | None = None, threads: int = 2,
                 cluster_options: dict[str, Any] | None = None) -> None:
        self.scheduler = scheduler
        self.threads = max(1, int(threads))
        self.cluster_options = cluster_options or {}
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._client: Any = None
        self._cluster: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._start, name="dask-client", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            from distributed import Client, LocalCluster

            if self.scheduler:
                client = Client(self.scheduler, timeout="20s")
                cluster = None
                log.info("connected to the Dask scheduler at %s", self.scheduler)
            else:
                # Loopback only, and no fixed HTTP port: the scheduler would otherwise take
                # 8787 even without a dashboard, and a second server would warn about it.
                options = dict(n_workers=self.threads, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               scheduler_kwargs={"dashboard": False,
                                                 "dashboard_address": "127.0.0.1:0"})
                options.update(self.cluster_options)
                cluster = LocalCluster(**options)
                client = Client(cluster)
                log.info("started a local Dask cluster with %d worker process(es)", self.threads)
            with self._lock:
                self._client, self._cluster = client, cluster
        except BaseException as exc:  # reported to whoever asks for the client
            log.error("the Dask client could not be started: %s", exc)
            self._error = exc
        finally:
            self._ready.set()

    @property
    def ready(self) -> bool:
        """True once the client is there (or its start failed)."""
        return self._ready.is_set()

    def get(self, timeout: float | None = 120.0) -> Any:
        """The client; waits for start-up and re-raises its error."""
        if self._thread is None:
            self.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the Dask cluster is still starting")
        if self._error is not None:
            raise RuntimeError(f"Dask client unavailable: {self._error}") from self._error
        return self._client

    def close(self) -> None:
        if self._thread is not None:
            self._ready.wait(60)
        with self._lock:
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
        for obj in (client, cluster):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # shutting down: log and go on
                    log.exception("closing %s failed", type(obj).__name__)


def _default_queue_factory(*args: Any, **kwargs: Any) -> Any:
    from saxs_pipeline.queue import ImageQueue  # imported late: it pulls in Dask

    return ImageQueue(*args, **kwargs)


class SaxsdogServer:
    """The command server. ``client`` is a :class:`ClientHandle`, a Dask client, or None
    (tests with a stand-in ``queue_factory``)."""

    def __init__(
        self,
        config: ServerConfig,
        client: Any = None,
        *,
        queue_factory: Callable[..., Any] | None = None,
        context: zmq.Context | None = None,
        workers: int = 4,
    ) -> None:
        self.config = config
        self.basedir = Path(os.path.realpath(config.basedir))
        if not self.basedir.is_dir():
            raise NotADirectoryError(f"base directory {config.basedir} does not exist")
        self._client = client
        self._queue_factory = queue_factory or _default_queue_factory
        self._ctx = context or zmq.Context.instance()
        self.verifier = Verifier(config.secret, legacy_window=config.legacy_window,
                                 v2_window=config.v2_window, allow_legacy=config.allow_legacy)
        self.queue: Any = None
        self._queue_count = 0
        self._lifecycle = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, "saxsdog-cmd")
        self._jobs: set[concurrent.futures.Future] = set()
        self._done: queue_mod.SimpleQueue[tuple[list[bytes], bytes]] = queue_mod.SimpleQueue()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._sock: zmq.Socket | None = None
        self._wake_rx: zmq.Socket | None = None
        self._wake_tx: zmq.Socket | None = None
        self._wake_lock = threading.Lock()
        self._subscriber: FeederSubscriber | None = None
        self.endpoint: str | None = None
        self.served = 0
        self._handlers: dict[str, tuple[Callable[[dict, list[bytes]], dict], bool]] = {
            "stat": (self._cmd_stat, False),
            "plot": (self._cmd_plot, False),
            "get": (self._cmd_get, False),
            "new": (self._cmd_new, True),
            "close": (self._cmd_close, True),
            "abort": (self._cmd_abort, True),
            "readdir": (self._cmd_readdir, True),
            "listdir": (self._cmd_listdir, True),
            "fileslist": (self._cmd_fileslist, True),
        }

    # ---------------------------------------------------------------------------------
    # sockets and the loop

    def bind(self) -> str:
        """Bind the ROUTER socket; returns the actual endpoint (ephemeral ports resolved)."""
        if self._sock is not None:
            assert self.endpoint is not None
            return self.endpoint
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, 1000)
        # Hard cap, far above the soft limits that get a proper error reply: a peer
        # sending more than this in one frame is disconnected before we buffer it.
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.limits.hard_limit)
        if self.config.endpoint.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        sock.bind(self.config.endpoint)
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        wake = f"inproc://saxsdog-wake-{id(self)}"
        self._wake_rx = self._ctx.socket(zmq.PULL)
        self._wake_rx.bind(wake)
        self._wake_tx = self._ctx.socket(zmq.PUSH)
        self._wake_tx.connect(wake)
        if self.config.feeder_url:
            self._subscriber = FeederSubscriber(self.config.feeder_url, self._feed,
                                                context=self._ctx)
            self._subscriber.start()
        log.info("saxsdogserver %s listening on %s, base directory %s",
                 self.config.name, self.endpoint, self.basedir)
        return self.endpoint

    def stop(self) -> None:
        """Ask the loop to end (thread-safe; safe from signal handlers)."""
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        if self._wake_tx is None:
            return
        with self._wake_lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the loop is already awake or gone

    def serve_forever(self, poll_ms: int = 500, tick: Callable[[], None] | None = None) -> None:
        """Serve until :meth:`stop`; then shut down (queue, threads, sockets). ``tick`` is
        called from the serving thread about every ``poll_ms``."""
        self.bind()
        assert self._sock is not None and self._wake_rx is not None
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(poll_ms))
                if self._wake_rx in events:
                    while True:
                        try:
                            self._wake_rx.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                self._send_done()
                if self._sock in events:
                    self._drain_requests()
                if tick is not None:
                    tick()
        finally:
            self._shutdown()

    def _drain_requests(self) -> None:
        assert self._sock is not None
        for _ in range(100):  # bounded, so finished long commands get their turn
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.served += 1
            self._handle(frames)

    def _send(self, envelope: list[bytes], payload: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.send_multipart([*envelope, payload], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # EHOSTUNREACH: the client gave up (lazy pirate) or died; EAGAIN: it does not
            # read. Either way the next request must still be served.
            log.warning("reply dropped: %s", exc)

    def _send_done(self) -> None:
        while True:
            try:
                envelope, payload = self._done.get_nowait()
            except queue_mod.Empty:
                return
            self._send(envelope, payload)

    @staticmethod
    def _split(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        # REQ peers put an empty delimiter after the identity; DEALER peers may not.
        for i in range(1, len(frames)):
            if frames[i] == b"":
                return frames[: i + 1], frames[i + 1:]
        return frames[:1], frames[1:]

    def _handle(self, frames: list[bytes]) -> None:
        envelope, body = self._split(frames)
        try:
            proto.check_sizes(body, self.config.limits)
            message = proto.decode_json_frame(body[0])
            request, version = self.verifier.verify(message, body[1:])
            proto.validate_request(request)
            command = request["command"]
            if command not in self._handlers:
                raise proto.RequestError(proto.NOT_IMPLEMENTED, f"{command} not implemented")
            handler, slow = self._handlers[command]
            log.debug("request %s (v%d)", command, version)
            if slow:
                job = self._executor.submit(self._run_slow, envelope, handler, request, body[1:])
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
                return
            self._send(envelope, self._encode(self._call(handler, request, body[1:])))
        except proto.RequestError as exc:
            self._send(envelope, self._encode(exc.reply()))
        except AuthenticationError as exc:
            log.warning("authentication failed: %s", exc)
            self._send(envelope, self._encode(proto.error_reply(proto.AUTH_ERROR, repr(str(exc)))))
        except Exception as exc:  # every failure gets a reply; the loop goes on
            log.exception("request failed")
            self._send(envelope, self._encode(proto.error_reply(proto.SERVER_ERROR, str(exc))))

    def _call(self, handler: Callable[[dict, list[bytes]], dict], request: dict,
              attachments: list[bytes]) -> dict[str, Any]:
        try:
            return handler(request, attachments)
        except proto.RequestError as exc:
            return exc.reply()
        except PermissionError as exc:
            return proto.error_reply("PermissionError", str(exc))
        except OSError as exc:  # the original's result name for file problems
            return proto.error_reply("IOError", str(exc))
        except ValueError as exc:  # bad calibration or mask (CalibrationError, MaskError)
            return proto.error_reply("ValueError", str(exc))
        except Exception as exc:  # the original's catch-all reply
            log.exception("command %s failed", request.get("command"))
            return proto.error_reply(proto.SERVER_ERROR, str(exc))

    def _run_slow(self, envelope: list[bytes], handler: Callable, request: dict,
                  attachments: list[bytes]) -> None:
        payload = self._encode(self._call(handler, request, attachments))
        self._done.put((envelope, payload))
        self._wake()

    @staticmethod
    def _encode(msg: dict[str, Any]) -> bytes:
        try:
            return proto.encode(msg)
        except (TypeError, ValueError) as exc:
            log.exception("reply could not be encoded")
            return proto.encode(proto.error_reply(proto.SERVER_ERROR, f"reply not encodable: {exc}"))

    # ---------------------------------------------------------------------------------
    # shutdown

    def _shutdown(self) -> None:
        log.info("shutting down")
        if self._subscriber is not None:
            self._subscriber.stop()
        self._close_queue(self.queue)
        # Commands still running (a close waiting for its queue, a new building operators)
        # get a bounded time to finish; their replies still go out.
        concurrent.futures.wait(list(self._jobs), timeout=self.config.shutdown_timeout)
        self._close_queue(self.queue)  # in case a "new" finished meanwhile
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._send_done()
        for s in (self._sock, self._wake_rx, self._wake_tx):
            if s is not None:
                s.close()
        self._stopped.set()

    def _close_queue(self, q: Any) -> None:
        """Let queued frames finish for a while, cancel what is left, and wait until the
        queue's threads are done: ``closed`` turns true before its curve stack is flushed,
        and the Dask client must outlive that flush."""
        if q is None:
            return
        timeout = self.config.shutdown_timeout

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

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    # ---------------------------------------------------------------------------------
    # helpers

    def _dask_client(self) -> Any:
        if isinstance(self._client, ClientHandle):
            return self._client.get()
        return self._client

    def _stat(self, q: Any = None) -> dict[str, Any]:
        q = self.queue if q is None else q
        if q is None:
            return {}
        return self._filter_stat(q.stats())

    @staticmethod
    def _filter_stat(stats: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in STAT_KEYS:
            if stats and key in stats and stats[key] is not None:
                value = stats[key]
                out[key] = int(value) if key in _INT_STAT_KEYS else float(value)
        out["time"] = time.time()
        return out

    def _live_queue(self) -> Any:
        q = self.queue
        if q is None or q.aborted or q.closed:
            raise proto.RequestError("ValueError", "Start Queue first")
        return q

    def _feed(self, paths: list[str]) -> None:
        q = self.queue
        if q is None or q.closed or q.aborted:
            log.debug("feeder: %d path(s) ignored, no open queue", len(paths))
            return
        resolved = list(dict.fromkeys(relative_to(p, self.basedir) for p in paths))
        n = q.submit_paths(resolved)
        log.debug("feeder: %d of %d path(s) queued", n or 0, len(resolved))

    # ---------------------------------------------------------------------------------
    # commands

    def _cmd_stat(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        return proto.reply("stat", {"stat": self._stat()})

    def _cmd_plot(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        q = self.queue
        if q is None:
            return proto.reply("no queue", {})
        latest = q.latest()
        if not latest:
            # The original answered ServerError 'data' here.
            return proto.reply("no image yet", {"stat": self._stat(q)})
        hist = q.history() or {}
        return proto.reply("plot", {
            "filename": str(latest.get("filename", "")),
            "graphs": list(latest.get("graphs", [])),
            "stat": self._stat(q),
            "history": list(hist.get("history", [])),
            "IntegralParameters": dict(hist.get("IntegralParameters", {})),
        })

    def _cmd_get(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        q = self.queue
        if q is None:
            return proto.reply("no queue", {})
        return proto.reply("cal", {"cal": q.calibration_dict,
                                   "attachments": list(q.attachments or [])})

    def _cmd_listdir(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        components = request.get("argument", {}).get("directory")
        directory = confine(self.basedir, components)
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise proto.RequestError("OSError", f"{exc.strerror}: {components!r}") from None
        content = [{"isdir": os.path.isdir(directory / n), "path": n} for n in names]
        return proto.reply("listdir", {"dircontent": content,
                                       "directory": str(directory).split(os.sep)})

    def _cmd_fileslist(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        q = self.queue
        files = q.fileslist() if q is not None else {}
        return proto.reply("resultfileslists", {
            "fileslist": {str(k): [str(p) for p in v] for k, v in (files or {}).items()}
        })

    def _cmd_new(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        calibration = request["argument"]["calibration"]
        masks = [proto.parse_attachment(f, i) for i, f in enumerate(attachments)]
        try:
            cal = load_calibration(calibration)
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
                "IOError", f"directory {os.path.join(*cal.directory)!r} does not exist"
            )
        with self._lifecycle:
            if self._stop.is_set():
                raise proto.RequestError(proto.SERVER_ERROR, "the server is shutting down")
            old = self.queue
            if old is not None and not old.aborted:
                log.info("new: aborting the running queue")
                old.abort()
            client = self._dask_client()
            self._queue_count += 1
            q = self._queue_factory(
                client, calibration, directory,
                attachments=masks,
                out_dir=self.config.outdir,
                relpath=self.config.relpath,
                pattern=self.config.pattern,
                watch=self.config.watch,
                poll=self.config.poll,
                queue_id=f"{self.config.name}-{self._queue_count}",
                **self.config.queue_options,
            )
            q.start()
            self.queue = q
            if self._stop.is_set():  # shut down while this queue was being built
                q.abort()
                raise proto.RequestError(proto.SERVER_ERROR, "the server is shutting down")
        log.info("new queue on %s", directory)
        return proto.reply("new queue", {"cal": calibration})

    def _cmd_abort(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        with self._lifecycle:
            q = self.queue
            if q is None:
                return proto.reply("no queue", {})
            stats = q.abort()
        log.info("queue aborted")
        return proto.reply("queue aborted", {"stat": self._filter_stat(stats or q.stats())})

    def _cmd_close(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        with self._lifecycle:
            q = self.queue
            if q is None:
                return proto.reply("no queue", {})
            # Stops the watcher and walks at once; the queued frames finish in the
            # queue's own background thread, which outlives this reply if need be.
            stats = q.close(wait=False)
        end = time.monotonic() + self.config.close_reply_timeout
        while not (q.closed or q.aborted) and time.monotonic() < end:
            time.sleep(0.05)
        if q.closed or q.aborted:
            stats = q.stats()
        log.info("queue closed%s", "" if q.closed else " (still finishing queued frames)")
        return proto.reply("queue closed", {"stat": self._filter_stat(stats)})

    def _cmd_readdir(self, request: dict, attachments: list[bytes]) -> dict[str, Any]:
        with self._lifecycle:
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
        return proto.reply("queue restarted with all files", {"stat": self._stat(q)})
