"""The worker side: the per-batch task, the integrator plugin, SaxsWorker, the CLI."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import dask
import numpy as np
import pytest
from distributed.utils_test import gen_cluster

from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.curves.chi import read_chi
from saxs_pipeline.pipeline.task import process_frames
from saxs_pipeline.pipeline.tasktypes import FrameTask, TaskOptions
from saxs_pipeline.plugins.worker import IntegratorPlugin, SaxsWorker, get_integrator, load_payload

BIN = Path(sys.executable).parent


def tasks(paths, out: Path) -> list[FrameTask]:
    return [FrameTask(str(p), str(out / Path(p).stem)) for p in paths]


def test_batch_results_files_and_values(saxs_setup) -> None:
    setup = saxs_setup(n_frames=5)
    integ = setup.integrator()
    work = setup.root / "exp" / "work"
    results = process_frames("q", tasks(setup.frames, work), TaskOptions(), integrator=integ)
    assert [r.status for r in results] == ["ok"] * 5
    for i, r in enumerate(results):
        expected = integ.integrate(setup.image(i))
        assert r.chi == [str(work / f"frame_{i:05d}.chi")]
        st = setup.frames[i].stat()
        assert r.fingerprint == (st.st_size, st.st_mtime_ns)
        assert r.image_time == setup.date(i).timestamp()
        assert r.curves[0].key == "R0" and r.curves[0].mean.dtype == np.float32
        np.testing.assert_allclose(r.curves[0].mean, expected[0].mean, rtol=1e-5, equal_nan=True)
        assert r.curves[0].integparams["I0"] == pytest.approx(expected[0].integparams["I0"], rel=1e-6)
        chi = read_chi(r.chi[0])
        np.testing.assert_allclose(chi.intensity, expected[0].mean, rtol=1e-5, equal_nan=True)


def test_grouped_frames_write_the_same_bytes_as_frames_alone(saxs_setup) -> None:
    # one-frame files are gathered into kernel groups: a frame's .chi must not depend on
    # which frames shared its task (a task re-run after a lost worker groups differently)
    setup = saxs_setup(n_frames=5)
    integ = setup.integrator()
    together = process_frames("q", tasks(setup.frames, setup.root / "a"), TaskOptions(),
                              integrator=integ)
    alone = [process_frames("q", tasks([p], setup.root / "b"), TaskOptions(), integrator=integ)[0]
             for p in setup.frames]
    for t, a in zip(together, alone, strict=True):
        assert Path(t.chi[0]).read_bytes() == Path(a.chi[0]).read_bytes()


def test_bad_frames_are_reported_not_raised(saxs_setup) -> None:
    setup = saxs_setup(n_frames=2)
    whole = setup.frames[1].read_bytes()
    truncated = setup.data / "truncated.tif"
    truncated.write_bytes(whole[: len(whole) // 2])
    garbage = setup.data / "garbage.tif"
    garbage.write_bytes(b"not a tiff at all")
    wrong = setup.data / "wrong_shape.tif"
    from saxs_pipeline.frames.tiff import write_pilatus_tiff

    write_pilatus_tiff(wrong, np.zeros((10, 10), np.int32))
    paths = [setup.frames[0], truncated, garbage, setup.data / "gone.tif", wrong, setup.frames[1]]
    results = process_frames("q", tasks(paths, setup.root / "w"), TaskOptions(),
                             integrator=setup.integrator(with_std=False))
    assert [r.status for r in results] == ["ok", "incomplete", "error", "error", "error", "ok"]
    assert "incomplete" in results[1].error and "Imagesize" in results[4].error


def test_kept_chi_files_no_chi_and_pictures(saxs_setup) -> None:
    setup = saxs_setup(n_frames=2)
    integ = setup.integrator(with_std=True)
    out = setup.root / "out.d"
    opts = TaskOptions(write_svg=True, write_png=True)
    first = process_frames("q", tasks(setup.frames, out), opts, integrator=integ)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["frame_00000.chi", "frame_00000.png", "frame_00000.svg",
                     "frame_00001.chi", "frame_00001.png", "frame_00001.svg"]
    mtime = os.stat(first[0].chi[0]).st_mtime_ns
    # OverwriteFiles false: existing .chi files stay, the curves still come back
    keep = TaskOptions(keep_existing_chi=True)
    again = process_frames("q", tasks(setup.frames, out), keep, integrator=integ)
    assert [r.status for r in again] == ["ok", "ok"] and again[0].curves is not None
    assert os.stat(first[0].chi[0]).st_mtime_ns == mtime
    none = process_frames("q", tasks(setup.frames, setup.root / "none"),
                          TaskOptions(write_chi=False), integrator=integ)
    assert [r.chi for r in none] == [[], []] and not (setup.root / "none").exists()


def test_payload_carries_mask_bytes_not_paths(saxs_setup) -> None:
    setup = saxs_setup()
    cal, atts = load_payload(setup.calibration)
    assert cal["Masks"][0]["MaskFile"] == "mask.npy" and len(atts) == 1
    assert atts[0]["data"].encode("latin-1") == (setup.root / "mask.npy").read_bytes()
    plugin = IntegratorPlugin(cal, atts, queue_id="q")
    plugin.integrators["q"] = object()
    clone = pickle.loads(pickle.dumps(plugin))
    assert clone.integrators == {} and clone.calibration == cal and clone.name == "saxs-integrator"
    with pytest.raises(CalibrationError, match=r"\$\.Wavelength|Wavelength"):
        load_payload({k: v for k, v in cal.items() if k != "Wavelength"}, atts)


def test_prepare_warns_once_of_an_empty_integral_window(saxs_setup, caplog) -> None:
    from saxs_pipeline.plugins.worker import prepare

    # cal_flat.json's qStart = qStop = 0: I0/I1/I2 all 0 (the converter warns the same)
    setup = saxs_setup(Masks=[{"MaskFile": "mask.npy", "Oversampling": 2, "qStart": 0.5,
                               "qStop": 0.5}])
    with caplog.at_level("WARNING", logger="saxs_pipeline.plugins.worker"):
        prepare(setup.calibration)
    warned = [r.getMessage() for r in caplog.records if "I0/I1/I2" in r.getMessage()]
    assert warned == ["calibration $.Masks[0]: qStart = qStop = 0.5, an empty I0/I1/I2 window: "
                      "they will all be 0 (set qStart and qStop to the q range to monitor)"]


def _payload(tmp: Path):
    valid = np.ones((64, 48), bool)
    np.save(tmp / "mask.npy", ~valid)
    cal = {"Geometry": {"Tilt": {"TiltRotDeg": 0.0, "TiltAngleDeg": 0.0}, "BeamCenter": [30.0, 20.0],
                        "DedectorDistanceMM": 100.0, "PixelSizeMicroM": [172.0],
                        "Imagesize": [64, 48]},
           "Wavelength": 1.54, "Masks": [{"MaskFile": "mask.npy", "Oversampling": 1}]}
    (tmp / "cal.json").write_text(json.dumps(cal))
    return load_payload(tmp / "cal.json")


def nbins_on_worker(queue_id: str) -> int:
    return int(get_integrator(queue_id).operators[0].nbins)


@gen_cluster(client=True)
async def test_plugin_setup_replace_unregister(c, s, a, b) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cal, atts = _payload(Path(tmp))
        plugin = IntegratorPlugin(cal, atts, queue_id="q1", cache_dir=tmp, name="saxs-integrator-q1")
        await c.register_plugin(plugin)
        first = a.plugins["saxs-integrator-q1"]
        assert "q1" in first.integrators and "q1" in b.plugins["saxs-integrator-q1"].integrators
        assert await c.submit(nbins_on_worker, "q1", workers=[a.address]) > 5
        # the same name again: teardown of the old one, setup of the new one
        await c.register_plugin(IntegratorPlugin(cal, atts, queue_id="q1", cache_dir=tmp,
                                                 name="saxs-integrator-q1"))
        assert a.plugins["saxs-integrator-q1"] is not first and first.integrators == {}
        await c.unregister_worker_plugin("saxs-integrator-q1")
        with dask.config.set({"saxs.plugin-wait": 0.5}), pytest.raises(LookupError, match="q1"):
            await c.submit(nbins_on_worker, "q1", pure=False)


@gen_cluster(client=True, nthreads=[])
async def test_saxs_worker_builds_at_start_and_fails_fast(c, s) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _payload(Path(tmp))
        with dask.config.set({"saxs.calibration": str(Path(tmp) / "cal.json"),
                              "distributed.worker.daemon": False}):
            async with SaxsWorker(s.address, nthreads=1) as w:
                assert "default" in w.plugins["saxs-integrator"].integrators
        bad = Path(tmp) / "bad.json"
        bad.write_text(json.dumps({"Geometry": {}, "Wavelength": 1.54, "Masks": []}))
        with dask.config.set({"saxs.calibration": str(bad)}):
            with pytest.raises(CalibrationError, match="bad.json"):
                SaxsWorker(s.address, nthreads=1)
    # without a calibration it is a plain worker
    async with SaxsWorker(s.address, nthreads=1) as w:
        assert not any(isinstance(p, IntegratorPlugin) for p in w.plugins.values())


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def test_worker_command_entry_points(tmp_path: Path) -> None:
    r = run([sys.executable, "-m", "saxs_pipeline.plugins.worker", "--help"])
    assert r.returncode == 0 and "--calibration" in r.stdout and "dask worker" in r.stdout
    r = run([str(BIN / "dask"), "--help"])
    assert r.returncode == 0 and "saxs-worker" in r.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Geometry": {"BeamCenter": [1, 2]}, "Wavelength": 1.54,
                               "Masks": [{"MaskFile": "m.msk"}]}))
    r = run([str(BIN / "saxs-worker"), "--calibration", str(bad), "--scheduler-file",
             str(tmp_path / "none.json")])
    assert r.returncode == 2 and "bad.json" in r.stderr and "$.Geometry" in r.stderr
