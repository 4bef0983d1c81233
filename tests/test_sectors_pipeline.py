"""Sectors and cakes through the pipeline on a real LocalCluster: the sector entry is a
.chi of its own (suffix _cR1), the cake goes into the curve stack only, as (frame, chi,
q), with its stored sums; the stack's arrays carry their definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from saxs_pipeline.ops.sums import BinSums, curve_from_sums
from saxs_pipeline.pipeline.queue import ImageQueue
from saxs_pipeline.stack.layout import SUM_ARRAYS, SUM_FIELDS
from saxs_pipeline.stack.read import read_stack

pytestmark = pytest.mark.timeout(180)

GRID = {"MaskFile": "mask.npy", "Oversampling": 2, "RadialBins": 30, "RadialRange": [0.1, 3.0],
        "qStart": 0.1, "qStop": 3.0}


def test_sector_and_cake_entries(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup(3)
    cal = json.loads(setup.calibration.read_text())
    cal["Masks"] += [dict(GRID, Azimuth=[[330, 30], [150, 210]]),
                     dict(GRID, AzimuthBins=8, StoreSums=True)]
    setup.calibration.write_text(json.dumps(cal))
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data) as q:
        q.readdir()
        assert q.join(60)
    assert q.stats()["images processed"] == 3
    chi_files = sorted(p.name for p in q.outputs_dir.rglob("*.chi"))
    assert chi_files == sorted(f"frame_{i:05d}{s}.chi" for i in range(3) for s in ("", "_cR1"))
    engine = setup.integrator()
    stack = read_stack(q.zarr_path)
    names = [str(n).rsplit("/", 1)[-1] for n in stack["filename"]]
    cake = stack["curves"]["R2"]
    assert cake["I"].shape == (3, 8, 30)
    for i in range(3):
        row = names.index(setup.name(i))
        curves = engine.integrate(setup.image(i))
        np.testing.assert_allclose(stack["curves"]["R1"]["I"][row], curves[1].mean, rtol=2e-5,
                                   equal_nan=True)
        np.testing.assert_allclose(cake["I"][row].ravel(), curves[2].mean, rtol=2e-5, equal_nan=True)
        # The sums travel and are stored as float64: the engine's to the last bits.
        for name, field in zip(SUM_ARRAYS, SUM_FIELDS, strict=True):
            np.testing.assert_allclose(cake[name][row].ravel(), getattr(curves[2].sums, field),
                                       rtol=1e-12, atol=0)
        # Their mean is the curve (float32 weights for integer frames: 1e-7).
        sums = BinSums(*(cake[name][row].ravel() for name in SUM_ARRAYS))
        np.testing.assert_allclose(curve_from_sums(sums).mean, curves[2].mean, rtol=1e-6,
                                   equal_nan=True)
    attrs = zarr.open_group(q.zarr_path, mode="r")["R0"]["poisson"].attrs.asdict()
    assert attrs["definition"] == engine.definitions()["poisson"]
