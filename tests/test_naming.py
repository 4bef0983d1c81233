"""Output naming: the original's rules (research §4.3/§4.4) with its two path bugs fixed."""

from __future__ import annotations

from pathlib import Path

from saxs_pipeline.naming import (
    chi_paths,
    failures_log_path,
    filelist_entry,
    filelist_path,
    flat_name,
    output_basename,
    outputs_dir,
    relative_frame,
    zarr_default_path,
)


def test_default_is_a_work_folder_beside_the_image_folder() -> None:
    base = output_basename("/exp/user/data/buf1_00000.tif", "/exp/user/data")
    assert base == Path("/exp/user/work/buf1_00000")
    # frames in sub-folders get a work folder beside their own folder, as in the original
    sub = output_basename("/exp/user/data/run2/buf1_00001.tif", "/exp/user/data")
    assert sub == Path("/exp/user/data/work/buf1_00001")
    assert output_basename("/d/x.tif", "/d", relpath=".") == Path("/d/x")


def test_outdir_flattens_the_path_and_keeps_dots_in_outdir() -> None:
    # the original turned ./out into /out by stripping every '.', OUTDIR included
    base = output_basename("/exp/data/sub/buf1_00000.tif", "/exp/data", out_dir="./out.d")
    assert base == Path("./out.d/data_sub_buf1_00000")
    assert flat_name("/exp/data/buf1_00000.tif", "/exp/data") == "data_buf1_00000"
    # ':' and '.' vanish from the flattened name, the extension whatever it is
    assert flat_name("/e/data.v2/a:b.5.tiff", "/e/data.v2") == "datav2_ab5"


def test_chi_suffixes_and_queue_files() -> None:
    assert [p.name for p in chi_paths("/w/x", ["", "_cR1", "_cS2"])] == [
        "x.chi", "x_cR1.chi", "x_cS2.chi"]
    assert outputs_dir("/exp/data") == Path("/exp/work")
    assert outputs_dir("/exp/data", "/o") == Path("/o")
    assert zarr_default_path("/exp/data") == Path("/exp/work/data.zarr")
    assert failures_log_path("/exp/data", "/o") == Path("/o/failures.log")
    assert relative_frame("/exp/data/a/b.tif", "/exp/data") == "a/b.tif"


def test_live_filelist_paths() -> None:
    assert filelist_path("/exp/user/data") == Path("/exp/user/results/filelist_data.log")
    line = filelist_entry("/exp/user/work/buf1_00000.chi", "/exp/user/data",
                          {"I0": 1.5, "I1": 2.0, "I2": 3.0})
    assert line == "/work/buf1_00000.chi, 1.5, 2.0, 3.0"
    # the original split on the parent's *name*, which broke when it repeated
    repeated = filelist_entry("/user/exp/user/work/a.chi", "/user/exp/user/data", {})
    assert repeated == "/work/a.chi, 0.0, 0.0, 0.0"
    # outputs outside the parent (-o elsewhere) keep their absolute path
    assert filelist_entry("/elsewhere/a.chi", "/exp/user/data", {}).startswith("/elsewhere/a.chi")
