"""The Dask worker side: the integrator plugin, the per-batch task, and ``saxs-worker``.

* :class:`IntegratorPlugin` carries the calibration dict and the mask bytes of one queue
  (a few hundred kB), never the built operator: every worker builds its :class:`Integrator`
  in ``setup`` from the on-disk operator cache (``cached_operator``: a few ms when the
  driver or another worker on the node built it already, ~1 s otherwise), on a thread so
  the worker keeps answering heartbeats. The scheduler keeps the plugin and hands it to
  every worker that joins later; registering another one under the same name replaces it
  (teardown + setup).
* :func:`process_frames` is the task: read a batch of frames, integrate them a group at
  a time as one sparse x dense product (:func:`product_frames`), write the ``.chi`` files
  (atomic replace, so a task re-run after a lost worker is harmless) and return small
  per-frame results for the driver's single zarr writer. Incomplete frames are *reported*, not waited for:
  the driver retries them later, so a worker thread never sleeps on a slow detector.
* :class:`SaxsWorker` and ``saxs-worker`` / ``dask saxs-worker`` / ``python -m
  saxs_pipeline.worker``: a plain ``dask worker`` (every option of it works) that, given
  ``--calibration``, validates it and builds its operators at start-up and refuses to
  start when that fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import dask
import numpy as np
from distributed import Worker, WorkerPlugin, get_worker

from saxs_pipeline.integrator import Curve, Integrator
from saxs_pipeline.io.calibration import Calibration, load_calibration
from saxs_pipeline.io.images import ImageError, ImageIncompleteError, read_frame
from saxs_pipeline.io.masks import encode_attachment
from saxs_pipeline.naming import DEFAULT_RELPATH, chi_paths, output_basename
from saxs_pipeline.stats import PROGRESS_TOPIC, TASK_PREFIX

__all__ = [
    "PLUGIN_NAME",
    "PROGRESS_TOPIC",
    "TASK_PREFIX",
    "CurveData",
    "FrameOptions",
    "FrameResult",
    "IntegratorPlugin",
    "SaxsWorker",
    "calibration_id",
    "get_integrator",
    "load_payload",
    "main",
    "nanny_environ_config",
    "process_frames",
    "product_frames",
    "worker_command",
]

log = logging.getLogger(__name__)

# Environment of worker processes started by a nanny. Every frame allocates a few MB and a
# batch a few 10 MB; with Dask's default MALLOC_TRIM_THRESHOLD_=65536 glibc hands that
# memory back after each batch and the next one page-faults it in again: measured 9.5 ms
# CPU per Pilatus frame instead of 5.5 ms. Keeping it (the working set stays at its
# peak, a few hundred MB per worker) is the better trade for a frame loop.
WORKER_ENVIRON = {
    "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30),
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),  # glibc's maximum: frames come from the heap
}

PLUGIN_NAME = "saxs-integrator"
CONFIG_KEY = "saxs.calibration"


def nanny_environ_config() -> dict[str, str]:
    """``dask.config.set`` settings that give worker processes :data:`WORKER_ENVIRON`
    (read by each nanny when it is created)."""
    return {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENVIRON.items()}


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


def calibration_id(calibration: Mapping[str, Any], attachments: Sequence[Mapping[str, Any]]) -> str:
    """A short content hash of a calibration and its masks."""
    h = hashlib.sha256(json.dumps(calibration, sort_keys=True, default=str).encode())
    for att in attachments:
        data = att.get("data", b"")
        h.update(data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def build_integrator(
    calibration: Mapping[str, Any] | Calibration,
    attachments: Sequence[Mapping[str, Any]] | None,
    *,
    with_std: bool = False,
    cache_dir: str | Path | None = None,
) -> Integrator:
    cal = calibration if isinstance(calibration, Calibration) else load_calibration(dict(calibration))
    return Integrator(cal, list(attachments) if attachments else None, cache_dir=cache_dir,
                      with_std=with_std)


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
    ) -> None:
        self.calibration = dict(calibration)
        self.attachments = [dict(a) for a in attachments or []]
        self.queue_id = queue_id
        self.with_std = with_std
        self.cache_dir = cache_dir
        if name is not None:
            self.name = name
        self.integrators: dict[str, Integrator] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Ship the small calibration only; every worker builds (or loads) the operators.
        state = self.__dict__.copy()
        state["integrators"] = {}
        return state

    def build(self) -> Integrator:
        return build_integrator(self.calibration, self.attachments or None,
                                with_std=self.with_std, cache_dir=self.cache_dir)

    async def setup(self, worker: Worker) -> None:
        # setup runs on the worker's event loop: building an operator there would stall
        # heartbeats for a second, so it goes to a thread.
        integrator = await asyncio.to_thread(self.build)
        self.integrators = {self.queue_id: integrator}
        log.info("saxs-integrator %s ready on %s", self.queue_id, worker.address)

    def teardown(self, worker: Worker) -> None:
        # Tasks already running keep their own reference to the integrator.
        self.integrators = {}


def get_integrator(queue_id: str = "default", worker: Worker | None = None) -> Integrator:
    """The integrator of ``queue_id`` on this worker (inside a task)."""
    worker = worker if worker is not None else get_worker()
    for plugin in list(worker.plugins.values()):
        if isinstance(plugin, IntegratorPlugin):
            integrator = plugin.integrators.get(queue_id)
            if integrator is not None:
                return integrator
    raise LookupError(f"no saxs-integrator for queue {queue_id!r} on worker {worker.address}")


# ---------------------------------------------------------------------------------------
# The task.


@dataclass(frozen=True)
class FrameOptions:
    """Per-queue output options every task carries (a few hundred bytes).

    ``skip``: ``"never"``; ``"all"`` skips a frame whose ``.chi`` files all exist
    (resume); ``"any"`` skips it when any exists (``OverwriteFiles: false``).
    """

    directory: str
    out_dir: str | None = None
    relpath: str = DEFAULT_RELPATH
    skip: str = "never"
    write_svg: bool = False
    write_png: bool = False


@dataclass
class CurveData:
    """The per-frame part of a :class:`Curve` (axes and labels stay with the driver's
    template), float32 like the curve stack."""

    key: str
    mean: np.ndarray
    poisson: np.ndarray
    std: np.ndarray | None
    integparams: dict[str, float]

    @classmethod
    def from_curve(cls, c: Curve) -> CurveData:
        return cls(c.key, np.asarray(c.mean, np.float32), np.asarray(c.poisson, np.float32),
                   None if c.std is None else np.asarray(c.std, np.float32),
                   {k: float(v) for k, v in c.integparams.items()})


@dataclass
class FrameResult:
    """What a task reports per frame. ``status``: ``"ok"``, ``"skipped"`` (outputs
    exist), ``"incomplete"`` (still being written: retry later; ``size`` is how many
    bytes were there) or ``"error"``."""

    path: str
    status: str
    error: str | None = None
    size: int | None = None
    image_time: float | None = None
    processed_time: float = 0.0
    basename: str = ""
    chi: list[str] = field(default_factory=list)
    curves: list[CurveData] | None = None


def _should_skip(basename: Path, suffixes: Sequence[str], rule: str) -> bool:
    if rule == "never" or not suffixes:
        return False
    exists = [p.exists() for p in chi_paths(basename, suffixes)]
    return all(exists) if rule == "all" else any(exists)


def product_frames(shape: tuple[int, int]) -> int:
    """Frames per sparse x dense product. The engine lays a group out as float32 blocks of
    frames x pixels, kept per worker thread for reuse; capping a block at 32 MiB bounds
    that memory (8 Pilatus 1M frames; measured 5.2 ms CPU per frame in the task against
    5.7-6.4 ms with 16, before the engine reused its blocks)."""
    return max(1, (32 * 2**20) // (4 * shape[0] * shape[1]))


def process_frames(
    queue_id: str,
    paths: Sequence[str],
    options: FrameOptions,
    integrator: Integrator | None = None,
) -> list[FrameResult]:
    """Integrate a batch of frames and write their outputs (the Dask task)."""
    integ = integrator if integrator is not None else get_integrator(queue_id)
    group = product_frames(integ.shape)
    results: list[FrameResult] = []
    for k in range(0, len(paths), group):
        results.extend(_process_group(integ, paths[k : k + group], options))
    _log_progress(queue_id, results)
    return results


def _process_group(integ: Integrator, paths: Sequence[str], options: FrameOptions) -> list[FrameResult]:
    suffixes = integ.output_suffixes()
    results: list[FrameResult] = []
    loaded: list[tuple[FrameResult, np.ndarray]] = []
    for path in paths:
        base = output_basename(path, options.directory, options.out_dir, options.relpath)
        res = FrameResult(path, "ok", basename=str(base))
        results.append(res)
        if _should_skip(base, suffixes, options.skip):
            res.status = "skipped"
            res.chi = [str(p) for p in chi_paths(base, suffixes)]
            continue
        try:
            image, header = read_frame(path, integ.shape)
        except ImageIncompleteError as exc:
            res.status, res.error, res.size = "incomplete", str(exc), exc.present
            continue
        except (ImageError, OSError) as exc:
            res.status, res.error = "error", str(exc)
            continue
        res.image_time = header.get("time")
        loaded.append((res, image))

    for (res, image), curves in zip(loaded, _integrate(integ, [im for _, im in loaded]), strict=True):
        if isinstance(curves, Exception):
            res.status, res.error = "error", f"integration failed: {curves}"
            continue
        try:
            base = Path(res.basename)
            base.parent.mkdir(parents=True, exist_ok=True)
            res.chi = [str(p) for p in integ.write_chi(curves, base)]
            if options.write_svg:
                write_svg(curves, base.with_name(base.name + ".svg"), title=base.name)
            if options.write_png:
                write_png(image, base.with_name(base.name + ".png"))
        except Exception as exc:  # a full disk or a permission problem: report, go on
            res.status, res.error = "error", f"writing outputs failed: {exc}"
            continue
        res.curves = [CurveData.from_curve(c) for c in curves]
        res.processed_time = time.time()
    return results


def _integrate(integ: Integrator, images: list[np.ndarray]) -> list[list[Curve] | Exception]:
    if not images:
        return []
    try:
        return list(integ.integrate_many(images))
    except Exception:
        # One bad frame must not fail its batch: integrate one by one to isolate it.
        out: list[list[Curve] | Exception] = []
        for image in images:
            try:
                out.append(integ.integrate(image))
            except Exception as exc:
                out.append(exc)
        return out


def _log_progress(queue_id: str, results: Sequence[FrameResult]) -> None:
    try:
        worker = get_worker()
    except ValueError:
        return  # called outside a Dask worker (tests, a local loop)
    counts = {"ok": 0, "skipped": 0, "incomplete": 0, "error": 0}
    for r in results:
        counts[r.status] += 1
    worker.log_event(PROGRESS_TOPIC, {
        "queue": queue_id,
        "key": repr(worker.get_current_task()),
        "processed": counts["ok"] + counts["skipped"],
        "failed": counts["error"],
        "incomplete": counts["incomplete"],
        "time": time.time(),
    })


# ---------------------------------------------------------------------------------------
# Optional per-frame pictures (-s, -p): standalone figures, no pyplot state, safe in
# worker threads.


def write_svg(curves: Sequence[Curve], path: Path, title: str = "") -> None:
    """The original's per-frame plot: mean on a log axis with std and Poisson bands."""
    from saxs_pipeline.plot import INTENSITY_LABEL, Q_LABEL, Band, draw_curve, new_figure

    fig = new_figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for c in curves:
        if c.kind != "Radial" or c.phi:
            continue
        bands = [Band(c.poisson, "tab:blue", 0.4)]
        if c.std is not None:
            bands.insert(0, Band(c.std, "yellow", 0.6))
        draw_curve(ax, c.radial, c.mean, bands, floor=1.0, positive_only=True, label=c.key, lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel(Q_LABEL)
    ax.set_ylabel(INTENSITY_LABEL)
    ax.set_title(title)
    _atomic_savefig(fig, path, "svg")


def write_png(image: np.ndarray, path: Path) -> None:
    """The raw frame as a PNG (log scale; negative gap pixels shown as 0)."""
    from saxs_pipeline.plot import new_figure

    h, w = image.shape
    fig = new_figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(np.log1p(np.clip(image, 0, None).astype(np.float32)), cmap="viridis",
              interpolation="nearest")
    _atomic_savefig(fig, path, "png")


def _atomic_savefig(fig: Any, path: Path, fmt: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format=fmt)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# saxs-worker


class SaxsWorker(Worker):
    """A Dask worker that, when the dask config ``saxs.calibration`` (environment
    ``DASK_SAXS__CALIBRATION``) names a calibration file, validates it and builds its
    operators before joining, and fails to start when that fails. Without it, it is a
    plain worker that gets the integrator from the driver's plugin."""

    def __init__(self, *args: Any, plugins: Any = (), **kwargs: Any) -> None:
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
        args = ["--worker-class", "saxs_pipeline.worker.SaxsWorker", *args]
    settings: dict[str, Any] = nanny_environ_config()
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
