"""Variants of :func:`saxs_pipeline.ops.kernels.pass1` that give its bits by other memory
access patterns; :mod:`saxs_pipeline.ops.tuning` measures which is fastest on a CPU.

Every variant adds, into each (bin, lane) sum, the same float64 products (``w x`` and
``w (w x)``, rounded alone: no fused multiply-add) in the same order (used pixels in image
order, pixel ``j`` in lane ``j % LANES``) and sums the lanes as ``pass1`` does, so the
result does not depend on the choice:

* ``pass1_vector``: the compact layout, but the lanes' sums kept as ``[lane][bin][s1, s2]``
  so that a pixel's whole run (its ``K`` bins' two sums) is one vector add in memory
  instead of ``2 K`` scalar ones (``pass1`` keeps ``[bin][lane]``). Where the next pixel
  of a lane starts one bin further its load overlaps the previous store in part, which
  some CPUs do not forward;
* ``pass1_bins``: bin by bin, gathering the pixels of a
  :class:`~saxs_pipeline.ops.binlayout.BinLayout`, like a CSR product, with the lanes'
  sums in registers instead of memory.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from saxs_pipeline.ops.kernels import _U, FMAX, LANES, _excluded, _jit

__all__ = ["pass1_bins", "pass1_vector"]


@intrinsic
def _add_run(typingctx, acc, at, weights, j, fv, s2):  # pragma: no cover - compiled
    """``acc[at : at + n] += (w_0 fv, w_0 (w_0 fv), w_1 fv, ...)`` as one vector add, with
    ``w_t = weights[t][j]`` (float64); without the squares where ``s2`` is None. numba
    does not vectorise this read-modify-write of neighbouring elements by itself; the
    products are taken as vectors too (elementwise, each rounded as the scalar ones)."""
    squares = not isinstance(s2, types.NoneType)
    width = weights.count
    sig = types.void(acc, at, weights, j, fv, s2)

    def codegen(context, builder, signature, args):
        acc_v, at_v, weights_v, j_v, fv_v, _ = args
        f64, i32 = ir.DoubleType(), ir.IntType(32)
        loads = []
        for t in range(width):
            arr = context.make_array(signature.args[2].dtype)(
                context, builder, builder.extract_value(weights_v, t))
            loads.append(builder.load(builder.gep(arr.data, [j_v])))
        run_t = ir.VectorType(f64, width)
        w = ir.Constant(ir.VectorType(loads[0].type, width), ir.Undefined)
        fvs = ir.Constant(run_t, ir.Undefined)
        for t, value in enumerate(loads):
            w = builder.insert_element(w, value, ir.Constant(i32, t))
            fvs = builder.insert_element(fvs, fv_v, ir.Constant(i32, t))
        if loads[0].type != f64:
            w = builder.fpext(w, run_t)
        wx = builder.fmul(w, fvs)
        if squares:  # interleaved: (w_0 fv, w_0 (w_0 fv), w_1 fv, ...)
            order = [k for t in range(width) for k in (t, width + t)]
            add = builder.shuffle_vector(wx, builder.fmul(w, wx),
                                         ir.Constant(ir.VectorType(i32, 2 * width), order))
        else:
            add = wx
        data = context.make_array(signature.args[0])(context, builder, acc_v).data
        where = builder.bitcast(builder.gep(data, [at_v]), add.type.as_pointer())
        builder.store(builder.fadd(builder.load(where, align=8), add), where, align=8)
        return context.get_dummy_value()

    return sig, codegen


@_jit
def pass1_vector(x, segments, start, weights, s1, s2, bad, lower, invalid):
    """:func:`~saxs_pipeline.ops.kernels.pass1` with one vector add per pixel (same
    arguments, same result)."""
    nbins = s1.size
    width = len(weights)
    per_bin = 1 if s2 is None else 2
    stride = _U((nbins + width) * per_bin)
    acc = np.zeros(LANES * (nbins + width) * per_bin)
    j = _U(0)
    nbad = 0
    for s in range(segments.shape[0]):
        first = _U(segments[s, 0])
        for i in range(_U(segments[s, 1])):
            p = first + i
            v = x[p]
            if _excluded(v, lower, invalid):
                bad[nbad] = p
                nbad += 1
            else:
                at = (j & _U(LANES - 1)) * stride + _U(start[j]) * _U(per_bin)
                _add_run(acc, at, weights, j, np.float64(v), s2)
            j += _U(1)
    for q in range(nbins):
        a1 = 0.0
        a2 = 0.0
        for lane in range(LANES):  # as kernels._reduce_lanes
            at = _U(lane) * stride + _U(q * per_bin)
            a1 += acc[at]
            if s2 is not None:
                a2 += acc[at + _U(1)]
        s1[q] = a1
        if s2 is not None:
            s2[q] = a2
    return nbad


@_jit
def pass1_bins(x, steps, pixels, weights, s1, s2, bad, lower, invalid):
    """:func:`pass1`'s sums from a :class:`~saxs_pipeline.ops.binlayout.BinLayout`: bin
    ``k``'s entries ``4 steps[k] .. 4 steps[k + 1]`` hold in turn one pixel of each lane
    (zero-weight padding where a lane has fewer). Excluded pixels are skipped and their
    flat indices written to ``bad`` once per entry (a pixel in two bins twice; the caller
    drops the repeats)."""
    nbad = 0
    for q in range(s1.size):
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        b0 = 0.0
        b1 = 0.0
        b2 = 0.0
        b3 = 0.0
        for step in range(_U(steps[q]), _U(steps[q + 1])):
            e = _U(LANES) * step
            p0 = _U(pixels[e])
            p1 = _U(pixels[e + _U(1)])
            p2 = _U(pixels[e + _U(2)])
            p3 = _U(pixels[e + _U(3)])
            v0 = np.float64(x[p0])
            v1 = np.float64(x[p1])
            v2 = np.float64(x[p2])
            v3 = np.float64(x[p3])
            # _excluded without branches, as in pass1_batch; an excluded value adds 0
            if not ((v0 >= lower) & (v0 <= FMAX) & (v0 != invalid)
                    & (v1 >= lower) & (v1 <= FMAX) & (v1 != invalid)
                    & (v2 >= lower) & (v2 <= FMAX) & (v2 != invalid)
                    & (v3 >= lower) & (v3 <= FMAX) & (v3 != invalid)):
                if _excluded(v0, lower, invalid):
                    v0 = 0.0
                    bad[nbad] = p0
                    nbad += 1
                if _excluded(v1, lower, invalid):
                    v1 = 0.0
                    bad[nbad] = p1
                    nbad += 1
                if _excluded(v2, lower, invalid):
                    v2 = 0.0
                    bad[nbad] = p2
                    nbad += 1
                if _excluded(v3, lower, invalid):
                    v3 = 0.0
                    bad[nbad] = p3
                    nbad += 1
            w0 = np.float64(weights[e])
            w1 = np.float64(weights[e + _U(1)])
            w2 = np.float64(weights[e + _U(2)])
            w3 = np.float64(weights[e + _U(3)])
            x0 = w0 * v0
            x1 = w1 * v1
            x2 = w2 * v2
            x3 = w3 * v3
            a0 += x0
            a1 += x1
            a2 += x2
            a3 += x3
            if s2 is not None:
                b0 += w0 * x0
                b1 += w1 * x1
                b2 += w2 * x2
                b3 += w3 * x3
        # as _reduce_lanes: 0 + lane 0 + lane 1 + ...
        s1[q] = (((0.0 + a0) + a1) + a2) + a3
        if s2 is not None:
            s2[q] = (((0.0 + b0) + b1) + b2) + b3
    return nbad
