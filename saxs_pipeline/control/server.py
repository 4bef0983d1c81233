"""saxsdogserver: the leash command server.

One zmq ROUTER socket (``ROUTER_MANDATORY``) and one poll loop. The original's REQ clients
work unchanged: a request arrives as ``[identity, b"", frame0, attachments...]`` and the
reply goes back as ``[identity, b"", reply]``. Unlike the original's REP socket, nothing can
wedge it: every request gets exactly one reply, and a client that went away only costs a
logged ``EHOSTUNREACH``.

Per request, in this order: size limits -> JSON -> authentication (v1 or v2, with the replay
cache, kept in ``<basedir>/.saxsdogserver/<name>.replay`` so that a restart forgets no
request it has seen) -> LeashRequestSchema -> dispatch. Cheap commands (``stat``, ``plot``, ``get``) are
answered from the loop; everything that can take long (``new`` builds operators,
``close`` waits for queued frames, ``readdir`` walks a beamtime, ``listdir`` and
``fileslist`` can be huge, ``abort``) runs on a small thread pool, and its reply is handed
back to the loop, which alone touches the socket. So ``stat`` answers within milliseconds
while a long command runs, and nothing blocks for lack of a polling client: frames flow
from the queue's own watcher or from the feeder subscriber straight into the Dask queue.

The commands and the queue they run are in :mod:`saxs_pipeline.control.commands`.
Replies to v1-signed requests (the original's clients) are trimmed to the keys the
original's result schema allows (:mod:`saxs_pipeline.control.compat`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue as queue_mod
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from saxs_pipeline.control import protocol as proto
from saxs_pipeline.control.commands import QueueHost
from saxs_pipeline.control.compat import for_version
from saxs_pipeline.control.feeder import FeederSubscriber
from saxs_pipeline.control.paths import state_file
from saxs_pipeline.control.signing import (
    LEGACY_WINDOW,
    V2_WINDOW,
    AuthenticationError,
    Verifier,
)

__all__ = ["SaxsdogServer", "ServerConfig"]

log = logging.getLogger(__name__)


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
    # a Bluesky "new": calibrations runs name by id, start-metadata overrides, Tiled
    calibrations: Path | None = None
    bluesky_overrides: tuple[tuple[str, str], ...] = ()
    tiled: str | None = None


class SaxsdogServer:
    """The command server. ``client`` is a
    :class:`~saxs_pipeline.pipeline.cluster.ClusterLink`, a Dask client, or None (tests
    with a stand-in ``queue_factory``)."""

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
        self._stopping = threading.Event()
        self.host = QueueHost(config, self.basedir, client, queue_factory, self._stopping)
        self._ctx = context or zmq.Context.instance()
        self.verifier = Verifier(config.secret, legacy_window=config.legacy_window,
                                 v2_window=config.v2_window, allow_legacy=config.allow_legacy,
                                 replay_path=state_file(self.basedir, config.name, ".replay"))
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
        h = self.host
        self._handlers: dict[str, tuple[Callable[[dict, list[bytes]], dict], bool]] = {
            "stat": (h.cmd_stat, False),
            "plot": (h.cmd_plot, False),
            "get": (h.cmd_get, False),
            "failures": (h.cmd_failures, True),
            "new": (h.cmd_new, True),
            "close": (h.cmd_close, True),
            "abort": (h.cmd_abort, True),
            "readdir": (h.cmd_readdir, True),
            "listdir": (h.cmd_listdir, True),
            "fileslist": (h.cmd_fileslist, True),
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
        # Hard cap, far above the soft limits that get a proper error reply (protocol.
        # HARD_FACTOR): a peer sending more than this in one frame is disconnected before
        # we buffer it.
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
            self._subscriber = FeederSubscriber(self.config.feeder_url, self.host.feed,
                                                context=self._ctx)
            self._subscriber.start()
        log.info("saxsdogserver %s listening on %s, base directory %s",
                 self.config.name, self.endpoint, self.basedir)
        return self.endpoint

    def stop(self) -> None:
        """Ask the loop to end (thread-safe; safe from signal handlers)."""
        self._stop.set()
        self._stopping.set()
        self._wake()

    def _wake(self) -> None:
        with self._wake_lock:  # the loop closes the socket under it: never mid-send
            if self._wake_tx is None:
                return
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
        # A queue the last server process left running is taken up in the background:
        # the socket answers meanwhile.
        self._jobs.add(self._executor.submit(self.host.restore))
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
                # Not copied: an oversized request is refused from its frames' lengths,
                # and only a request within the limits is copied into bytes.
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
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
    def _split(frames: list[zmq.Frame]) -> tuple[list[bytes], list[zmq.Frame]]:
        # REQ peers put an empty delimiter after the identity; DEALER peers may not.
        end = next((i for i in range(1, len(frames)) if len(frames[i]) == 0), 0)
        return [f.bytes for f in frames[: end + 1]], frames[end + 1:]

    def _handle(self, frames: list[zmq.Frame]) -> None:
        envelope, received = self._split(frames)
        try:
            proto.check_sizes(received, self.config.limits)
            body = [f.bytes for f in received]
            message = proto.decode_json_frame(body[0])
            request, version = self.verifier.verify(message, body[1:])
            proto.validate_request(request)
            command = request["command"]
            if command not in self._handlers:
                raise proto.RequestError(proto.NOT_IMPLEMENTED, f"{command} not implemented")
            handler, slow = self._handlers[command]
            log.debug("request %s (v%d)", command, version)
            if slow:
                job = self._executor.submit(self._run_slow, envelope, handler, request, body[1:],
                                            version)
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
                return
            reply = self._call(handler, request, body[1:])
            self._send(envelope, self._encode(for_version(reply, version)))
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
                  attachments: list[bytes], version: int) -> None:
        payload = self._encode(for_version(self._call(handler, request, attachments), version))
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
        self.host.close_queue(self.queue, self.config.shutdown_timeout)
        # Commands still running (a close waiting for its queue, a new building operators)
        # get a bounded time to finish; their replies still go out.
        concurrent.futures.wait(list(self._jobs), timeout=self.config.shutdown_timeout)
        self.host.close_queue(self.queue, self.config.shutdown_timeout)  # a "new" finished meanwhile
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._send_done()
        with self._wake_lock:
            for s in (self._sock, self._wake_rx, self._wake_tx):
                if s is not None:
                    s.close()
            self._wake_tx = None
        self.verifier.cache.close()
        self._stopped.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    @property
    def queue(self) -> Any:
        return self.host.queue
