"""What the live page's frame picture costs: a worker's time per picture
(:func:`saxs_pipeline.ops.picture.frame_picture`) and its bytes, worker -> driver
(pickled, as Dask sends a task's result) and driver -> scheduler (the push's msgpack),
on the real Pilatus 1M buffer frame with its calibration's mask and on an EIGER2 X 4M
demo frame. A task makes at most one (of its last frame, when the driver asked: at most
every 0.5 s per queue); a task that was not asked keeps no frame and makes none.

``python -m benchmarks.picture [--rounds R]``; times are the best and the median over
rounds, on whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

from saxs_pipeline.demo.eiger import EIGER2_X_4M_SHAPE, demo_frames
from saxs_pipeline.frames.registry import open_frames
from saxs_pipeline.frames.source import invalid_value_for
from saxs_pipeline.integrator import Integrator
from saxs_pipeline.live.picture import to_message
from saxs_pipeline.ops.picture import frame_picture
from saxs_pipeline.pipeline.picture import saturation_of

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pilatus1m"


def _times(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out), statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.picture")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    frame, cal = DATA / "buf1_00000.tif", DATA / "cal_flat.json"
    integ = Integrator(cal)
    with open_frames(frame) as src:
        pilatus, meta, invalid = src.read(0, 1)[0], src.metadata(0, 1)[0], src.invalid_value
    eiger = next(iter(demo_frames(1, shape=EIGER2_X_4M_SHAPE)))
    cases = [("Pilatus 1M buffer + mask", pilatus,
              dict(invalid=invalid, saturation=saturation_of(meta), mask=~integ.valid[0])),
             ("EIGER2 X 4M demo, no mask", eiger,
              dict(invalid=invalid_value_for(eiger.dtype)))]
    print(f"{'frame':28} {'shape':>12} {'picture':>9} {'best ms':>8} {'median ms':>9} "
          f"{'pickled B':>9} {'pushed B':>9}")
    for name, image, kw in cases:
        best, median = _times(lambda image=image, kw=kw: frame_picture(image, **kw), args.rounds)
        p = frame_picture(image, **kw)
        pickled = len(pickle.dumps(p, protocol=5))
        pushed = len(msgpack.packb(to_message("frame_00000", p), use_bin_type=True))
        print(f"{name:28} {'x'.join(map(str, image.shape)):>12} "
              f"{'x'.join(map(str, p.levels.shape)):>9} {best * 1e3:8.1f} {median * 1e3:9.1f} "
              f"{pickled:9d} {pushed:9d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
