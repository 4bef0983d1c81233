"""Two sources offering one frame at the same moment (issue 21, item 10): ``saxsdog -w``
integrated a frame written as it started twice, into two stack rows, once in about ten
runs: its start-up walk and the watcher had both checked the frame (not on its way, not
done) before either handed it on."""

from __future__ import annotations

import pytest

from saxs_pipeline.pipeline.queue import ImageQueue

pytestmark = pytest.mark.timeout(180)


def test_a_frame_offered_by_a_walk_and_an_event_at_once_is_integrated_once(
        saxs_setup, saxs_local_cluster) -> None:
    n = 40
    setup = saxs_setup(n_frames=n)
    with ImageQueue(saxs_local_cluster, setup.calibration, setup.data) as q:
        q.readdir(wait=False)  # the walk offers all of them while ...
        for i in range(n):  # ... each one comes as an event, as the watcher's do
            q.submit_paths([setup.data / setup.name(i)])
        assert q.join(120)
        stats = q.stats()
    assert stats["images processed"] == n, stats
    setup.check_stack(q.zarr_path, range(n))  # one row per frame
