"""The reduction chain through the pipeline on a real LocalCluster: dark and flat read in
the driver and shipped to the workers, solid angle, a per-frame monitor from the frame
header and exposure times from a beamline table, an absolute scale; a frame whose monitor
is missing fails with the key, file and frame named, never normalised by 1."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saxs_pipeline.config.normalisation import NormalisationResolver
from saxs_pipeline.frames.tiff import write_pilatus_tiff
from saxs_pipeline.integrator import Integrator
from saxs_pipeline.pipeline.queue import ImageQueue
from saxs_pipeline.stack.read import read_stack

pytestmark = pytest.mark.timeout(180)


def test_corrected_and_normalised_frames(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup()
    rng = np.random.default_rng(3)
    write_pilatus_tiff(setup.root / "dark.tif", rng.poisson(2, setup.shape).astype(np.int32))
    np.save(setup.root / "flat.npy", rng.uniform(0.9, 1.1, setup.shape))
    (setup.root / "times.csv").write_text(
        "filename,exposure\n" + "".join(f"frame_{i:05d}.tif,{0.5 + i / 10}\n" for i in range(6)))
    cal = json.loads(setup.calibration.read_text())
    cal.update({"Dark": "dark.tif", "Flat": "flat.npy", "SolidAngle": True,
                "Normalisation": {"Monitor": {"Header": "Flux"},
                                  "ExposureTime": {"Table": "times.csv", "Column": "exposure"},
                                  "AbsoluteScale": 2.5}})
    path = setup.root / "corrected.json"
    path.write_text(json.dumps(cal))
    for i in range(6):
        header = {"Exposure_time": 1.0} if i == 4 else {"Flux": 1000.0 + 100 * i}  # 4: none
        write_pilatus_tiff(setup.data / setup.name(i), setup.image(i), header,
                           date=setup.date(i))
    with ImageQueue(saxs_local_cluster, path, setup.data) as q:
        q.readdir()
        assert q.join(60)
    stats = q.stats()
    assert stats["images processed"] == 5 and stats["failed"] == 1
    (failure,) = q.failures()
    assert failure["file"].endswith(setup.name(4)) and "Flux" in failure["error"]
    engine = Integrator(path)
    resolver = NormalisationResolver.from_calibration(engine.calibration)
    stack = read_stack(q.zarr_path)
    rows = {str(n): r for r, n in enumerate(stack["filename"])}
    for i in (0, 1, 2, 3, 5):
        scale = resolver.resolve(setup.data / setup.name(i)).multiplier
        assert scale == pytest.approx(2.5 / ((1000 + 100 * i) * (0.5 + i / 10)))
        expected = engine.integrate(setup.image(i), scale)[0]
        # float32 stack against the float64 engine
        np.testing.assert_allclose(stack["curves"]["R0"]["I"][rows[setup.name(i)]],
                                   expected.mean, rtol=2e-5, equal_nan=True)
        np.testing.assert_allclose(stack["curves"]["R0"]["poisson"][rows[setup.name(i)]],
                                   expected.poisson, rtol=2e-5, equal_nan=True)
