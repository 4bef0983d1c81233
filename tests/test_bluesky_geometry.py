"""The geometry of a Bluesky run, on a real in-process Dask cluster fed the documents of a
real RunEngine: a calibration named by id in the start, the beam energy and distance
of the start's metadata used only when the consumer is told to, an unknown id reported
while the consumer goes on."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ophyd_async")

from bluesky import RunEngine  # noqa: E402
from blueskydet import make_detector  # noqa: E402
from conftest import make_saxs_setup  # noqa: E402
from test_bluesky_consumer import SHAPE, _run  # noqa: E402

from saxs_pipeline.bluesky.consumer import BlueskyConsumer, ConsumerOptions  # noqa: E402
from saxs_pipeline.bluesky.geometry import parse_overrides, wavelength_a  # noqa: E402
from saxs_pipeline.integrator import Integrator  # noqa: E402
from saxs_pipeline.stack.read import read_stack  # noqa: E402

N = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, saxs_operator_cache: Path) -> Any:
    return make_saxs_setup(tmp_path_factory.mktemp("geo"), shape=SHAPE)


@pytest.fixture(scope="module")
def library(setup: Any) -> Path:
    """A calibration folder holding ``far`` (the set-up at 150 mm instead of 100 mm)."""
    folder = setup.root / "calibrations"
    folder.mkdir(exist_ok=True)
    cal = json.loads(setup.calibration.read_text())
    cal["Geometry"]["DedectorDistanceMM"] = 150.0
    cal["Masks"][0]["MaskFile"] = str(setup.root / "mask.npy")
    (folder / "far.json").write_text(json.dumps(cal))
    return folder


@pytest.fixture(scope="module")
def engine() -> RunEngine:
    return RunEngine({})


def _reduce(client: Any, work: Path, docs: list, options: dict[str, Any],
            runs: int = 1) -> tuple[BlueskyConsumer, list[dict]]:
    consumer = BlueskyConsumer(client, ConsumerOptions("tcp://127.0.0.1:9", work,
                                                       idle=600.0, **options)).start()
    for name, doc in docs:
        consumer.handle(name, doc)
    deadline = time.monotonic() + 120
    while len(consumer.finished) < runs:
        assert time.monotonic() < deadline, f"{runs} run(s) not reduced in 120 s"
        time.sleep(0.1)
    consumer.stop()
    return consumer, consumer.finished


def _q(stack: str) -> np.ndarray:
    return read_stack(Path(stack))["curves"]["R0"]["axis"]


def test_a_run_names_its_calibration_by_id(inprocess_client: Any, setup: Any, library: Path,
                                           engine: RunEngine, tmp_path: Path) -> None:
    det = make_detector(tmp_path, SHAPE)
    docs = _run(engine, [det], N, saxs_calibration="far")
    _, (report,) = _reduce(inprocess_client, tmp_path / "work", docs,
                           {"calibration": setup.calibration, "calibrations": library})
    assert report["frames"] == N and report["failed"] == 0
    st = read_stack(Path(report["stack"]))
    assert st["calibration"]["Geometry"]["DedectorDistanceMM"] == 150.0
    # the file's geometry, not the default's: rtol 1e-6 holds float32 storage of q
    want = Integrator(library / "far.json").integrate(np.zeros(SHAPE))[0].radial
    np.testing.assert_allclose(_q(report["stack"]), want, rtol=1e-6)
    assert not np.allclose(_q(report["stack"]), Integrator(setup.calibration).integrate(
        np.zeros(SHAPE))[0].radial, rtol=1e-3)


@pytest.mark.parametrize("configured", [True, False])
def test_the_energy_of_the_start_replaces_the_wavelength_only_when_configured(
        inprocess_client: Any, setup: Any, engine: RunEngine, tmp_path: Path,
        configured: bool) -> None:
    det = make_detector(tmp_path, SHAPE)
    docs = _run(engine, [det], N, saxs_calibration=str(setup.calibration), mono_energy=15.0)
    overrides = parse_overrides("energy=mono_energy") if configured else ()
    _, (report,) = _reduce(inprocess_client, tmp_path / "work", docs,
                           {"overrides": overrides})
    assert report["frames"] == N and report["failed"] == 0
    q = _q(report["stack"])
    q_cal = Integrator(setup.calibration).integrate(np.zeros(SHAPE))[0].radial
    st = read_stack(Path(report["stack"]))
    if configured:
        # q = 4 pi sin(theta) / lambda and theta is the geometry's: q scales as 1.54 A /
        # lambda(15 keV); rtol 1e-6 holds the float32 q of the stack
        lam = 12.398419843320026 / 15.0  # hc in keV A (CODATA 2018) over the energy
        assert wavelength_a(15.0) == pytest.approx(lam, rel=1e-12)
        np.testing.assert_allclose(q, q_cal * 1.54 / lam, rtol=1e-6)
        assert st["calibration"]["Wavelength"] == pytest.approx(lam, rel=1e-12)
        assert st["calibration"]["GeometryOverride"]["Wavelength"] == {
            "Calibration": 1.54, "EnergyKeV": 15.0, "FromMetadata": "mono_energy"}
    else:
        np.testing.assert_allclose(q, q_cal, rtol=1e-6)
        assert "GeometryOverride" not in st["calibration"]


def test_the_distance_of_the_start_replaces_the_calibration_s(
        inprocess_client: Any, setup: Any, library: Path, engine: RunEngine,
        tmp_path: Path) -> None:
    det = make_detector(tmp_path, SHAPE)
    docs = _run(engine, [det], N, saxs_calibration=str(setup.calibration), det_z=150.0)
    _, (report,) = _reduce(inprocess_client, tmp_path / "work", docs,
                           {"overrides": parse_overrides("distance=det_z")})
    st = read_stack(Path(report["stack"]))
    assert st["calibration"]["GeometryOverride"]["DedectorDistanceMM"] == {
        "Calibration": 100.0, "FromMetadata": "det_z"}
    # the same geometry as the calibration file at 150 mm: rtol 1e-6 (float32 q)
    want = Integrator(library / "far.json").integrate(np.zeros(SHAPE))[0].radial
    np.testing.assert_allclose(_q(report["stack"]), want, rtol=1e-6)


def test_an_unknown_id_or_missing_metadata_is_reported_and_the_consumer_goes_on(
        inprocess_client: Any, setup: Any, library: Path, engine: RunEngine, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    det = make_detector(tmp_path, SHAPE)
    caplog.set_level(logging.INFO)
    docs = [*_run(engine, [det], N, saxs_calibration="nosuch"),
            *_run(engine, [det], N, saxs_calibration="far"),  # no mono_energy
            *_run(engine, [det], N, saxs_calibration="far", mono_energy=8.0)]
    uids = [d["uid"] for n, d in docs if n == "start"]
    consumer, finished = _reduce(inprocess_client, tmp_path / "work", docs,
                                 {"calibrations": library,
                                  "overrides": parse_overrides("energy=mono_energy")})
    assert f"run {uids[0]}" in caplog.text
    assert f"calibration id 'nosuch' is not in {library} (known: far); not reduced" in caplog.text
    assert "energy is taken from the start's 'mono_energy', which is missing or not a " \
        "number; not reduced" in caplog.text
    assert [r["uid"] for r in finished] == [uids[2]] and finished[0]["failed"] == 0
    assert len(list((tmp_path / "work").glob("*/*.zarr"))) == 1


def _start(**md: Any) -> Any:
    from saxs_pipeline.bluesky.documents import run_start

    return run_start({"uid": "u-1", "time": 1.0, "scan_id": 1, **md})


def test_what_names_a_calibration(setup: Any, library: Path) -> None:
    from saxs_pipeline.bluesky.geometry import GeometryError, GeometryOptions, run_calibration

    options = GeometryOptions(setup.calibration, library=library)
    assert run_calibration(_start(), options).calibration == setup.calibration
    assert run_calibration(_start(saxs_calibration="far"), options).calibration == \
        library / "far.json"
    by_path = run_calibration(_start(saxs_calibration=str(setup.calibration)), options)
    assert by_path.calibration == setup.calibration  # "/" or ".json": a path
    for value, message in [("far.json", "calibration far.json does not exist"),
                           ("a b", "'a b' is neither a path nor a calibration id"),
                           ("near", "calibration id 'near' is not in")]:
        with pytest.raises(GeometryError, match=message):
            run_calibration(_start(saxs_calibration=value), options)
    with pytest.raises(GeometryError, match="no calibration folder was given"):
        run_calibration(_start(saxs_calibration="far"), GeometryOptions(setup.calibration))
    overrides = GeometryOptions(setup.calibration, overrides=parse_overrides("energy=E"))
    for value in (0, -8.0):
        with pytest.raises(GeometryError, match=r"the start's 'E' = .*: the energy in keV "
                           "must be > 0"):
            run_calibration(_start(E=value), overrides)
    for value in (True, "15 keV"):
        with pytest.raises(GeometryError, match="'E', which is missing or not a number"):
            run_calibration(_start(E=value), overrides)


def test_overrides_are_parsed() -> None:
    assert parse_overrides(None) == ()
    assert parse_overrides("energy, distance=z") == (("energy", "energy"), ("distance", "z"))
    with pytest.raises(ValueError, match="'wavelength' cannot be overridden"):
        parse_overrides("wavelength")
