"""Which kernel layout integrates fastest on this CPU: timed once per operator, frame
dtype and error model, and remembered beside the operator in its cache.

A kernel tuned for one cache size is a guess on the next machine: the compact scatter
kernel (:func:`~saxs_pipeline.ops.kernels.pass1`) was 1.3x faster than scipy's CSR
product where it was written and 0.9x on another CPU. The candidates give the same bits
(every (bin, lane) sum adds the same products in the same order), so choosing among them
changes only the time:

* one frame: the compact layout (scatter, pixel by pixel) with the lanes' sums as
  ``[bin][lane]`` ("compact", scalar adds) or ``[lane][bin][s1, s2]`` ("vector", one
  vector add per pixel), or the bin layout (gather, bin by bin, "bins",
  :mod:`saxs_pipeline.ops.binlayout`; 1.5x the compact layout's memory, kept only where
  chosen) -- :mod:`saxs_pipeline.ops.kernelvariants`;
* several frames: the batched compact kernel on groups of 4 or 8 frames, or frame by
  frame with the one-frame choice.

They are timed on the actual operator with distinct frames of the dtype (positive counts,
no excluded pixel; the one-frame kernels on 4 of them in turn, the batches on 4 and 8),
with or without the variance sum as the error model asks, interleaved, by the thread's
CPU time; each candidate's best time counts once a second one agrees with it
(:data:`AGREE`; more rounds while the machine is busy, up to :data:`MAX_SECONDS`; a
measurement that did not settle is used but not kept), and candidates far behind
(:data:`SLOWER`) are timed once only. For a Pilatus 1M that took 0.2-0.7 s on a 2-core
machine busy with other work (load average 7-13); the first measurement of a process
also loads the compiled kernels and builds the bin layout (60 ms).

The choice is written to ``<key>.plans.json`` beside the operator's ``<key>.npz`` under
this CPU's :func:`cpu_id` (model, cache sizes, LLVM's target and the numba version), so
another CPU -- a worker host of another kind sharing the cache, a machine the cache was
copied to -- measures for itself. Operators of fewer than :data:`MIN_PIXELS` used pixels
are not timed (the default plan), nor those the compact layout cannot hold (the CSC
kernels, one frame at a time).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from saxs_pipeline.ops.cache import plans_file

if TYPE_CHECKING:
    from saxs_pipeline.ops.operator import IntegrationOperator

__all__ = ["CSC_PLAN", "DEFAULT_PLAN", "KernelPlan", "choose", "cpu_id", "measure", "plan",
           "plan_for"]

log = logging.getLogger(__name__)

MIN_PIXELS = 1 << 16  # used pixels; below this every candidate takes well under 0.1 ms
# Each candidate's best time counts, once a second sample agrees with it: on a shared
# machine a round may share its core with another process.
MIN_ROUNDS = 2
AGREE = 1.1  # the second-best sample within 10 % of the best
MAX_ROUNDS = 12
MAX_SECONDS = 1.0  # then the best so far (a 16 Mpx detector's round takes ~0.5 s)
SLOWER = 1.5  # a candidate this much slower than the fastest is not timed again
MARGIN = 0.03  # the bin layout costs memory: taken when at least this much faster
SINGLE = ("compact", "vector", "bins")
BATCHES = (4, 8)  # frames per batched pass (kernels.BATCH the largest)

_lock = threading.Lock()  # one measurement at a time: two would disturb each other's times


@dataclass(frozen=True)
class KernelPlan:
    """``single``: the one-frame kernel (one of :data:`SINGLE`, or "csc");
    ``batch``: frames per batched pass (1: frame by frame with ``single``); ``ms``: the
    candidates' measured ms per frame (None where not measured)."""

    single: str = "compact"
    batch: int = 8
    ms: dict[str, float] | None = field(default=None, compare=False)


DEFAULT_PLAN = KernelPlan()
CSC_PLAN = KernelPlan("csc", 1)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
    except UnicodeDecodeError:
        log.debug("%s unreadable: %s", what, path)
        return ""


