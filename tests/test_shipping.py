"""Operators built once in the driver and shipped in the integrator plugin."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from saxs_pipeline.ops.shipping import SHIP_ENV, missing, operator_keys, pack, unpack
from saxs_pipeline.plugins.worker import IntegratorPlugin, load_payload, prepare


def _driver(saxs_setup, tmp_path: Path, monkeypatch):
    setup = saxs_setup(n_frames=1)
    monkeypatch.setenv("SAXS_PIPELINE_CACHE", str(tmp_path / "driver-cache"))
    prepared = prepare(setup.calibration)  # the driver's build, into its cache
    cal, atts = load_payload(setup.calibration)
    return setup, prepared, IntegratorPlugin(cal, atts, queue_id="q")


def test_a_worker_without_the_operator_gets_the_drivers(saxs_setup, tmp_path, monkeypatch) -> None:
    setup, prepared, plugin = _driver(saxs_setup, tmp_path, monkeypatch)
    keys = operator_keys(prepared.parsed, prepared.attachments)
    assert len(keys) == 1 and not missing(keys)  # the driver built it under this key
    shipped = pickle.loads(pickle.dumps(plugin))  # what the scheduler hands to workers
    assert set(shipped.operators) == set(keys)
    monkeypatch.setenv("SAXS_PIPELINE_CACHE", str(tmp_path / "worker-cache"))
    assert missing(keys) == keys
    size = len(shipped.operators[keys[0]])
    assert shipped._receive() == {"cached": 0, "shipped": 1, "built": 0, "bytes": size}
    assert (tmp_path / "worker-cache" / f"{keys[0]}.npz").stat().st_size == size
    assert shipped.operators == {}  # not kept after use
    got = shipped.build().integrate(setup.image(0))[0]
    want = setup.integrator().integrate(setup.image(0))[0]
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-6, equal_nan=True)
    # the cache is the fast path: a second plugin finds it there
    again = pickle.loads(pickle.dumps(plugin))
    assert again._receive() == {"cached": 1, "shipped": 0, "built": 0, "bytes": 0}


def test_shipping_switched_off_and_unwritable_caches(saxs_setup, tmp_path, monkeypatch) -> None:
    _, prepared, plugin = _driver(saxs_setup, tmp_path, monkeypatch)
    monkeypatch.setenv(SHIP_ENV, "0")
    assert pickle.loads(pickle.dumps(plugin)).operators == {}
    monkeypatch.delenv(SHIP_ENV)
    keys = operator_keys(prepared.parsed, prepared.attachments)
    assert pack(keys, limit=10) == {}  # too big to ship: every worker builds
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    assert unpack(pack(keys), blocked) == []  # cannot write: the worker builds instead
