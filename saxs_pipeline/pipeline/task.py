"""The Dask task: integrate a batch of frames on a worker and write their ``.chi`` files.

The driver sends :class:`FrameTask` values (frame path as the worker sees it and index in
the file, output base name decided by the driver, so two frames never share one) and
:class:`TaskOptions`; the task returns one :class:`FrameResult` per frame, in the same
order. Frames are read by :mod:`saxs_pipeline.pipeline.reading` (consecutive frames of
one file through one open source; stream frames from their messages in ``payloads``) and
integrated a group at a time (``kernels.BATCH`` frames, also across files: one pass over
the operator for the group), excluding the file's invalid and non-finite pixels. A frame
that cannot be read fails alone (with the other frames of its chunk), never its task. ``.chi``
writes are atomic replaces, so a task re-run after a lost worker or a lost scheduler is
harmless. Incomplete frames are *reported*, not waited for: the driver retries them
later, so a worker thread never sleeps on a slow detector.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from saxs_pipeline.config.normalisation import NormalisationResolver
from saxs_pipeline.integrator import Curve, Integrator
from saxs_pipeline.pipeline.naming import chi_paths
from saxs_pipeline.pipeline.nospace import is_no_space
from saxs_pipeline.pipeline.picture import LastFrame
from saxs_pipeline.pipeline.reading import Loaded, decode_stream, ranges, read_run
from saxs_pipeline.pipeline.tasktypes import CurveData, FrameResult, FrameTask, TaskOptions
from saxs_pipeline.plugins.stats import PROGRESS_TOPIC

__all__ = ["process_frames"]

log = logging.getLogger(__name__)


def process_frames(
    queue_id: str,
    frames: Sequence[FrameTask],
    options: TaskOptions,
    integrator: Integrator | None = None,
    payloads: Sequence[bytes] | None = None,
    normalisation: NormalisationResolver | None = None,
    picture: bool = False,
) -> list[FrameResult]:
    """Integrate a batch of frames and write their outputs (the Dask task). With
    ``payloads`` (stream frames), frame ``i`` is decoded from ``payloads[i]``. Each frame's
    curves are multiplied by its normalisation (AbsoluteScale / (Monitor * Transmission *
    ExposureTime * Thickness)); a frame whose value cannot be found fails, never gets 1."""
    if integrator is None:
        from saxs_pipeline.plugins.worker import get_integrator, get_normalisation  # on the worker

        integrator, normalisation = get_integrator(queue_id), get_normalisation(queue_id)
    results = [FrameResult("ok") for _ in frames]
    last = LastFrame() if picture else None
    if payloads is not None:
        _integrate_loaded(integrator, decode_stream(frames, payloads, integrator, results),
                          options, normalisation, last)
    else:
        from saxs_pipeline.ops.kernels import BATCH

        k = 0
        pending: Loaded | None = None
        # groups of at most BATCH frames: a task holds one kernel group of decoded frames,
        # not its whole range (32 EIGER 4M frames are 570 MB)
        for run in ranges(frames):
            k += len(run)
            for loaded in read_run(run, integrator, options, results[k - len(run) : k], BATCH):
                pending = _gather(integrator, pending, loaded, options, normalisation, last)
        if pending is not None:
            _integrate_loaded(integrator, pending, options, normalisation, last)
    if last is not None:
        last.attach(integrator)
    _log_progress(queue_id, results)
    return results


def _gather(integ: Integrator, pending: Loaded | None, loaded: Loaded, options: TaskOptions,
            normalisation: NormalisationResolver | None, last: LastFrame | None) -> Loaded | None:
    """``loaded`` added to the frames waiting for integration; a full group is integrated."""
    from saxs_pipeline.ops.kernels import BATCH

    if pending is not None and pending.invalid != loaded.invalid:
        _integrate_loaded(integ, pending, options, normalisation, last)
        pending = None
    # One-frame files (TIFF) are gathered into groups the kernel takes at once.
    pending = loaded if pending is None else pending.joined(loaded)
    if len(pending.images) >= BATCH:
        _integrate_loaded(integ, pending, options, normalisation, last)
        return None
    return pending


def _scales(loaded: Loaded, normalisation: NormalisationResolver | None) -> Loaded:
    """Each frame's normalisation multiplier; frames without their values fail."""
    if normalisation is None:
        return loaded
    keep = Loaded([], [], [], loaded.invalid, [])
    for task, res, image, meta in zip(loaded.tasks, loaded.results, loaded.images, loaded.meta,
                                      strict=True):
        try:
            scale = normalisation.resolve(task.path, task.index, meta).multiplier
        except ValueError as exc:  # NormalisationError: named key, file and frame
            res.status, res.error = "error", f"normalisation: {exc}"
            continue
        for part, value in ((keep.tasks, task), (keep.results, res), (keep.images, image),
                            (keep.meta, meta), (keep.scales, scale)):
            part.append(value)
    return keep


