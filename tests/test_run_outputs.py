"""No run replaces another run's outputs (issue 21): sibling data folders sharing the
default ``../work``, one after the other and at the same time, two calibrations of one
folder, and folders of the same name writing into one ``-o`` folder; a rerun of the same
folder still resumes and overwrites its own outputs. Real frames, a real LocalCluster."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from saxs_pipeline.pipeline.queue import ImageQueue
from saxs_pipeline.stack.read import read_stack

N = 4


def frames(setup, folder: Path, offset: int) -> Path:
    """``buf1_0000i.tif`` in ``folder``: the same names in every folder, other counts."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N):
        (folder / f"buf1_{i:05d}.tif").write_bytes(setup.frame_bytes(i + offset))
    return folder


def chi_files(work: Path) -> dict[str, bytes]:
    return {str(p.relative_to(work)): p.read_bytes() for p in sorted(work.rglob("*.chi"))}


def run(client, calibration, folder: Path, **kw) -> dict:
    with ImageQueue(client, calibration, folder, **kw) as q:
        q.readdir()
        assert q.join(60)
    stats = q.stats()
    assert stats["failed"] == 0, q.failures()
    return {"stats": stats, "stack": q.zarr_path}


def test_sibling_folders_one_after_the_other_and_at_the_same_time(
        saxs_setup, saxs_local_cluster, tmp_path: Path) -> None:
    setup = saxs_setup()
    exp = tmp_path / "exp"
    data, bf = frames(setup, exp / "data", 0), frames(setup, exp / "bf", 100)
    work = exp / "work"
    run(saxs_local_cluster, setup.calibration, data)
    first = chi_files(work)
    assert sorted(first) == [f"data/buf1_{i:05d}.chi" for i in range(N)]
    run(saxs_local_cluster, setup.calibration, bf)
    after = chi_files(work)
    assert {k: after[k] for k in first} == first  # byte-identical
    assert sorted(set(after) - set(first)) == [f"bf/buf1_{i:05d}.chi" for i in range(N)]
    assert all(after[f"bf/buf1_{i:05d}.chi"] != first[f"data/buf1_{i:05d}.chi"] for i in range(N))
    assert {p.name for p in work.glob("*.zarr")} == {"data.zarr", "bf.zarr"}

    # at the same time: two runs started together write what each wrote alone
    twin = tmp_path / "twin"
    folders = [frames(setup, twin / "data", 0), frames(setup, twin / "bf", 100)]
    errors: list[BaseException] = []

    def go(folder: Path) -> None:
        try:
            run(saxs_local_cluster, setup.calibration, folder)
        except BaseException as exc:  # reported below: a thread's assert is not the test's
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert chi_files(twin / "work") == after

    # a rerun of the same folder resumes its own run, then redoes (OverwriteFiles) only it
    again = run(saxs_local_cluster, setup.calibration, data, resume=True)
    assert again["stats"]["skipped"] == N and again["stack"] == work / "data.zarr"
    bf_times = {p: p.stat().st_mtime_ns for p in (work / "bf").glob("*.chi")}
    redo = run(saxs_local_cluster, setup.calibration, data)
    assert redo["stats"]["images processed"] == N and read_stack(redo["stack"])["n_valid"] == N
    assert {p: p.stat().st_mtime_ns for p in (work / "bf").glob("*.chi")} == bf_times
    assert chi_files(work) == after


def test_another_calibration_and_another_folder_of_the_same_name(
        saxs_setup, saxs_local_cluster, tmp_path: Path) -> None:
    setup = saxs_setup()
    data = frames(setup, tmp_path / "exp" / "data", 0)
    work = tmp_path / "exp" / "work"
    run(saxs_local_cluster, setup.calibration, data)
    first = chi_files(work)
    cal = json.loads(setup.calibration.read_text())
    cal["Title"] = "another calibration"
    other = tmp_path / "cal2.json"
    other.write_text(json.dumps(cal))
    second = run(saxs_local_cluster, other, data)
    name = second["stack"].stem
    assert name.startswith("data-") and second["stack"].parent == work
    after = chi_files(work)
    assert {k: after[k] for k in first} == first
    assert sorted(set(after) - set(first)) == [f"{name}/buf1_{i:05d}.chi" for i in range(N)]

    # -o: a/data and b/data, the same flat names data_buf1_*.chi
    out = tmp_path / "out"
    a = frames(setup, tmp_path / "a" / "data", 0)
    b = frames(setup, tmp_path / "b" / "data", 100)
    run(saxs_local_cluster, setup.calibration, a, out_dir=out)
    first = chi_files(out)
    assert sorted(first) == [f"data_buf1_{i:05d}.chi" for i in range(N)]
    second = run(saxs_local_cluster, setup.calibration, b, out_dir=out)
    assert second["stack"] != out / "data.zarr"  # not a's stack continued
    assert second["stats"]["images processed"] == N and second["stats"]["skipped"] == 0
    after = chi_files(out)
    assert {k: after[k] for k in first} == first
    name = second["stack"].stem
    assert sorted(set(after) - set(first)) == [f"{name}_buf1_{i:05d}.chi" for i in range(N)]
