"""Shared fixtures. The ``saxs_*`` ones serve the pipeline tests (queue, worker, cli)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from procs import default_signals


def pytest_configure(config: pytest.Config) -> None:
    default_signals()  # before any test starts a process or a thread
    config.addinivalue_line(
        "markers", "scale: large-input pipeline test (20,000 frames); runs by default, "
        "deselect with -m 'not scale'")


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """What a test sets in ``os.environ`` (or code it runs in-process: the server's
    ``main`` quiets Dask's logging there for its workers) must not reach the processes
    later tests start: a scheduler logging at WARNING never says "Scheduler at"."""
    saved = dict(os.environ)
    yield
    # by difference, never an empty environment: threads of wider-scoped fixtures
    # (a nanny restarting a worker) may start processes meanwhile
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@pytest.fixture(scope="module")
def inprocess_client(saxs_operator_cache: Path) -> Iterator[Any]:
    """A real LocalCluster with one in-process worker thread and its dashboard on a free
    loopback port: the scheduler, its HTTP server and its log are in this process, and
    the test stays light on a shared 2-core machine."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                     host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="session")
def saxs_operator_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private operator cache for the whole session, exported through the environment so
    worker processes started by the tests use it too."""
    path = tmp_path_factory.mktemp("operator-cache")
    old = os.environ.get("SAXS_PIPELINE_CACHE")
    os.environ["SAXS_PIPELINE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SAXS_PIPELINE_CACHE", None)
    else:
        os.environ["SAXS_PIPELINE_CACHE"] = old


@dataclass
class SaxsSetup:
    """A small generated beamtime: calibration (with a .npy mask) and frames whose
    content is a deterministic function of their index."""

    root: Path
    calibration: Path
    data: Path
    shape: tuple[int, int]
    frames: list[Path] = field(default_factory=list)

    def image(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([7, i])
        img = rng.poisson(20 + (i % 50), self.shape).astype(np.int32)
        img[0, :3] = -1  # a few gap pixels, as a Pilatus writes them
        return img

    def date(self, i: int) -> datetime:
        return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i)

    def name(self, i: int) -> str:
        return f"frame_{i:05d}.tif"

    def frame_bytes(self, i: int) -> bytes:
        from saxs_pipeline.frames.tiff import write_pilatus_tiff

        tmp = self.root / f".bytes_{i}_{os.getpid()}.tmp"
        write_pilatus_tiff(tmp, self.image(i), {"Exposure_time": 1.0, "Exposure_time_unit": "s"},
                           date=self.date(i))
        data = tmp.read_bytes()
        tmp.unlink()
        return data

    def write(self, i: int, directory: Path | None = None) -> Path:
        path = (directory or self.data) / self.name(i)
        path.write_bytes(self.frame_bytes(i))
        return path

    def integrator(self, **kw):
        from saxs_pipeline.integrator import Integrator

        return Integrator(self.calibration, **kw)

    def check_stack(self, zarr_path: Path, indices, *, chi_dir: Path | None = None) -> dict:
        """Every frame in ``indices`` has exactly one row in the curve stack equal to the
        engine's integration of that frame (and so has its .chi file in ``chi_dir``)."""
        from saxs_pipeline.curves.chi import read_chi
        from saxs_pipeline.stack.read import read_stack

        stack = read_stack(zarr_path)
        names = [os.path.basename(str(n)) for n in stack["filename"]]
        indices = list(indices)
        assert stack["n_valid"] == len(indices) == len(set(stack["filename"]))
        engine = self.integrator()
        r0 = stack["curves"]["R0"]
        for i in indices:
            row = names.index(self.name(i))
            expected = engine.integrate(self.image(i))[0]
            np.testing.assert_allclose(r0["I"][row], expected.mean, rtol=2e-5, equal_nan=True)
            np.testing.assert_allclose(r0["poisson"][row], expected.poisson, rtol=2e-5,
                                       equal_nan=True)
            assert r0["I0"][row] == pytest.approx(expected.integparams["I0"], rel=1e-6)
            assert stack["image_time"][row] == self.date(i).timestamp()
            if chi_dir is not None:
                chi = read_chi(chi_dir / f"{os.path.splitext(self.name(i))[0]}.chi")
                np.testing.assert_allclose(chi.intensity, expected.mean, rtol=2e-5, equal_nan=True)
        return stack


def _calibration(root: Path, shape: tuple[int, int], **extra) -> Path:
    valid = np.ones(shape, bool)
    valid[shape[0] // 3 : shape[0] // 3 + 2] = False  # a module gap
    np.save(root / "mask.npy", ~valid)  # .npy masks: nonzero = masked
    rows, cols = shape
    cal = {
        "Geometry": {
            "Tilt": {"TiltRotDeg": 30.0, "TiltAngleDeg": 2.0},
            "BeamCenter": [rows * 0.63, cols * 0.43],
            "DedectorDistanceMM": 100.0,
            "PixelSizeMicroM": [172.0],
            "Imagesize": [rows, cols],
        },
        "Wavelength": 1.54,
        "Masks": [{"MaskFile": "mask.npy", "Oversampling": 2, "PixelPerRadialElement": 1,
                   "qStart": 0.1, "qStop": 3.0}],
    }
    cal.update(extra)
    path = root / "cal.json"
    path.write_text(json.dumps(cal))
    return path


def make_saxs_setup(root: Path, n_frames: int = 0, shape: tuple[int, int] = (64, 48),
                    **extra) -> SaxsSetup:
    """``<root>/cal.json`` (64 x 48 by default) and ``n_frames`` frames in ``<root>/exp/data``."""
    data = root / "exp" / "data"
    data.mkdir(parents=True, exist_ok=True)
    setup = SaxsSetup(root, _calibration(root, shape, **extra), data, shape)
    setup.frames = [setup.write(i) for i in range(n_frames)]
    return setup


@pytest.fixture(scope="session")
def saxs_setup_factory(saxs_operator_cache: Path) -> Callable[..., SaxsSetup]:
    """:func:`make_saxs_setup` for fixtures of wider scope: ``factory(root, n_frames, ...)``."""
    return make_saxs_setup


@pytest.fixture
def saxs_setup(tmp_path: Path, saxs_operator_cache: Path) -> Callable[..., SaxsSetup]:
    """Factory: ``saxs_setup(n_frames=0, shape=(64, 48), **calibration_keys)`` makes
    ``<tmp>/cal.json`` and writes the frames into ``<tmp>/exp/data``."""
    return lambda *args, **kw: make_saxs_setup(tmp_path, *args, **kw)


@pytest.fixture(scope="module")
def saxs_local_cluster(saxs_operator_cache: Path):
    """A real LocalCluster: 2 worker processes x 1 thread, no dashboard."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                     host="127.0.0.1",
                     scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                     ) as cluster,
        Client(cluster) as client,
    ):
        yield client
