"""The Dask worker side: the integrator plugin, the per-batch task, and ``saxs-worker``.

* :class:`IntegratorPlugin` carries the calibration dict and the mask bytes of one queue
  (a few hundred kB) and, from the driver's operator cache, the operators the driver
  built (:mod:`saxs_pipeline.ops.shipping`): a worker writes those its own cache lacks,
  then builds its :class:`Integrator` in ``setup`` from its cache (``cached_operator``: a
  few ms per operator when it is there, a build of ~1 s or more otherwise), on a thread so
  the worker keeps answering heartbeats. Its log says how long that took and where the
  operators came from (local cache, shipped, built). The scheduler keeps the plugin and hands it to
  every worker that joins later; registering another one under the same name replaces it
  (teardown + setup).
* The task that uses it is :func:`saxs_pipeline.pipeline.task.process_frames`.
* :class:`SaxsWorker` and ``saxs-worker`` / ``dask saxs-worker`` / ``python -m
  saxs_pipeline.plugins.worker``: a plain ``dask worker`` (every option of it works) that, given
  ``--calibration``, validates it and builds its operators at start-up and refuses to
  start when that fails.
  Its workers start with :func:`saxs_pipeline.plugins.workerconfig.worker_config` (the
  allocator's environment, Dask's profiler off).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import dask
import numpy as np
from distributed import Worker, WorkerPlugin, get_worker

from saxs_pipeline.config.calibration import Calibration, empty_windows, load_calibration
from saxs_pipeline.config.darkflat import CorrectionImages, load_correction_images
from saxs_pipeline.config.masks import encode_attachment
from saxs_pipeline.config.normalisation import NormalisationResolver
from saxs_pipeline.integrator import Curve, Integrator
from saxs_pipeline.ops.shipping import missing, operator_keys, pack, shipping_enabled, unpack
from saxs_pipeline.plugins.quietclose import quiet_orderly_close
from saxs_pipeline.plugins.workerconfig import worker_config

__all__ = [
    "PLUGIN_NAME",
    "IntegratorPlugin",
    "SaxsWorker",
    "Prepared",
    "build_integrator",
    "calibration_id",
    "get_integrator",
    "get_normalisation",
    "load_payload",
    "main",
    "prepare",
    "worker_command",
]

log = logging.getLogger(__name__)

PLUGIN_NAME = "saxs-integrator"
CONFIG_KEY = "saxs.calibration"


# ---------------------------------------------------------------------------------------
# Calibration payload: what travels to the workers.


def load_payload(
    calibration: Mapping[str, Any] | str | os.PathLike[str],
    attachments: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validate a calibration and gather its masks: ``(nested calibration dict,
    attachments)`` with one ``{"filename", "data"}`` attachment per mask.

    Given ``attachments`` (masks sent over the network) are kept as they are; otherwise
    the mask files are read here, relative to the calibration file, so that workers on
    other nodes never need the driver's paths. Raises ``CalibrationError`` / ``MaskError``.
    """
    cal = load_calibration(dict(calibration) if isinstance(calibration, Mapping) else calibration)
    if attachments is not None:
        return cal.raw, [dict(a) for a in attachments]
    return cal.raw, [encode_attachment(cal.mask_path(m), m.mask_file) for m in cal.masks]


