"""The CI-sized soak: 10^4 small frames through saxsdog on the multi-host harness, by
readdir and by watch (frames added while it runs; benchmarks/soak.py runs 10^5): every
frame once in the stack, the ledger and as a .chi file, no failures, memory of every
process and the rate steady."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from netns import unavailable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmarks/ is not installed

pytestmark = [pytest.mark.timeout(240), pytest.mark.scale]


@pytest.mark.parametrize("watch", [False, True], ids=["readdir", "watch"])
def test_ten_thousand_frames_on_two_worker_hosts(tmp_path, saxs_operator_cache, watch) -> None:
    why = unavailable()
    if why is not None:
        print(f"soak skipped: {why}")
        pytest.skip(f"cannot make network namespaces: {why}")
    from benchmarks.soak import soak

    n = 10_000
    result = soak(tmp_path, n, hosts=2, every=3.0, timeout=200, watch=watch, rate=1000.0)
    summary = result.summary()
    print("\n" + "\n".join(f"  {k}: {v}" for k, v in summary.items()))
    for key in ("stack rows", "distinct names", ".chi files", "ledger done"):
        assert summary[key] == n, (key, summary)
    assert summary["ledger pending"] == summary["ledger failed"] == 0
    assert summary["failures.log lines"] == 0
    # Loose bounds: the run is short and the machine shared; the soak script reports
    # the figures for 10^5 frames and its < 5 % bound. A tight bound here would not even
    # catch the growth the 10^5 soak found (Dask's profiler, ~0.1 MB/s per worker: under
    # 1 % in this 15-45 s run); test_workerconfig and test_cluster_processes check that
    # our workers run without it.
    for name in ("driver", "scheduler", "w1", "w2"):
        assert summary[f"rss {name} growth 2nd half %"] < 25, summary
    if "fps middle" in summary:
        assert summary["fps last 10 %"] > 0.3 * summary["fps middle"], summary
    result.plot(tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 1000
