"""What a new user hit, one test each (issue: "Nothing lost, nothing overwritten"): a
writer that pauses, a file rewritten under its name, outputs that would collide, limits
checked before memory is spent, and the command-line friction."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tifffile

from saxs_pipeline.frames.source import ImageError
from saxs_pipeline.frames.tiff import read_frame
from saxs_pipeline.pipeline.queue import ImageQueue
from saxs_pipeline.stack.read import read_stack

from procs import saxsdog as spawn_saxsdog
from procs import stop, wait_until

pytestmark = pytest.mark.timeout(180)

SAXSDOG = str(Path(sys.executable).parent / "saxsdog")


def run_saxsdog(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([SAXSDOG, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


# -- the watcher and the ledger ----------------------------------------------------------


def test_a_writer_that_pauses_mid_file_gets_its_frame_integrated(saxs_setup, saxs_local_cluster) -> None:
    """The frame fails as incomplete while its writer pauses; the close-write when it
    finishes shows it changed, and it is integrated (the failure is cleared)."""
    setup = saxs_setup()
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, watch=True, retries=2,
                   retry_delay=0.1, stable_time=0.3)
    q.start()
    data = setup.frame_bytes(0)
    try:
        with open(setup.data / setup.name(0), "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            wait_until(lambda: q.stats()["failed"] == 1, 30, "the stalled frame failing")
            fh.write(data[len(data) // 2 :])
        wait_until(lambda: q.stats()["images processed"] == 1, 30, "the finished frame")
        assert q.stats()["failed"] == 0
    finally:
        q.close()
    setup.check_stack(q.zarr_path, [0])


def test_a_file_rewritten_under_its_name_replaces_its_row(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup()
    path = setup.data / setup.name(0)
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, watch=True, stable_time=0.3)
    q.start()
    try:
        setup.write(0)
        wait_until(lambda: q.stats()["images processed"] == 1, 30, "the first version")
        time.sleep(0.05)
        path.write_bytes(setup.frame_bytes(7))  # other counts, same name
        wait_until(lambda: q.stats()["images processed"] == 2, 30, "the rewritten version")
    finally:
        q.close()
    stack = read_stack(q.zarr_path)
    assert stack["n_valid"] == 1  # replaced, not added
    expected = setup.integrator().integrate(setup.image(7))[0].mean
    np.testing.assert_allclose(stack["curves"]["R0"]["I"][0], expected, rtol=2e-5, equal_nan=True)


def test_frames_in_sub_folders_keep_their_own_outputs(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup()
    for sub, i in (("s1", 0), ("s2", 1)):
        (setup.data / sub).mkdir()
        (setup.data / sub / "x.tif").write_bytes(setup.frame_bytes(i))
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data) as q:
        q.readdir()
        assert q.join(30)
    work = setup.root / "exp" / "work"
    assert (work / "data" / "s1" / "x.chi").exists() and (work / "data" / "s2" / "x.chi").exists()
    assert q.zarr_path.parent == work  # stack and the run's .chi folder share one outputs root
    assert read_stack(q.zarr_path)["n_valid"] == 2


def test_flat_names_that_collide_are_refused_naming_both(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup()
    (setup.data / "a").mkdir()
    for i, name in enumerate(("a_b.tif", "a/b.tif", "x.1.tif", "x1.tif")):
        (setup.data / name).write_bytes(setup.frame_bytes(i))
    out = setup.root / "out"
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data, out_dir=out) as q:
        q.readdir()
        assert q.join(30)
    assert q.stats()["images processed"] == 2 and q.stats()["failed"] == 2
    reasons = {f["file"].split("data/")[-1]: f["error"] for f in q.failures()}
    assert set(reasons) == {"a/b.tif", "x1.tif"}  # the later ones in walk order
    assert "a_b.tif" in reasons["a/b.tif"] and "overwrite each other" in reasons["a/b.tif"]
    assert "x.1.tif" in reasons["x1.tif"]
    assert sorted(p.name for p in out.glob("*.chi")) == ["data_a_b.chi", "data_x1.chi"]
    chi = (out / "data_a_b.chi").read_text()
    assert json.loads(chi.splitlines()[0])  # the first frame's file, never overwritten


def test_a_huge_declared_tiff_is_refused_before_it_is_decoded(tmp_path) -> None:
    path = tmp_path / "huge.tif"
    tiles = (np.zeros((256, 256), np.uint16) for _ in range(64 * 64))
    tifffile.imwrite(path, tiles, shape=(16384, 16384), dtype=np.uint16, tile=(256, 256),
                     compression="zlib")
    assert path.stat().st_size < 4 * 2**20  # a small file declaring 512 MB of pixels
    rss = psutil.Process().memory_info().rss
    with pytest.raises(ImageError, match=r"\(16384, 16384\) but Imagesize is \[64, 48\]"):
        read_frame(path, (64, 48))
    assert psutil.Process().memory_info().rss - rss < 100 * 2**20


# -- the command line -----------------------------------------------------------------------


def test_single_files_upper_case_names_and_the_rate(saxs_setup, tmp_path) -> None:
    setup = saxs_setup(n_frames=3)
    upper = setup.data / "UPPER_00009.TIF"
    upper.write_bytes(setup.frame_bytes(9))
    r = run_saxsdog(["-c", str(setup.calibration), "-t", "1", str(setup.frames[1]), str(upper)],
                    tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 frames in" in r.stderr and "start-up" in r.stderr  # the rate leaves start-up out
    names = sorted(read_stack(setup.root / "exp" / "work" / "data.zarr")["filename"])
    assert names == ["UPPER_00009.TIF", "frame_00001.tif"]
    r = run_saxsdog(["-c", str(setup.calibration), "-t", "1", str(setup.data / "nope.tif")], tmp_path)
    assert r.returncode == 2 and "nope.tif does not exist" in r.stderr


def test_an_output_folder_that_cannot_be_made_is_a_message(saxs_setup, tmp_path) -> None:
    setup = saxs_setup(n_frames=1)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = run_saxsdog(["-c", str(setup.calibration), "-t", "1", "-o", str(blocker / "out"),
                     str(setup.data)], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "cannot start" in r.stderr and "Traceback" not in r.stderr


def test_a_nan_in_the_calibration_names_its_json_path(saxs_setup, tmp_path) -> None:
    setup = saxs_setup(n_frames=1)
    cal = json.loads(setup.calibration.read_text())
    cal["Geometry"]["DedectorDistanceMM"] = float("nan")
    bad = tmp_path / "nan.json"
    bad.write_text(json.dumps(cal))  # Python writes NaN, and reads it back
    r = run_saxsdog(["-c", str(bad), str(setup.data)], tmp_path)
    assert r.returncode == 2 and "$.Geometry.DedectorDistanceMM" in r.stderr
    assert "not a finite number" in r.stderr and "Traceback" not in r.stderr


def test_watch_mode_shows_live_progress_and_ctrl_c_is_clean(saxs_setup, tmp_path) -> None:
    """Ctrl-C in a terminal signals the whole process group: the embedded workers ignore
    it (no KeyboardInterrupt tracebacks), the driver stops them in order."""
    setup = saxs_setup(n_frames=5)
    log = tmp_path / "watch.log"
    dog = spawn_saxsdog(["-c", str(setup.calibration), "-t", "2", "-w", str(setup.data)], log,
                        tmp_path)
    try:
        wait_until(lambda: "watching" in log.read_text(), 60, "watching", [dog])
        for i in range(5, 8):
            setup.write(i)
        wait_until(lambda: len(list((setup.root / "exp" / "work" / "data").glob("*.chi"))) == 8, 60,
                   "the new frames", [dog])
        for p in [psutil.Process(dog.pid), *psutil.Process(dog.pid).children(recursive=True)]:
            p.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C does: every process
        assert dog.wait(30) == 0
    finally:
        stop([dog])
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "8 frames in" in text


def test_the_converter_gives_the_q_window_the_detectors_range(tmp_path) -> None:
    from realdata import require

    out = tmp_path / "cal.json"
    r = subprocess.run([str(Path(sys.executable).parent / "saxsconverter"),
                        str(require("calibration.txt")), str(out), "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    mask = json.loads(out.read_text())["Masks"][0]
    assert mask["qStart"] == 0 and mask["qStop"] > 5  # the Pilatus 1M reaches q ~ 6.7 /nm
    assert "qStop set to" in r.stderr
    cal = json.loads(out.read_text())
    cal["Masks"][0]["qStart"] = 9.0
    (tmp_path / "bad.json").write_text(json.dumps(cal))
    from saxs_pipeline.config.calibration import load_calibration
    from saxs_pipeline.config.calibschema import CalibrationError

    with pytest.raises(CalibrationError, match=r"\$\.Masks\[0\]\.qStop.*below qStart"):
        load_calibration(tmp_path / "bad.json")


def test_a_server_queue_on_its_base_directory_keeps_its_outputs_inside() -> None:
    from saxs_pipeline.control.paths import confined_relpath

    base = Path("/beam/base")
    assert confined_relpath(base, base, "../work") == "work"  # Directory ["."]
    assert confined_relpath(base, base / "user" / "data", "../work") == "../work"
    assert confined_relpath(base, base, "../../elsewhere") == os.path.join("work", "elsewhere")


def test_watch_source_thread_names_are_stopped(saxs_setup, saxs_local_cluster) -> None:
    setup = saxs_setup()
    before = {t.name for t in threading.enumerate()}
    q = ImageQueue(saxs_local_cluster, setup.calibration, setup.data, watch=True)
    q.start()
    q.close()
    after = {t.name for t in threading.enumerate() if t.is_alive()}
    assert not {n for n in after - before if n.startswith(("saxs-", "zarrstack"))}