def calibration_id(calibration: Mapping[str, Any], attachments: Sequence[Mapping[str, Any]],
                   images: CorrectionImages | None = None) -> str:
    """A short content hash of a calibration, its masks and its dark/flat images."""
    h = hashlib.sha256(json.dumps(calibration, sort_keys=True, default=str).encode())
    for att in attachments:
        data = att.get("data", b"")
        h.update(data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogatepass"))
    if images is not None:
        for a in (images.dark, images.flat):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Prepared:
    """A calibration checked and ready for a run: its dict and mask attachments (what
    travels to the workers), the parsed form, one frame's curves as templates (axes,
    labels) and its content id."""

    calibration: dict[str, Any]
    attachments: list[dict[str, Any]]
    parsed: Calibration
    templates: list[Curve]
    id: str
    corrections: CorrectionImages | None = None  # Dark/Flat read in the driver, shipped
    normalisation: NormalisationResolver | None = None  # per-frame scalars (tables loaded)


def prepare(calibration: Mapping[str, Any] | str | os.PathLike[str],
            attachments: Sequence[Mapping[str, Any]] | None = None, *,
            with_std: bool = False) -> Prepared:
    """Validate a calibration and its masks, check its build's memory, and build it once
    (in the driver, before any worker or file is touched: a bad calibration fails at once
    with the file and JSON path named)."""
    from saxs_pipeline.ops.budget import check_budget

    raw, atts = load_payload(calibration, attachments)
    # Paths in the calibration (Dark, Flat, normalisation tables) are relative to its file.
    cal = load_calibration(calibration if not isinstance(calibration, Mapping) else raw)
    check_budget(cal)
    for i in empty_windows(cal):  # valid (the original's default), but rarely meant
        log.warning("calibration $.Masks[%d]: qStart = qStop = %g, an empty I0/I1/I2 window: "
                    "they will all be 0 (set qStart and qStop to the q range to monitor)",
                    i, cal.masks[i].q_start)
    images = load_correction_images(cal) if cal.summed_normalisation else None
    resolver = NormalisationResolver.from_calibration(cal) if raw.get("Normalisation") else None
    template = build_integrator(cal, atts, with_std=with_std, correction_images=images)
    curves = template.integrate(np.zeros(template.shape, np.float32))
    # the content id covers the dark and flat: other images make another run
    cal_id = calibration_id(raw, atts, images)
    return Prepared(raw, atts, cal, curves, cal_id, images, resolver)


def build_integrator(
    calibration: Mapping[str, Any] | Calibration,
    attachments: Sequence[Mapping[str, Any]] | None,
    *,
    with_std: bool = False,
    cache_dir: str | Path | None = None,
    correction_images: CorrectionImages | None = None,
) -> Integrator:
    cal = calibration if isinstance(calibration, Calibration) else load_calibration(dict(calibration))
    return Integrator(cal, list(attachments) if attachments else None, cache_dir=cache_dir,
                      with_std=with_std, correction_images=correction_images)


# ---------------------------------------------------------------------------------------
# The plugin.


class IntegratorPlugin(WorkerPlugin):
    """The integrator of one queue on every worker (see the module doc).

    ``integrators`` maps the queue id to the built :class:`Integrator`; tasks find it with
    :func:`get_integrator`. ``name`` defaults to ``"saxs-integrator"``; a queue registers
    its own plugin under ``"saxs-integrator-<queue id>"`` so that two queues can share a
    cluster, and removes it when it closes.
    """

    name = PLUGIN_NAME
    idempotent = False

    def __init__(
        self,
        calibration: Mapping[str, Any],
        attachments: Sequence[Mapping[str, Any]] | None = None,
        *,
        queue_id: str = "default",
        with_std: bool = False,
        cache_dir: str | None = None,
        name: str | None = None,
        correction_images: CorrectionImages | None = None,
        normalisation: NormalisationResolver | None = None,
        ship_operators: bool = True,
    ) -> None:
        self.calibration = dict(calibration)
        self.ship_operators = ship_operators
        self.operators: dict[str, bytes] = {}  # cache key -> .npz bytes (set when pickled)
        self.setup_report: dict[str, Any] = {}
        self.attachments = [dict(a) for a in attachments or []]
        self.correction_images, self.normalisation = correction_images, normalisation
        self.queue_id = queue_id
        self.with_std = with_std
        self.cache_dir = cache_dir
        if name is not None:
            self.name = name
        self.integrators: dict[str, Integrator] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Pickled in the driver: the calibration, and the operators from the driver's cache
        # (never the built integrator).
        state = self.__dict__.copy()
        state["integrators"] = {}
        if (self.ship_operators and shipping_enabled() and not self.operators
                and self.cache_dir is not False):
            try:
                state["operators"] = pack(self._keys(), self.cache_dir)
            except Exception as exc:  # shipping is an optimisation: the workers build
                log.warning("operators not shipped: %s", exc)
        return state

    def _keys(self) -> list[str]:
        return operator_keys(load_calibration(dict(self.calibration)), self.attachments,
                             self.correction_images)

    def _receive(self) -> dict[str, Any]:
        """Put the shipped operators this worker's cache lacks into it; what came from
        where (operator counts, bytes written)."""
        shipped, self.operators = self.operators, {}  # the bytes are not kept
        if self.cache_dir is False:  # no cache: nothing to put them in
            return {"cached": 0, "shipped": 0, "built": len(self._keys()), "bytes": 0}
        keys = self._keys()
        lacking = missing(keys, self.cache_dir)
        got = unpack({k: shipped[k] for k in lacking if k in shipped}, self.cache_dir)
        return {"cached": len(keys) - len(lacking), "shipped": len(got),
                "built": len(lacking) - len(got), "bytes": sum(len(shipped[k]) for k in got)}

    def build(self) -> Integrator:
        integ = build_integrator(self.calibration, self.attachments or None,
                                 with_std=self.with_std, cache_dir=self.cache_dir,
                                 correction_images=self.correction_images)
        # The kernels' layout for integer and float32 frames (every detector's), laid out
        # here rather than in the first frame's task: 0.3 s for a 4 Mpx operator.
        for op in integ.operators:
            if op is not None:
                op.compact(np.dtype(np.float32))
        return integ

    async def setup(self, worker: Worker) -> None:
        quiet_orderly_close(worker)
        # setup runs on the worker's event loop: building an operator there would stall
        # heartbeats for a second, so it goes to a thread.
        t0 = time.perf_counter()
        report = await asyncio.to_thread(self._receive)
        t1 = time.perf_counter()
        integrator = await asyncio.to_thread(self.build)
        t2 = time.perf_counter()
        self.integrators = {self.queue_id: integrator}
        self.setup_report = report | {"receive_s": t1 - t0, "build_s": t2 - t1}
        how = (f"operators: {report['cached']} from the local cache, {report['shipped']} "
               f"shipped from the driver ({report['bytes'] / 1e6:.1f} MB), "
               f"{report['built']} built here")
        log.info("saxs-integrator %s ready on %s in %.2f s: %s", self.queue_id, worker.address,
                 t2 - t0, how)

    def teardown(self, worker: Worker) -> None:
        # Tasks already running keep their own reference to the integrator.
        self.integrators = {}


def get_integrator(queue_id: str = "default", worker: Worker | None = None) -> Integrator:
    """The integrator of ``queue_id`` on this worker (inside a task)."""
    return _plugin(queue_id, worker).integrators[queue_id]


def get_normalisation(queue_id: str = "default", worker: Worker | None = None
                      ) -> NormalisationResolver | None:
    """The per-frame normalisation of ``queue_id``'s calibration, None without one."""
    return _plugin(queue_id, worker).normalisation


# A task can reach a worker before the queue's plugin: a worker that just joined, or a
# scheduler that restarted while the driver registers its plugins there again. Dask
# config ``saxs.plugin-wait`` (seconds) overrides it.
PLUGIN_WAIT = 30.0


def _plugin(queue_id: str, worker: Worker | None) -> IntegratorPlugin:
    worker = worker if worker is not None else get_worker()
    deadline = time.monotonic() + float(dask.config.get("saxs.plugin-wait", PLUGIN_WAIT))
    while True:
        for plugin in list(worker.plugins.values()):
            if isinstance(plugin, IntegratorPlugin) and queue_id in plugin.integrators:
                return plugin
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise LookupError(f"no saxs-integrator for queue {queue_id!r} on worker {worker.address}")


# ---------------------------------------------------------------------------------------
# saxs-worker


def _log_beside_dask() -> None:
    """Our INFO lines (a plugin's set-up: how long, operators from where) in the worker's
    log, formatted as Dask's; Dask configures only its own loggers."""
    ours = logging.getLogger("saxs_pipeline")
    if ours.handlers or logging.getLogger().handlers:
        return  # configured already (a driver, a test runner)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)


class SaxsWorker(Worker):
    """A Dask worker that, when the dask config ``saxs.calibration`` (environment
    ``DASK_SAXS__CALIBRATION``) names a calibration file, validates it and builds its
    operators before joining, and fails to start when that fails. Without it, it is a
    plain worker that gets the integrator from the driver's plugin."""

    def __init__(self, *args: Any, plugins: Any = (), **kwargs: Any) -> None:
        _log_beside_dask()
        plugins = list(plugins or ())
        path = dask.config.get(CONFIG_KEY, None)
        if path:
            calibration, attachments = load_payload(path)
            plugins.append(IntegratorPlugin(calibration, attachments))
        super().__init__(*args, plugins=plugins, **kwargs)


@click.command(
    name="saxs-worker",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
)
@click.option(
    "--calibration",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Calibration JSON to validate and pre-build at start-up (optional: the driver "
    "ships its calibration to every worker anyway).",
)
@click.argument("dask_worker_args", nargs=-1, type=click.UNPROCESSED)
def worker_command(calibration: str | None, dask_worker_args: tuple[str, ...]) -> None:
    """Start a Dask worker for saxs_pipeline. Every other option is `dask worker`'s
    (scheduler address, --scheduler-file, --nworkers, --nthreads, --memory-limit, ...)."""
    from distributed.cli.dask_worker import main as dask_worker_main

    args = list(dask_worker_args)
    if not any(a == "--worker-class" or a.startswith("--worker-class=") for a in args):
        args = ["--worker-class", "saxs_pipeline.plugins.worker.SaxsWorker", *args]
    # the allocator's environment for the nanny's processes, Dask's profiler off
    # (saxs_pipeline.plugins.workerconfig says why; the user's dask config still decides)
    settings: dict[str, Any] = worker_config()
    if calibration:
        path = os.path.abspath(calibration)
        try:
            load_payload(path)  # fail here, with the JSON path in the message, not per worker
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--calibration") from None
        settings[CONFIG_KEY] = path
        # The nanny forwards its dask config to the worker processes; the environment
        # variable covers --no-nanny and anything that re-reads the config.
        os.environ["DASK_SAXS__CALIBRATION"] = path
    with dask.config.set(settings):
        dask_worker_main.main(args=args, prog_name="saxs-worker")


def main() -> None:
    """Console script ``saxs-worker``."""
    worker_command.main(prog_name="saxs-worker")


if __name__ == "__main__":
    main()
