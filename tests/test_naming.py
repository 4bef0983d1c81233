"""Output naming: one outputs root per run, sub-paths kept (no two frames share an output),
the original's flat ``-o`` names with its path bug fixed."""

from __future__ import annotations

from pathlib import Path

from saxs_pipeline.pipeline.frames import FrameRef
from saxs_pipeline.pipeline.naming import OutputLayout, chi_paths, filelist_entry, flat_name, inside


def test_default_is_a_work_folder_beside_the_data_folder_keeping_sub_paths() -> None:
    layout = OutputLayout.make("/exp/user/data")
    assert layout.root == Path("/exp/user/work") and not layout.flat
    assert layout.run == "data"
    # the run's own folder: a sibling bf/ with buf1_00000.tif writes work/bf/buf1_00000.chi
    assert layout.basename(FrameRef.of("buf1_00000.tif")) == Path("/exp/user/work/data/buf1_00000")
    assert OutputLayout.make("/exp/user/bf").basename(FrameRef.of("buf1_00000.tif")) == Path(
        "/exp/user/work/bf/buf1_00000")
    # s1/x.tif and s2/x.tif no longer both become work/x.chi
    assert layout.basename(FrameRef.of("s1/x.tif")) == Path("/exp/user/work/data/s1/x")
    assert layout.basename(FrameRef.of("s2/x.tif")) == Path("/exp/user/work/data/s2/x")
    assert OutputLayout.make("/d", relpath=".").basename(FrameRef.of("x.tif")) == Path("/d/x")
    assert layout.source("/exp/user/data/s1/x.tif") == "s1/x.tif"
    assert layout.source("/exp/user/other/x.tif") is None
    assert layout.frame_path(FrameRef.of("s1/x.tif")) == Path("/exp/user/data/s1/x.tif")


def test_a_run_named_by_its_store_names_all_its_outputs() -> None:
    # another calibration of the same folder: data-<id>.zarr, and its files beside it
    layout = OutputLayout.make("/exp/data").for_run("-1a2b3c4d")
    assert layout.run == "data-1a2b3c4d" and layout.stack() == Path("/exp/work/data.zarr")
    assert layout.basename(FrameRef.of("x.tif")) == Path("/exp/work/data-1a2b3c4d/x")
    assert layout.filelist() == Path("/exp/results/filelist_data-1a2b3c4d.log")
    assert OutputLayout.make("/exp/data", "/o").for_run("-1a2b3c4d").basename(
        FrameRef.of("x.tif")) == Path("/o/data-1a2b3c4d_x")
    inplace = OutputLayout.make("/d", relpath=".").for_run("-1a2b3c4d")
    assert inplace.basename(FrameRef.of("x.tif")) == Path("/d/d-1a2b3c4d/x")
    # a file of the run as a whole goes with its frames' outputs
    assert layout.run_file("live.png") == Path("/exp/work/data-1a2b3c4d/live.png")
    assert OutputLayout.make("/exp/data", "/o").run_file("live.png") == Path("/o/data_live.png")
    assert OutputLayout.make("/d", relpath=".").run_file("live.png") == Path("/d/live.png")


def test_source_is_the_path_below_the_run_directory_or_none() -> None:
    layout = OutputLayout.make("/exp/user/data/")
    assert layout.source("/exp/user/data/./s1/../x.tif") == "x.tif"  # normalised first
    assert layout.source(Path("/exp/user/data/s1/x.tif")) == "s1/x.tif"
    assert layout.source("/exp/user/data") is None  # the directory itself
    assert layout.source("/exp/user/data2/x.tif") is None  # a sibling sharing the prefix
    assert layout.source("/exp/user/data/../other/x.tif") is None
    assert OutputLayout.make("/").source("/x/y.tif") == "x/y.tif"
    assert OutputLayout.make("/").source("/") is None


def test_multi_frame_files_get_the_frame_index() -> None:
    layout = OutputLayout.make("/exp/data")
    ref = FrameRef.of("eiger/run_data_000001.h5", 12)
    assert ref.container and str(ref) == "eiger/run_data_000001.h5#12"
    assert layout.output(ref) == "data/eiger/run_data_000001_000012"
    assert not FrameRef.of("x.tif").container


def test_outdir_flattens_the_path_and_keeps_dots_in_outdir() -> None:
    layout = OutputLayout.make("/exp/data", out_dir="/o/out.d")
    assert layout.flat and layout.root == Path("/o/out.d")
    assert layout.basename(FrameRef.of("sub/buf1_00000.tif")) == Path("/o/out.d/data_sub_buf1_00000")
    # ':' and '.' vanish from the flattened name, the extension whatever it is
    assert flat_name("a:b.5.tiff", "data.v2") == "datav2_ab5"
    # two frames that map to one flat name: the ledger refuses the second (tested there)
    assert flat_name("a_b.tif", "d") == flat_name("a/b.tif", "d")


def test_queue_files() -> None:
    assert [p.name for p in chi_paths("/w/x", ["", "_cR1", "_cS2"])] == [
        "x.chi", "x_cR1.chi", "x_cS2.chi"]
    layout = OutputLayout.make("/exp/data")
    assert layout.stack() == Path("/exp/work/data.zarr")
    assert layout.failures_log() == Path("/exp/work/failures.log")
    assert OutputLayout.make("/exp/data", "/o").failures_log() == Path("/o/failures.log")
    assert inside("/a/b/c", "/a/b") and inside("/a/b", "/a/b") and not inside("/a/bc", "/a/b")


def test_live_filelist_paths() -> None:
    layout = OutputLayout.make("/exp/user/data")
    assert layout.filelist() == Path("/exp/user/results/filelist_data.log")
    # a queue on the server's base directory keeps its file list inside it
    assert OutputLayout.make("/base").filelist(base="/base") == Path("/base/results/filelist_base.log")
    line = filelist_entry("/exp/user/work/buf1_00000.chi", "/exp/user/data",
                          {"I0": 1.5, "I1": 2.0, "I2": 3.0})
    assert line == "/work/buf1_00000.chi, 1.5, 2.0, 3.0"
    # the original split on the parent's *name*, which broke when it repeated
    repeated = filelist_entry("/user/exp/user/work/a.chi", "/user/exp/user/data", {})
    assert repeated == "/work/a.chi, 0.0, 0.0, 0.0"
    # outputs outside the parent (-o elsewhere) keep their absolute path
    assert filelist_entry("/elsewhere/a.chi", "/exp/user/data", {}).startswith("/elsewhere/a.chi")
