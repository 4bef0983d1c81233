"""Engine benchmark: ``python -m benchmarks.engine``.

Pilatus 1M frames (the real frame from ../shared/data/pilatus1m when present, else the
generated demo set): operator build, per-frame integrate, integrate + Poisson, all three
columns, and the batched product -- each beside pyFAI ``integrate1d`` (full/csr, same
bins, polarization 0.99, ``error_model="poisson"`` / ``"azimuthal"``) and a plain scipy
CSR mat-vec with the same weights (the float32 cast of the frame, the product and the
division by the areas: the mean only), measured in one run on this machine, the CSR
product interleaved call by call with each of our rows (for the batched row, on the
same 16 distinct frames). pyFAI is the optional ``bench``
extra; without it its columns read "n/a". The kernel plan the operator measured on this
CPU (:mod:`saxs_pipeline.ops.tuning`) is printed above the table.

The corrected chain (dark, +-10 % flat, solid angle, silicon sensor, polarization and a
monitor; the summed-normalisation definition) is timed interleaved with the plain
integration it is compared with, and beside pyFAI with the same corrections.

Times are medians of repeated calls (warm caches, the usual steady state of a beamline).
"one core" rows run single-threaded, beside pyFAI held to one OpenMP thread
(``threadpoolctl``) and, stricter, at its OpenMP default (both cores of this machine);
"2 threads" rows run two frames at a time in a thread pool (the kernels release the GIL)
against pyFAI's default. Single-threaded calls (ours on one core, the CSR product, pyFAI
on one thread) are timed by the calling thread's CPU time (``time.thread_time``), so the
time other processes of a shared machine take the core does not count; multi-threaded
ones and the builds by the wall clock. The last lines check the targets of the engine
issue.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from saxs_pipeline.config.calibration import Calibration, Polarization, Sensor, load_calibration
from saxs_pipeline.config.masks import load_mask
from saxs_pipeline.frames.tiff import read_image
from saxs_pipeline.ops import corrections as corr
from saxs_pipeline.ops import tuning
from saxs_pipeline.ops.integrate import (
    integrate,
    integrate_batch,
    integrate_corrected,
    integrate_error,
    integrate_poisson,
)
from saxs_pipeline.ops.operator import build_operator

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pilatus1m"
BATCH = 16


def median_ms(fn: Callable[[], object], repeat: int, per: int = 1,
              clock: Callable[[], float] = time.perf_counter) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        times.append(clock() - t)
    return 1e3 * statistics.median(times) / per


def interleaved_ms(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Medians of ``fns`` called in turn, so that slow drift of a shared machine hits all
    of them alike; single-threaded calls, timed by the thread's CPU time."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            t = time.thread_time()
            fn()
            out.append(time.thread_time() - t)
    return [1e3 * statistics.median(ts) for ts in times]


def load_set_up() -> tuple[Calibration, np.ndarray, np.ndarray, str]:
    if (DATA / "buf1_00000.tif").is_file():
        cal = load_calibration(DATA / "cal_flat.json")
        return cal, load_mask(cal, cal.masks[0]), read_image(DATA / "buf1_00000.tif"), "real buf1_00000.tif"
    from saxs_pipeline.demo.beamtime import generate_demo

    demo = generate_demo(Path(tempfile.mkdtemp()) / "bench", n_frames=1)
    cal = load_calibration(demo.calibration)
    return cal, load_mask(cal, cal.masks[0]), read_image(demo.frames[0]), "generated demo frame"


def pyfai_integrator(cal: Calibration, valid: np.ndarray):
    try:
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator
    except ImportError:
        try:
            from pyFAI.azimuthalIntegrator import AzimuthalIntegrator
        except ImportError:
            return None
    g = cal.geometry
    ai = AzimuthalIntegrator(detector="Pilatus1M")
    # FIT2D frame: flip the stored TIFF rows (research pyfai.md 0, recipe 1).
    ai.setFit2D(
        directDist=g.distance_mm,
        centerX=g.beam_center_x,
        centerY=g.beam_center_y,
        tilt=g.tilt_angle_deg,
        tiltPlanRotation=g.tilt_rot_deg,
        pixelX=g.pixel_size_um[1],
        pixelY=g.pixel_size_um[0],
        wavelength=g.wavelength_a,
    )
    return ai, np.flipud(~valid).astype(np.int8)


def cold_seed_call() -> float:
    """Seconds from a fresh interpreter to a built ``saxs_pipeline.calibration(...)``
    (no operator cache), the first call an old script makes."""
    code = ("import time; t = time.perf_counter(); import saxs_pipeline; "
            f"saxs_pipeline.calibration({str(DATA / 'cal_flat.json')!r}, cache_dir=False); "
            "print(time.perf_counter() - t)")
    if not (DATA / "cal_flat.json").is_file():
        return float("nan")
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(3)]
    return min(runs)


Row = tuple[str, float, float | None, float | None, float | None]


def one_thread():
    """pyFAI's OpenMP held to one thread; None without threadpoolctl (no such column)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(1, user_api="openmp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per case (median)")
    args = parser.parse_args()
    rep = args.repeat

    cal, valid, image, source = load_set_up()
    pol = Polarization(0.995, 0.0)
    base = cal.masks[0]
    rows: list[Row] = []

    # --- operator build ---------------------------------------------------------------
    for ov in (2, 3):
        mc = dataclasses.replace(base, oversampling=ov)
        t = median_ms(lambda mc=mc: build_operator(cal.geometry, mc, valid, pol), 3)
        rows.append((f"build ov {ov}, original grid (point)", t, None, None, None))
    mc3 = dataclasses.replace(base, oversampling=3)
    op = build_operator(cal.geometry, mc3, valid, pol)
    lin = dataclasses.replace(mc3, radial_edges=tuple(op.edges))
    t_lin = median_ms(lambda: build_operator(cal.geometry, lin, valid, pol), 3)

    fai = pyfai_integrator(cal, valid)
    flipped = np.flipud(image)
    qrange = (float(op.edges[0]), float(op.edges[-1]))
    kw = dict(unit="q_nm^-1", radial_range=qrange, method=("full", "csr", "cython"),
              correctSolidAngle=False, polarization_factor=0.99)
    t_fai_build = None
    if fai is not None:
        ai, fmask = fai

        def fresh_setup() -> None:
            ai.reset()
            ai.integrate1d(flipped, op.nbins, mask=fmask, **kw)

        t_fai_build = median_ms(fresh_setup, 3)
    rows.append(("build ov 3, explicit grid (linear split)", t_lin, None, t_fai_build, None))

    # --- per frame, one core --------------------------------------------------------------
    csr = op.matrix.tocsr()
    lo, hi = op.span

    def scipy_csr() -> None:
        with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: NaN
            (csr @ image.ravel()[lo:hi].astype(np.float32)) / op.areas

    def fai_ms(call: Callable[[], object] | None, threads: int | None) -> float | None:
        """pyFAI's median time on one OpenMP thread (1) or at its default (None)."""
        limit = one_thread() if threads == 1 else nullcontext()
        if call is None or limit is None:
            return None
        with limit:
            clock = time.thread_time if threads == 1 else time.perf_counter
            return median_ms(call, rep, clock=clock)

    def fai_call(error_model: str | None):
        if fai is None:
            return None
        ai, fmask = fai
        extra = {"error_model": error_model} if error_model else {}
        return lambda: ai.integrate1d(flipped, op.nbins, mask=fmask, **kw, **extra)

    t = time.perf_counter()
    # measured here: loading the compiled kernels, then timing them
    plans = {v: tuning.plan(op, image.dtype, v) for v in (False, True)}
    t_plan = time.perf_counter() - t
    t = time.perf_counter()
    tuning.measure(op, image.dtype, True)  # the timing alone, kernels loaded
    t_measure = time.perf_counter() - t
    for label, ours, model in (
        ("integrate (mean)", lambda: integrate(op, image), None),
        ("integrate + Poisson (original's)", lambda: integrate_poisson(op, image), "poisson"),
        ("integrate + Poisson (weighted mean)",
         lambda: integrate_poisson(op, image, error_model="poisson"), "poisson"),
        ("all three columns (mean, std, Poisson)", lambda: integrate_error(op, image), "azimuthal"),
    ):
        f = fai_call(model)
        t_ours, t_csr = interleaved_ms([ours, scipy_csr], rep)
        rows.append((f"{label}, one core", t_ours, fai_ms(f, 1), fai_ms(f, None), t_csr))

    # --- the corrected chain, one core ------------------------------------------------------
    rng = np.random.default_rng(0)
    g = cal.geometry
    flat = corr.normalised_flat(1 + 0.1 * rng.uniform(-1, 1, g.image_shape), valid)
    dark = rng.poisson(2.0, g.image_shape).astype(np.float64)
    sensor = Sensor("Si", 450.0, 146.0)
    pixels = corr.pixel_corrections(g, polarization=pol, solid_angle=True, sensor=sensor,
                                    flat=flat, dark=dark, dark_exposures=10)
    op_a = build_operator(g, mc3, valid)  # plain area fractions: P is part of c
    cor = corr.corrections_for(op_a, pixels)
    monitor = 2.5

    def chain(with_std: bool = False) -> None:
        r = integrate_corrected(op_a, image, cor, with_std=with_std)
        r.mean / monitor, r.poisson / monitor
        if with_std:
            r.std / monitor

    plain_ms, chain_ms, plain3_ms, chain3_ms, t_csr = interleaved_ms(
        [lambda: integrate_poisson(op, image, error_model="poisson"), chain,
         lambda: integrate_error(op, image, error_model="poisson"), lambda: chain(True),
         scipy_csr], rep * 3)
    fai_chain = fai_chain3 = None
    if fai is not None:
        eta = corr.sensor_efficiency(g, sensor)
        ckw = dict(correctSolidAngle=True, dark=np.flipud(dark), flat=np.flipud(flat),
                   absorption=np.flipud(eta), normalization_factor=monitor)
        kw_chain = dict(kw, **ckw)
        ai, fmask = fai

        def fai_chain_call(model: str) -> Callable[[], object]:
            return lambda: ai.integrate1d(flipped, op.nbins, mask=fmask, **kw_chain,
                                          error_model=model)

        fai_chain = fai_chain_call("poisson")
        fai_chain3 = fai_chain_call("azimuthal")
    rows.append(("plain + Poisson (interleaved), one core", plain_ms, None, None, t_csr))
    rows.append(("full chain + Poisson, one core", chain_ms, fai_ms(fai_chain, 1),
                 fai_ms(fai_chain, None), t_csr))
    rows.append(("plain, all three columns (interleaved)", plain3_ms, None, None, t_csr))
    rows.append(("full chain, all three columns, one core", chain3_ms, fai_ms(fai_chain3, 1),
                 fai_ms(fai_chain3, None), t_csr))

    # distinct frames, as a run's: one frame BATCH times would be read from the cache
    frames = [image + i for i in range(BATCH)]

    def scipy_csr_frames() -> None:  # the same frames, one product each
        with np.errstate(invalid="ignore", divide="ignore"):
            for f in frames:
                (csr @ f.ravel()[lo:hi].astype(np.float32)) / op.areas

    t_batch, t_csr = interleaved_ms([lambda: integrate_batch(op, frames), scipy_csr_frames],
                                    max(3, rep // 5))
    rows.append((f"batched x{BATCH} (mean + Poisson), one core", t_batch / BATCH, None, None,
                 t_csr / BATCH))

    # --- throughput on 2 threads -----------------------------------------------------------
    n = 64
    with ThreadPoolExecutor(2) as pool:
        t2 = median_ms(lambda: list(pool.map(lambda _: integrate_poisson(op, image), range(n))), 3, per=n)
        t3 = median_ms(lambda: list(pool.map(lambda _: integrate_error(op, image), range(n))), 3, per=n)
        tb = median_ms(
            lambda: list(pool.map(lambda _: integrate_batch(op, frames), range(4))), 3, per=4 * BATCH
        )
    t_fai2 = fai_ms(fai_call("poisson"), None)
    rows.append(("integrate + Poisson, 2 threads (per frame)", t2, None, t_fai2, None))
    rows.append(("all three columns, 2 threads (per frame)", t3, None,
                 fai_ms(fai_call("azimuthal"), None), None))
    rows.append((f"batched x{BATCH}, 2 threads (per frame)", tb, None, t_fai2, None))

    cold = cold_seed_call()
    print(f"saxs_pipeline engine benchmark -- {source}, {image.shape[0]}x{image.shape[1]} int32, "
          f"{op.nbins} bins, ov 3, polarization 0.99, nnz {op.matrix.nnz:,}; "
          f"{os.cpu_count()} cores; pyFAI full/csr/cython on 1 OpenMP thread and at its default")
    print(f"CPU: {tuning.cpu_id()}; kernel plans for {image.dtype} frames measured in "
          f"{1e3 * t_plan:.0f} ms (one of them {1e3 * t_measure:.0f} ms with the kernels loaded):")
    for variance, plan in plans.items():
        ms = ", ".join(f"{k} {v:.2f}" for k, v in (plan.ms or {}).items())
        print(f"  mean{'+variance' if variance else ''}: {plan.single}, {plan.batch} per batched "
              f"pass (CPU ms per frame: {ms})")
    print_table(rows)
    t_chain = _row(rows, "full chain + Poisson")[3]  # pyFAI at its default threads
    ratio_fai = f"{t_chain / chain_ms:.1f}x pyFAI (default threads)" if t_chain else "pyFAI n/a"
    print(f"full chain (dark, flat, solid angle, sensor, P, monitor) vs plain: "
          f"{chain_ms / plain_ms:.3f}x (target <= 1.05), all three columns "
          f"{chain3_ms / plain3_ms:.3f}x; {ratio_fai} with the same corrections (target >= 5x)")
    cold_text = "n/a (no real calibration)" if math.isnan(cold) else f"{cold:.2f} s"
    print(f"cold seed-API call (new process: imports, schema, mask, build of the original grid): "
          f"{cold_text}")
    print("targets: " + verdict(rows, cold))


def _row(rows: list[Row], label: str) -> Row:
    return next(r for r in rows if r[0].startswith(label))


def print_table(rows: list[Row]) -> None:
    head = (f"{'case':<49}{'ours ms':>9}{'pyFAI 1t':>10}{'pyFAI':>9}{'CSR ms':>8}"
            f"{'1t/ours':>9}{'pyFAI/ours':>11}{'CSR/ours':>9}")
    print(head)
    print("-" * len(head))

    def fmt(v: float | None, w: int) -> str:
        return f"{v:>{w}.2f}" if v is not None else f"{'n/a':>{w}}"

    def ratio(v: float | None, ours: float, w: int, digits: int = 1) -> str:
        return f"{v / ours:>{w - 1}.{digits}f}x" if v else " " * w

    for label, ours, fai1, fai2, plain in rows:
        print(f"{label:<49}{fmt(ours, 9)}{fmt(fai1, 10)}{fmt(fai2, 9)}{fmt(plain, 8)}"
              f"{ratio(fai1, ours, 9)}{ratio(fai2, ours, 11)}{ratio(plain, ours, 9, 2)}")


def verdict(rows: list[Row], cold: float) -> str:
    """The engine issue's targets: each ratio against pyFAI on one core (the issue's
    terms) and, in brackets, against pyFAI on both cores; where only the latter was
    timed (the build), against that, and said so."""
    def check(label: str, ours: float, fai: tuple[float | None, float | None], target: float) -> str:
        one, both = (None if f is None else f / ours for f in fai)
        if one is None and both is None:
            return f"{label} >= {target:g}x: n/a"
        if one is None:
            main, tail = both, " vs 2 threads"
        else:
            main, tail = one, f" ({both:.1f}x vs 2 threads)" if both is not None else ""
        return f"{label} >= {target:g}x: {main:.1f}x{tail} {'PASS' if main >= target else 'FAIL'}"

    single = _row(rows, "integrate + Poisson (weighted mean)")  # pyFAI error_model="poisson"
    three = _row(rows, "all three columns (mean, std, Poisson)")
    build = _row(rows, "build ov 3, explicit grid")
    batched = _row(rows, "batched x")

    def floor(label: str, row: Row) -> str:
        ratio = row[4] / row[1]
        return f"CSR/ours {label} >= 1: {ratio:.2f}x {'PASS' if ratio >= 1 else 'FAIL'}"

    parts = [
        check("single frame mean + Poisson", single[1], (single[2], single[3]), 7),
        check("three columns vs azimuthal", three[1], (three[2], three[3]), 4),
        check("three columns vs Poisson", three[1], (single[2], single[3]), 2.5),
        check("build vs pyFAI CSR set-up", build[1], (None, build[3]), 1),
        "cold seed call <= 1 s: n/a" if math.isnan(cold)
        else f"cold seed call <= 1 s: {cold:.2f} s {'PASS' if cold <= 1 else 'FAIL'}",
        floor("single frame mean + Poisson", single),
        floor("batched", batched),
    ]
    return "; ".join(parts)


if __name__ == "__main__":
    main()
