"""Kernel plans: every layout the tuning may choose gives the same bits (sums, excluded
pixels, every output column, with NaN, negative and invalid pixels), today's bits on the
real frame, and the choice is measured once per operator, dtype and CPU and kept beside
the cached operator."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import threading
import time

import numpy as np
import pytest

from saxs_pipeline.config.calibration import Polarization, load_calibration
from saxs_pipeline.config.masks import load_mask
from saxs_pipeline.frames.tiff import read_image
from saxs_pipeline.ops import corrections as corr
from saxs_pipeline.ops import kernels, kernelvariants, tuning
from saxs_pipeline.ops.cache import evict, plans_file
from saxs_pipeline.ops.integrate import (
    integrate_batch,
    integrate_corrected,
    integrate_error,
    integrate_poisson,
)
from saxs_pipeline.ops.operator import build_operator, cached_operator
from saxs_pipeline.ops.tuning import CSC_PLAN, DEFAULT_PLAN, KernelPlan, choose

from enginecases import POL, SMALL, mask_config, small_valid
from realdata import require

PLANS = [KernelPlan("compact", 1), KernelPlan("compact", 4), KernelPlan("compact", 8),
         KernelPlan("vector", 1), KernelPlan("bins", 1), KernelPlan("bins", 4)]


def bits(a: np.ndarray) -> np.ndarray:
    """float64 as raw bits: NaN equals NaN, and -0.0 differs from 0.0."""
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


@pytest.fixture
def forced(monkeypatch):
    """``forced(op, plan)``: ``op`` takes ``plan`` for every dtype and error model, as if
    measured so on this CPU."""
    def force(op, plan: KernelPlan) -> None:
        monkeypatch.setattr(tuning, "plan_for", lambda op, dtype, variance: plan)
        op.plans.clear()

    return force


def spoiled(rng: np.random.Generator, shape: tuple[int, int], dtype, n: int) -> list[np.ndarray]:
    """Poisson frames with ~3 % of their pixels excluded: NaN and +-inf in float frames,
    negative in signed ones, the dtype's maximum (an EIGER's invalid value) in unsigned
    ones."""
    dtype = np.dtype(dtype)
    out = []
    for _ in range(n):
        f = rng.poisson(200, shape).astype(dtype)
        spots = rng.random(shape)
        if dtype.kind == "f":
            f[spots < 0.015] = np.nan
            f[(spots >= 0.015) & (spots < 0.017)] = np.inf
            f[(spots >= 0.017) & (spots < 0.018)] = -np.inf
        if dtype.kind == "u":
            f[spots > 0.985] = np.iinfo(dtype).max
        else:
            f[spots > 0.985] = -2
        out.append(f)
    return out


def columns(op, frames, invalid, cor=None) -> list[np.ndarray]:
    """Every output column of every path: batched, one frame, all three columns, both
    error models (and the corrected definition with ``cor``)."""
    out = []
    for model in ("saxsdog", "poisson"):
        out += integrate_batch(op, frames, invalid=invalid, error_model=model, corrections=cor)
        for f in frames[:2]:
            out += integrate_poisson(op, f, invalid=invalid, error_model=model)
            r = integrate_error(op, f, invalid=invalid, error_model=model)
            out += [r.mean, r.poisson, r.std, r.sem, r.area]
    return out


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.float64])
def test_every_plan_gives_the_same_bits(dtype, forced, monkeypatch) -> None:
    op = build_operator(SMALL, mask_config(pixel_splitting="linear"), small_valid(), POL)
    frames = spoiled(np.random.default_rng(3), SMALL.image_shape, dtype, 11)
    invalid = float(np.iinfo(dtype).max) if np.dtype(dtype).kind == "u" else None
    used = []

    def spy(kernel, name):
        def call(*args):
            used.append(f"{name} {len(args[0])}" if name == "pass1_batch" else name)
            return kernel(*args)
        return call

    for module, name in ((kernels, "pass1"), (kernelvariants, "pass1_vector"),
                         (kernelvariants, "pass1_bins"), (kernels, "pass1_batch")):
        monkeypatch.setattr(module, name, spy(getattr(module, name), name))
    results = {}
    for plan in PLANS:
        forced(op, plan)  # as measured on some CPU
        used.clear()
        results[plan] = columns(op, frames, invalid)
        single = {"compact": "pass1", "vector": "pass1_vector", "bins": "pass1_bins"}[plan.single]
        assert set(used) == {single} | ({f"pass1_batch {plan.batch}"} if plan.batch > 1 else set())
    reference = results[PLANS[0]]
    assert np.isnan(reference[0]).sum() < reference[0].size  # frames with data, and ...
    for plan, out in results.items():
        for i, (a, b) in enumerate(zip(reference, out, strict=True)):
            assert np.array_equal(bits(a), bits(b)), f"{plan}: output {i} differs"


def test_every_plan_gives_the_same_bits_with_corrections(forced) -> None:
    valid = small_valid()
    op = build_operator(SMALL, mask_config(pixel_splitting="linear"), valid)
    rng = np.random.default_rng(8)
    pixels = corr.pixel_corrections(SMALL, polarization=POL, solid_angle=True,
                                    dark=rng.uniform(1, 5, SMALL.image_shape), dark_exposures=4)
    cor = corr.corrections_for(op, pixels)
    frames = spoiled(rng, SMALL.image_shape, np.float32, 5)
    results = {}
    for plan in PLANS:
        forced(op, plan)
        out = columns(op, frames, None, cor)
        r = integrate_corrected(op, frames[0], cor, with_std=True)
        results[plan] = out + [r.mean, r.poisson, r.std, r.sem]
    for plan, out in results.items():
        for a, b in zip(results[PLANS[0]], out, strict=True):
            assert np.array_equal(bits(a), bits(b)), plan


@pytest.mark.parametrize("dtype", [np.int32, np.float64])
def test_kernels_give_the_same_sums_and_excluded_pixels(dtype) -> None:
    # The kernels themselves: s1, s2 and the excluded pixels of the compact, bin-major
    # and batched kernels (each frame of a group as alone).
    op = build_operator(SMALL, mask_config(pixel_splitting="linear"), small_valid(), POL)
    frames = [f.ravel() for f in spoiled(np.random.default_rng(5), SMALL.image_shape, dtype, 4)]
    compact, bins = op.compact(frames[0].dtype), op.bins(frames[0].dtype)
    nb, limits = op.nbins, (0.0, np.nan)
    pairs = np.empty((compact.start.size * 4, 2), np.int64)
    b1, b2 = np.empty((4, nb)), np.empty((4, nb))
    ro = tuple(f.view() for f in frames)
    for f in ro:
        f.flags.writeable = False
    nbatch = kernels.pass1_batch(ro, 4, compact.segments, compact.start, compact.weights, b1, b2,
                                 pairs, *limits)
    for i, x in enumerate(frames):
        sums = []
        fields = (compact.segments, compact.start, compact.weights)
        for kernel, layout, size in (
                (kernels.pass1, fields, compact.start.size),
                (kernelvariants.pass1_vector, fields, compact.start.size),
                (kernelvariants.pass1_bins, (bins.steps, bins.pixels, bins.weights),
                 bins.pixels.size)):
            for variance in (False, True):
                s1, s2 = np.empty(nb), np.empty(nb) if variance else None
                bad = np.empty(size, np.int64)
                n = kernel(x, *layout, s1, s2, bad, *limits)
                sums.append((s1, s2, np.unique(bad[:n])))
        c1, c2, cbad = sums[1]
        assert cbad.size > 10  # excluded pixels among the used ones
        np.testing.assert_array_equal(cbad, pairs[:nbatch][pairs[:nbatch, 0] == i, 1])
        for k, (g1, g2, gbad) in enumerate(sums):
            np.testing.assert_array_equal(cbad, gbad)
            assert np.array_equal(bits(c1), bits(g1)), k
            if g2 is not None:
                assert np.array_equal(bits(c2), bits(g2)), k
        assert np.array_equal(bits(c1), bits(b1[i])) and np.array_equal(bits(c2), bits(b2[i]))


@pytest.fixture(scope="module")
def real_operator():
    cal = load_calibration(require("cal_flat.json"))
    valid = load_mask(cal, cal.masks[0])
    mc = dataclasses.replace(cal.masks[0], oversampling=3)
    return build_operator(cal.geometry, mc, valid, Polarization(0.995, 0.0))


def test_every_plan_gives_todays_bits_on_the_real_frame(real_operator, forced) -> None:
    # The sums of the kernels before the layouts could be chosen, on the real frame and
    # on it with 10000 NaN and 10000 negative pixels: a digest of their float64 bits.
    op = real_operator
    image = read_image(require("buf1_00000.tif"))
    rng = np.random.default_rng(7)
    spoilt = image.astype(np.float64)
    idx = rng.choice(spoilt.size, 20000, replace=False)
    spoilt.flat[idx[:10000]] = np.nan
    spoilt.flat[idx[10000:]] = -3.0
    as_int = np.where(np.isnan(spoilt), -1, spoilt).astype(np.int32)
    for plan in PLANS:
        forced(op, plan)
        r = integrate_error(op, image, error_model="saxsdog")
        arrays = [*integrate_poisson(op, image, error_model="poisson"), r.mean, r.poisson, r.std,
                  r.sem, *integrate_poisson(op, spoilt, error_model="poisson"),
                  *integrate_poisson(op, as_int, error_model="poisson")]
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        assert h.hexdigest()[:32] == "73cc1e4aebc33a747078b2f09fc21382", plan
        means, _ = integrate_batch(op, [image, as_int, image], error_model="poisson")
        assert np.array_equal(bits(means[1]), bits(arrays[-2]))


def test_choice_takes_the_least_time_per_frame() -> None:
    ms = {"compact": 1.0, "vector": 1.01, "bins": 0.99, "batch 4": 0.9, "batch 8": 0.95}
    assert choose(ms) == KernelPlan("compact", 4)  # bins within the margin: no more memory
    assert choose(ms | {"bins": 0.8}) == KernelPlan("bins", 1)
    assert choose(ms | {"vector": 0.8}) == KernelPlan("vector", 1)
    assert choose(ms | {"batch 4": 1.2, "batch 8": 1.1}) == KernelPlan("compact", 1)


@pytest.fixture
def measured(monkeypatch):
    """The SMALL operator measured as if it were large; how often measure ran."""
    monkeypatch.setattr(tuning, "MIN_PIXELS", 0)
    calls = []
    real = tuning.measure

    def counting(op, dtype, variance):
        calls.append(tuning._name(np.dtype(dtype), variance))
        plan, _ = real(op, dtype, variance)
        return plan, True  # settled, whatever the load of the machine running the tests

    monkeypatch.setattr(tuning, "measure", counting)
    return calls


I4, I4V, F8 = "<i4 mean", "<i4 mean+variance", "<f8 mean"


def test_plan_is_measured_once_per_cpu_and_kept_beside_the_operator(tmp_path, measured,
                                                                      monkeypatch) -> None:
    def load():
        return cached_operator(SMALL, mask_config(), small_valid(), POL, cache_dir=tmp_path)

    op = load()
    plan = tuning.plan(op, np.int32, False)
    assert tuning.plan(op, np.int32, False) is plan and measured == [I4]
    assert set(plan.ms) == {"compact", "vector", "bins", "batch 4", "batch 8"}
    saved = json.loads(plans_file(op.cache_file).read_text())
    entry = saved[tuning.cpu_id()][I4]
    assert (entry["single"], entry["batch"], entry["ms"]) == (plan.single, plan.batch, plan.ms)

    again = tuning.plan(load(), np.int32, False)  # another process: read, not measured
    assert (again, again.ms) == (plan, plan.ms) and measured == [I4]
    tuning.plan(load(), np.int32, True)  # with the variance sum, another dtype: measured, kept
    tuning.plan(load(), np.float64, False)
    assert measured == [I4, I4V, F8]

    here = tuning.cpu_id()
    monkeypatch.setattr(tuning, "cpu_id", lambda: "another CPU; L2 512K")
    tuning.plan(load(), np.int32, False)  # a cache shared with (copied to) another kind of CPU
    assert measured == [I4, I4V, F8, I4]
    saved = json.loads(plans_file(op.cache_file).read_text())
    assert set(saved) == {here, "another CPU; L2 512K"}
    assert set(saved[here]) == {I4, I4V, F8} and set(saved["another CPU; L2 512K"]) == {I4}


def test_workers_starting_together_measure_one_after_the_other(tmp_path, measured,
                                                               monkeypatch) -> None:
    # Another process holds the operator's file while it measures; ours waits for it and
    # then takes its plan instead of measuring beside it.
    op = cached_operator(SMALL, mask_config(), small_valid(), POL, cache_dir=tmp_path)
    waiting = threading.Event()

    class Flock:
        LOCK_EX = fcntl.LOCK_EX

        @staticmethod
        def flock(fd, how):
            waiting.set()
            fcntl.flock(fd, how)

    monkeypatch.setattr(tuning, "fcntl", Flock)
    other = os.open(op.cache_file, os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_EX)
    got = []
    ours = threading.Thread(target=lambda: got.append(tuning.plan(op, np.int32, True)))
    ours.start()
    try:
        assert waiting.wait(30)
        time.sleep(0.2)  # not needed to pass: lets a plan_for without the lock measure first
        plans_file(op.cache_file).write_text(json.dumps(
            {tuning.cpu_id(): {I4V: {"single": "vector", "batch": 4, "ms": None}}}))
    finally:
        os.close(other)
        ours.join(30)
    assert got == [KernelPlan("vector", 4)] and measured == []


def test_a_measurement_that_did_not_settle_is_not_kept(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tuning, "MIN_PIXELS", 0)
    monkeypatch.setattr(tuning, "measure",
                        lambda op, dtype, variance: (KernelPlan("vector", 4, {}), False))
    op = cached_operator(SMALL, mask_config(), small_valid(), POL, cache_dir=tmp_path)
    assert tuning.plan(op, np.int32, True) == KernelPlan("vector", 4)  # used by this process ...
    assert not plans_file(op.cache_file).exists()  # ... and measured again by the next


def test_a_plans_file_that_does_not_parse_is_measured_again(tmp_path, measured, caplog) -> None:
    op = cached_operator(SMALL, mask_config(), small_valid(), POL, cache_dir=tmp_path)
    plans_file(op.cache_file).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="saxs_pipeline.ops.tuning"):
        tuning.plan(op, np.int32, True)
    assert measured == [I4V] and "unreadable" in caplog.text
    assert I4V in json.loads(plans_file(op.cache_file).read_text())[tuning.cpu_id()]


def test_an_unchosen_bin_layout_is_not_kept(measured) -> None:
    op = build_operator(SMALL, mask_config(), small_valid(), POL)
    plan = tuning.plan(op, np.int32, True)
    assert op.cache_file is None and measured == [I4V]  # not cached: measured, not saved
    assert bool(op._bins) == (plan.single == "bins")


def test_small_and_csc_operators_are_not_measured(monkeypatch) -> None:
    monkeypatch.setattr(tuning, "measure", lambda op, dtype: pytest.fail("measured"))
    op = build_operator(SMALL, mask_config(), small_valid(), POL)
    assert tuning.plan(op, np.int32, True) == DEFAULT_PLAN  # 2600 pixels: microseconds each
    op._compact["f8"] = None  # as an operator the compact layout cannot hold
    assert tuning.plan(op, np.float64, False) == CSC_PLAN


def test_evicted_operators_take_their_plans_along(tmp_path) -> None:
    op = cached_operator(SMALL, mask_config(), small_valid(), POL, cache_dir=tmp_path)
    plans_file(op.cache_file).write_text("{}")
    assert evict(tmp_path, limit=0) == [op.cache_file]
    assert list(tmp_path.iterdir()) == []