def _integrate_loaded(integ: Integrator, loaded: Loaded, options: TaskOptions,
                      normalisation: NormalisationResolver | None = None,
                      last: LastFrame | None = None) -> None:
    from saxs_pipeline.ops.kernels import BATCH as step

    loaded = _scales(loaded, normalisation)
    suffixes = integ.output_suffixes()
    for k in range(0, len(loaded.images), step):
        images = loaded.images[k : k + step]
        scales = loaded.scales[k : k + step] if loaded.scales else None
        t0 = time.perf_counter()
        integrated = _integrate(integ, images, loaded.invalid, scales)
        share = (time.perf_counter() - t0) / max(len(images), 1)  # frames go as one product
        for task, res, image, curves, meta in zip(loaded.tasks[k : k + step],
                                                  loaded.results[k : k + step], images,
                                                  integrated, loaded.meta[k : k + step],
                                                  strict=True):
            res.integration_time = share
            if isinstance(curves, Exception):
                res.status, res.error = "error", f"integration failed: {curves}"
                continue
            try:
                _write_outputs(integ, curves, image, Path(task.output), suffixes, options, res)
            except Exception as exc:  # a permission problem: report, go on
                # A full disk is not this frame's failure: the driver stops the run.
                res.status = "nospace" if is_no_space(exc) else "error"
                res.error = f"writing outputs failed: {exc}"
                continue
            res.curves = [CurveData.from_curve(c) for c in curves]
            res.processed_time = time.time()
            if last is not None:
                last.offer(res, image, loaded.invalid, meta)


def _write_outputs(integ: Integrator, curves: list[Curve], image: np.ndarray, base: Path,
                   suffixes: Sequence[str], options: TaskOptions, res: FrameResult) -> None:
    if not (options.write_chi or options.write_svg or options.write_png):
        return
    base.parent.mkdir(parents=True, exist_ok=True)
    if options.write_chi:
        paths = chi_paths(base, suffixes)
        if options.keep_existing_chi and any(p.exists() for p in paths):
            res.chi = [str(p) for p in paths]  # OverwriteFiles false: the old files stay
        else:
            res.chi = [str(p) for p in integ.write_chi(curves, base)]
    if options.write_svg or options.write_png:
        from saxs_pipeline.curves.plot import write_frame_png, write_frame_svg

        if options.write_svg:
            write_frame_svg(curves, base.with_name(base.name + ".svg"), title=base.name)
        if options.write_png:
            write_frame_png(image, base.with_name(base.name + ".png"))


def _integrate(integ: Integrator, images: list[np.ndarray], invalid: float | None,
               scales: list[float] | None = None) -> list[list[Curve] | Exception]:
    if not images:
        return []
    try:
        return list(integ.integrate_many(images, scales, invalid=invalid))
    except Exception as exc:
        # One bad frame must not fail its batch: integrate one by one to isolate it.
        log.debug("%d frames integrated one by one: together they failed (%s)",
                  len(images), exc)
        out: list[list[Curve] | Exception] = []
        for i, image in enumerate(images):
            try:
                out.append(integ.integrate(image, scales[i] if scales else 1.0, invalid=invalid))
            except Exception as exc:
                out.append(exc)
        return out


def _log_progress(queue_id: str, results: Sequence[FrameResult]) -> None:
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return  # called outside a Dask worker (tests, a local loop)
    counts = {"ok": 0, "incomplete": 0, "error": 0, "nospace": 0}
    name = str(worker.name)
    for r in results:
        counts[r.status] += 1
        r.worker = name
    worker.log_event(PROGRESS_TOPIC, {
        "queue": queue_id,
        "key": repr(worker.get_current_task()),
        "processed": counts["ok"],
        "failed": counts["error"],
        "incomplete": counts["incomplete"],
        "time": time.time(),
    })
