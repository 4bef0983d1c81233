"""Sectors and cake benchmark: ``python -m benchmarks.sectors``.

Per Pilatus 1M frame (the real buf1_00000.tif; the generated demo frame without it) one
set of results: a 1-D curve, 4 wedges of 45 deg (one mask entry each) and a 360 x 500
cake, all 500 q bins over the same range, Oversampling 3 with linear splitting -- ours
(``integrate``, the mean) beside pyFAI (full/csr: ``integrate1d``, ``integrate1d`` with
``azimuth_range``, ``integrate2d``) for the same set, in one run on one core (pyFAI's
OpenMP limited to 1 thread before it is imported). The wedges are those pyFAI can do
without wrapping through its chi = +-180 deg cut, in the lower half of the image: on
this set-up every unmasked pixel has chi < 0 (the upper part is masked). Times are medians of repeated warm
calls, interleaved so that drift on a shared machine hits both alike; operator builds
(ours) and first calls (pyFAI's engine set-up) are timed once.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before pyFAI (and numpy's BLAS) load

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.engine import interleaved_ms, load_set_up, pyfai_integrator  # noqa: E402
from saxs_pipeline.ops import geometry as geo  # noqa: E402
from saxs_pipeline.ops.integrate import integrate  # noqa: E402
from saxs_pipeline.ops.operator import build_operator  # noqa: E402

NQ, NCHI = 500, 360
WEDGES = ((-180.0, -135.0), (-135.0, -90.0), (-90.0, -45.0), (-45.0, 0.0))


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return 1e3 * (time.perf_counter() - t), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per case (median)")
    args = parser.parse_args()
    cal, valid, image, source = load_set_up()
    g = cal.geometry
    qmax = float(geo.q_map(g, 1).max())
    q_range = (0.0, qmax)
    base = dataclasses.replace(cal.masks[0], oversampling=3, radial_bins=NQ, radial_range=q_range,
                               pixel_splitting="linear")
    configs = [("1-D curve", base)]
    configs += [(f"wedge [{a:g}, {b:g}]", dataclasses.replace(base, azimuth=((a, b),))) for a, b in WEDGES]
    configs.append((f"cake {NCHI} x {NQ}", dataclasses.replace(base, azimuth_bins=NCHI)))
    ops, builds = [], []
    for _, mc in configs:
        t, op = _timed(lambda mc=mc: build_operator(g, mc, valid, None))
        ops.append(op)
        builds.append(t)
    ours = [lambda op=op: integrate(op, image) for op in ops]

    theirs, setups, filled = [], [], []
    if pyfai_integrator(cal, valid) is not None:
        flipped = np.flipud(image).astype(np.float64)
        kw = dict(unit="q_nm^-1", radial_range=q_range, method=("full", "csr", "cython"),
                  correctSolidAngle=False, polarization_factor=None)

        def integrator():
            # One integrator a case: pyFAI keeps one engine per integrator and method, so
            # cases sharing one would rebuild it on every call.
            ai, fmask = pyfai_integrator(cal, valid)
            # Same q as ours: our wavelength unit is the original's Angstrom (ANGSTROM_NM).
            ai.wavelength = g.wavelength_a * geo.ANGSTROM_NM * 1e-9
            return ai, fmask

        cases = [{}] + [{"azimuth_range": w} for w in WEDGES] + [{"npt_azim": NCHI}]
        for extra in cases:
            ai, fmask = integrator()
            if "npt_azim" in extra:
                def call(ai=ai, m=fmask):
                    return ai.integrate2d(flipped, NQ, NCHI, azimuth_range=(-180, 180), mask=m, **kw)
            else:
                def call(ai=ai, m=fmask, e=extra):
                    return ai.integrate1d(flipped, NQ, mask=m, **kw, **e)
            t, res = _timed(call)
            setups.append(t)
            filled.append(float(np.sum(res.count)))
            theirs.append(call)
    fns = ours + theirs
    times = interleaved_ms(fns, args.repeat)
    t_ours, t_fai = times[: len(ours)], times[len(ours):]

    print(f"# sectors benchmark: {source}, Oversampling 3 (linear), {NQ} q bins, one core, "
          f"median of {args.repeat}")
    print("| case | ours build ms | pyFAI first call ms | ours ms/frame | pyFAI ms/frame | pyFAI / ours |")
    print("|---|---:|---:|---:|---:|---:|")
    for i, (label, _) in enumerate(configs):
        f = t_fai[i] if t_fai else None
        s = setups[i] if setups else None
        print(f"| {label} | {builds[i]:.0f} | {'n/a' if s is None else f'{s:.0f}'} | {t_ours[i]:.2f} | "
              f"{'n/a' if f is None else f'{f:.2f}'} | {'n/a' if f is None else f'{f / t_ours[i]:.2f}'} |")
    total_ours, total_fai = sum(t_ours), (sum(t_fai) if t_fai else None)
    print(f"| whole set (curve + 4 wedges + cake) | {sum(builds):.0f} | "
          f"{'n/a' if not setups else f'{sum(setups):.0f}'} | {total_ours:.2f} | "
          f"{'n/a' if total_fai is None else f'{total_fai:.2f}'} | "
          f"{'n/a' if total_fai is None else f'{total_fai / total_ours:.2f}'} |")
    if filled:
        mine = [float(op.areas.sum()) for op in ops]
        print("\npixels counted (ours / pyFAI): " + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(mine, filled, strict=True)))
    compact = ["compact" if op.compact(image.dtype) is not None else "CSC" for op in ops]
    print(f"\nour kernels: {', '.join(compact)}; frames/s for the set: ours "
          f"{1e3 / total_ours:.1f}, pyFAI {'n/a' if total_fai is None else f'{1e3 / total_fai:.1f}'}")


if __name__ == "__main__":
    main()
