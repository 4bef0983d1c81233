"""The driver -> worker path map (saxsdog --path-map)."""

from __future__ import annotations

import pytest

from saxs_pipeline.pipeline.pathmap import PathMap, PathMapError
from saxs_pipeline.pipeline.tasktypes import FrameResult, FrameTask


def test_prefixes_match_whole_components_and_the_longest_wins() -> None:
    m = PathMap.parse(["/data=/gpfs/bl/data", "/data/x=/scratch/x"])
    assert m.to_worker("/data/run1/f.tif") == "/gpfs/bl/data/run1/f.tif"
    assert m.to_worker("/data/x/f.tif") == "/scratch/x/f.tif"
    assert m.to_worker("/database/f.tif") == "/database/f.tif"
    assert m.to_worker("/data") == "/gpfs/bl/data"
    assert m.to_driver("/gpfs/bl/data/run1/f.chi") == "/data/run1/f.chi"
    assert m.to_driver("/elsewhere/f.chi") == "/elsewhere/f.chi"


def test_tasks_out_and_results_back() -> None:
    m = PathMap.parse(["/data/=/mnt/d"])
    t = m.task(FrameTask("/data/a/f.tif", "/data/work/f", 3))
    assert t == FrameTask("/mnt/d/a/f.tif", "/mnt/d/work/f", 3)
    r = m.result(FrameResult("ok", chi=["/mnt/d/work/f.chi"]))
    assert r.chi == ["/data/work/f.chi"]
    assert PathMap().task(t) is t and not PathMap()


@pytest.mark.parametrize("spec", ["/data", "data=/mnt", "/data=", "=/mnt"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(PathMapError, match="path map"):
        PathMap.parse([spec])


def test_a_prefix_given_twice_is_refused() -> None:
    with pytest.raises(PathMapError, match="twice"):
        PathMap.parse(["/data=/a", "/data/=/b"])