def _caches() -> str:
    """``L1d 48K, L1i 64K, L2 2048K, L3 491520K`` from sysfs (Linux), else empty."""
    parts = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        level, kind, size = (_read(index / f, "cache").strip() for f in ("level", "type", "size"))
        tag = {"Data": "d", "Instruction": "i"}.get(kind, "")
        parts.append(f"L{level}{tag} {size}")
    return ", ".join(parts)


def _model() -> str:
    for line in _read(Path("/proc/cpuinfo"), "cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def cpu_id() -> str:
    """What the kernels' speed depends on: the CPU model, its cache sizes, the target
    LLVM compiles for and the numba version."""
    import llvmlite.binding as llvm
    import numba

    return f"{_model()}; {_caches()}; llvm {llvm.get_host_cpu_name()}; numba {numba.__version__}"


def _load(path: Path) -> dict:
    text = _read(path, "kernel plans")
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        log.warning("kernel plans %s unreadable; measuring again", path)
        return {}
    return data if isinstance(data, dict) else {}


def _save(path: Path, cpu: str, name: str, plan: KernelPlan) -> None:
    data = _load(path)  # other CPUs' and dtypes' entries stay
    data.setdefault(cpu, {})[name] = asdict(plan)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache: measured again by the next process
        log.debug("cannot write kernel plans %s: %s", path, exc)
        tmp.unlink(missing_ok=True)


def _name(dtype: np.dtype, variance: bool) -> str:
    """A plan's name in the file: the frame dtype and the sums the kernels take."""
    return f"{dtype.str} {'mean+variance' if variance else 'mean'}"


def _cached(path: Path, cpu: str, name: str) -> KernelPlan | None:
    entry = _load(path).get(cpu, {}).get(name)
    if not isinstance(entry, dict):
        return None
    ms = entry.get("ms")
    plan = KernelPlan(entry.get("single"), entry.get("batch"), ms if isinstance(ms, dict) else None)
    if plan.single not in SINGLE or plan.batch not in (1, *BATCHES):
        return None
    return plan


def plan(op: IntegrationOperator, dtype: np.dtype, variance: bool) -> KernelPlan:
    """Which kernels integrate frames of ``dtype`` fastest on this CPU, with or without
    the variance sum: :func:`plan_for` once, then kept in ``op.plans``."""
    key = (np.dtype(dtype).str, variance)
    if key not in op.plans:
        op.plans[key] = plan_for(op, np.dtype(dtype), variance)
        if all(p.single != "bins" for p in op.plans.values()):
            op.drop_bins()  # measured, not chosen: its memory back
    return op.plans[key]


@contextmanager
def _measuring(entry: Path | None) -> Iterator[None]:
    """Held while a process measures for a cached operator (an ``flock`` on its file): the
    workers of one host starting together measure one after the other -- the first
    undisturbed, the others read its plan."""
    try:
        fd = None if entry is None else os.open(entry, os.O_RDONLY)
    except OSError:  # evicted meanwhile: measure without
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing drops the flock


def plan_for(op: IntegrationOperator, dtype: np.dtype, variance: bool) -> KernelPlan:
    """The plan for frames of ``dtype``, with or without the variance sum (the error
    models): from the operator's cache entry when this CPU measured it before, else
    measured now (and saved there)."""
    dtype = np.dtype(dtype)
    if op.compact(dtype) is None:
        return CSC_PLAN
    if op.compact(dtype).start.size < MIN_PIXELS:
        return DEFAULT_PLAN
    path = None if op.cache_file is None else plans_file(op.cache_file)
    cpu = cpu_id()
    with _lock, _measuring(op.cache_file):
        name = _name(dtype, variance)
        plan = None if path is None else _cached(path, cpu, name)
        if plan is not None:
            log.debug("kernel plan %s for %s (cached in %s)", plan, name, path)
            return plan
        t0 = time.perf_counter()
        plan, settled = measure(op, dtype, variance)
        log.info("kernels for %s of operator %s on this CPU: %s, %s batched (ms per frame: "
                 "%s; measured in %.0f ms%s)", name, op.key[:8] or "(uncached)", plan.single,
                 plan.batch, ", ".join(f"{k} {v:.3f}" for k, v in plan.ms.items()),
                 1e3 * (time.perf_counter() - t0),
                 "" if settled else "; the times did not settle: measured again next time")
        if path is not None and settled:
            _save(path, cpu, name, plan)
        return plan


def _frames(op: IntegrationOperator, dtype: np.dtype, n: int) -> list[np.ndarray]:
    """``n`` frames of ``dtype`` with counts 0-99 on every pixel (distinct arrays, as a
    run's, up to 64 MB; then repeated)."""
    npix = op.shape[0] * op.shape[1]
    base = (np.arange(npix) % 100).astype(dtype)
    distinct = max(1, min(n, (64 << 20) // max(base.nbytes, 1)))
    frames = [base] + [np.roll(base, 7 * i) for i in range(1, distinct)]
    return [frames[i % distinct] for i in range(n)]


def measure(op: IntegrationOperator, dtype: np.dtype, variance: bool) -> tuple[KernelPlan, bool]:
    """Time the candidates on ``op`` (each on the same distinct frames, one after the other
    or in groups) and choose; the plan holds the ms per frame of each. False with it when
    the times did not settle (a machine too busy to measure)."""
    from saxs_pipeline.ops import kernels
    from saxs_pipeline.ops import kernelvariants as variants

    dtype = np.dtype(dtype)
    compact, bins = op.compact(dtype), op.bins(dtype)
    frames = _frames(op, dtype, max(BATCHES))
    singles = frames[: min(BATCHES)]
    limits = (0.0, math.nan)
    nb = op.nbins
    s1, s2 = np.empty(nb), np.empty(nb) if variance else None
    bad = np.empty(max(compact.start.size, bins.pixels.size), dtype=np.int64)
    fields = (compact.segments, compact.start, compact.weights)
    one_frame = {
        "compact": lambda x: kernels.pass1(x, *fields, s1, s2, bad, *limits),
        "vector": lambda x: variants.pass1_vector(x, *fields, s1, s2, bad, *limits),
        "bins": lambda x: variants.pass1_bins(x, bins.steps, bins.pixels, bins.weights, s1, s2,
                                              bad, *limits),
    }
    calls = {name: (len(singles), lambda k=k: [k(x) for x in singles])
             for name, k in one_frame.items()}
    for n in BATCHES:
        # read-only views, as integrate_batch passes them
        xs = tuple(kernels.readonly(f) for f in frames[:n])
        b1, b2 = np.empty((n, nb)), np.empty((n, nb)) if variance else None
        pairs = np.empty((compact.start.size, 2), dtype=np.int64)
        calls[f"batch {n}"] = (n, lambda xs=xs, b1=b1, b2=b2, pairs=pairs: kernels.pass1_batch(
            xs, len(xs), *fields, b1, b2, pairs, *limits))
    for _, call in calls.values():  # compile or load the kernels
        call()
    # the thread's CPU time: the time other processes take the core does not count
    samples: dict[str, list[float]] = {name: [] for name in calls}
    start = time.perf_counter()
    settled = False
    for r in range(MAX_ROUNDS):
        for name, (n, call) in calls.items():
            t = time.thread_time()
            call()
            samples[name].append((time.thread_time() - t) / n)
        fastest = min(min(v) for v in samples.values())
        calls = {k: c for k, c in calls.items() if min(samples[k]) <= SLOWER * fastest}
        settled = r + 1 >= MIN_ROUNDS and all(
            second <= AGREE * first for first, second in (sorted(samples[k])[:2] for k in calls))
        if settled or time.perf_counter() - start > MAX_SECONDS:
            break
    ms = {k: round(1e3 * min(v), 4) for k, v in samples.items()}
    return replace(choose(ms), ms=ms), settled


def choose(ms: dict[str, float]) -> KernelPlan:
    """The plan from the candidates' ms per frame (``compact``, ``vector``, ``bins``,
    ``batch 4``, ...): the fastest one-frame kernel on the compact layout, the bin layout
    where it beats that by :data:`MARGIN`; and the group size (1: the one-frame kernel)
    of the least time per frame."""
    single = min(("compact", "vector"), key=ms.get)
    if ms["bins"] < (1 - MARGIN) * ms[single]:
        single = "bins"
    per_frame = {1: ms[single]} | {n: ms[f"batch {n}"] for n in BATCHES}
    return KernelPlan(single, min(per_frame, key=per_frame.get))
