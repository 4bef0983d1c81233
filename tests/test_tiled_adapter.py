"""Curve stacks served by a real ``tiled serve directory`` with our adapter and mimetype
hook (127.0.0.1, random port): a Tiled client reads what ``open_dataset`` reads, also of a
stack still being written (its committed rows only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tiled.server")
xr = pytest.importorskip("xarray")

from bsprocs import Tiled, api_key  # noqa: E402

from saxs_pipeline.integrator import Curve  # noqa: E402
from saxs_pipeline.stack.read import open_dataset  # noqa: E402
from saxs_pipeline.stack.writer import CurveSpec, CurveStackWriter  # noqa: E402
from saxs_pipeline.tiled.adapter import MIMETYPE, detect_mimetype  # noqa: E402

Q = np.linspace(0.05, 3.0, 40)
CALIBRATION = {"Title": "adapter test", "Geometry": {"Imagesize": [64, 48]}, "Wavelength": 1.54}
ADAPTER = ["--adapter", f"{MIMETYPE}=saxs_pipeline.tiled.adapter:SaxsStackAdapter",
           "--mimetype-hook", "saxs_pipeline.tiled.adapter:detect_mimetype"]


def _curve(i: int) -> list[Curve]:
    mean = (100.0 + i) / (1 + Q**2)
    return [Curve("Radial", 0, Q, mean, np.sqrt(mean), None,
                  {"I0": float(i), "I1": 2.0 * i, "I2": 3.0 * i}, ["q", "I", "err"])]


def _add(writer: CurveStackWriter, frames: range) -> None:
    # completion order differs from acquisition order: the reader sorts by name and index
    for i in reversed(frames):
        writer.add(f"scan/img_{i // 3:03d}.h5", _curve(i), 1.7e9 + i, 1.7e9 + i + 0.5,
                   frame_index=i % 3)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Tiled, Path, CurveStackWriter]]:
    """WORK with a finished stack ``done.zarr`` and a stack ``live.zarr`` whose writer stays
    open, served by one tiled process (stopped by PID at the end)."""
    work = tmp_path_factory.mktemp("work")
    spec = CurveSpec("R0", "Radial", Q, labels=("q", "I", "err"))
    with CurveStackWriter(work / "done.zarr", CALIBRATION, [spec], block_rows=4) as w:
        _add(w, range(11))
    (work / "notes.txt").write_text("not a stack")
    live = CurveStackWriter(work / "live.zarr", CALIBRATION, [spec], block_rows=64,
                            flush_interval=3600.0)  # flushed only when the test says
    _add(live, range(5))
    live.flush()
    server = Tiled(["directory", str(work), *ADAPTER], work.parent / "tiled.log", api_key())
    try:
        server.proc.wait_for("ndexing complete", 120)
        yield server, work, live
    finally:
        server.stop()
        live.close()


def test_detect_mimetype_claims_only_curve_stacks(tmp_path: Path) -> None:
    spec = CurveSpec("R0", "Radial", Q)
    CurveStackWriter(tmp_path / "s.zarr", CALIBRATION, [spec]).close()
    assert detect_mimetype(tmp_path / "s.zarr", None) == MIMETYPE
    (tmp_path / "other.zarr").mkdir()
    (tmp_path / "other.zarr" / "zarr.json").write_text('{"attributes": {"format": "x"}}')
    assert detect_mimetype(tmp_path / "other.zarr", None) is None
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{not json")
    assert detect_mimetype(tmp_path / "bad.zarr", "text/plain") == "text/plain"


def test_tiled_read_equals_open_dataset(served: tuple[Tiled, Path, CurveStackWriter]) -> None:
    server, work, _ = served
    client = server.client()
    assert "done" in client and "notes" not in list(client)
    node = client["done"]
    assert node.metadata["calibration"] == CALIBRATION
    got = node["R0"].read()
    want = open_dataset(work / "done.zarr")
    assert dict(got.sizes) == {"frame": 11, "q": Q.size}
    # exact: the same float32/float64 values pass through Tiled unchanged
    for name in want.data_vars:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
    for name in ("q", "frame_index", "row", "image_time", "processed_time"):
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
    assert got["filename"].values.tolist() == [str(v) for v in want["filename"].values]
    assert got["q"].attrs["units"] == "1/nm" and got["I"].dims == ("frame", "q")
    assert got["image_time"].dtype == np.dtype("datetime64[ns]")
    assert got.attrs["calibration"] == CALIBRATION and got.attrs["n_valid"] == 11


def test_a_stack_being_written_shows_its_committed_rows(
        served: tuple[Tiled, Path, CurveStackWriter]) -> None:
    server, work, live = served
    client = server.client()
    assert client["live"]["R0"].read().sizes["frame"] == 5
    _add(live, range(5, 9))  # added, not yet flushed: not committed
    assert client["live"]["R0"].read().sizes["frame"] == 5
    live.flush()
    got = client["live"]["R0"].read()  # the same node, no re-registration
    want = open_dataset(work / "live.zarr")
    assert got.sizes["frame"] == 9
    np.testing.assert_array_equal(got["I"].values, want["I"].values)
    np.testing.assert_array_equal(got["frame_index"].values, want["frame_index"].values)
