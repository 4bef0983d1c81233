"""The live page's frame picture without a cluster: the pure function (block means, log
levels, reserved levels, mask) against its closed form, its message and placement, the
beam centre on the real Pilatus frame, and the worker task that makes one only when
asked (modules saxs_pipeline.ops.picture, saxs_pipeline.live.picture,
saxs_pipeline.pipeline.picture)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saxs_pipeline.live.picture import beam_xy, from_message, placement, to_message
from saxs_pipeline.ops.picture import (
    HIGHEST,
    LOWEST,
    NO_DATA,
    SATURATED,
    block_factor,
    frame_picture,
)

from realdata import require


def levels_of(means: np.ndarray, low: float, high: float) -> np.ndarray:
    """The module's closed form: 1 + round(253 log(m/low) / log(high/low)), clipped."""
    x = np.clip(np.log(means / low) / np.log(high / low), 0, 1)
    return (LOWEST + np.rint(x * (HIGHEST - LOWEST))).astype(np.uint8)


def test_block_means_levels_and_marks_match_the_closed_form() -> None:
    # 10 x 14 pixels, long side at most 5: blocks of 3, the last row and column narrower
    rng = np.random.default_rng(3)
    means = rng.uniform(2.0, 5000.0, (4, 5))
    image = np.kron(means, np.ones((3, 3)))[:10, :14].astype(np.float32)
    image[0, 0] = -1  # a Pilatus gap pixel: left out of its block's mean
    image[3:6, 3:6] = 65535  # a whole block of the invalid marker: no data
    image[7, 4] = 1e6  # one saturated pixel saturates its block
    image[9, 13] = np.nan
    mask = np.zeros(image.shape, bool)
    mask[6:9, 6:9] = True  # a whole block
    mask[6, 9] = True  # 1 of 9: not shown
    mask[9, 0:2] = True  # 2 of the last row's 3: shown
    p = frame_picture(image, invalid=65535, saturation=1e5, mask=mask, long_side=5,
                      scale=(10.0, 1000.0))
    assert block_factor(image.shape, 5) == p.block == 3 and p.shape == (10, 14)
    expected = levels_of(means, 10.0, 1000.0)
    expected[1, 1], expected[2, 1] = NO_DATA, SATURATED
    np.testing.assert_array_equal(p.levels, expected)
    assert p.saturated == 1 and (p.low, p.high) == (10.0, 1000.0)
    shown = np.zeros((4, 5), bool)
    shown[2, 2] = shown[3, 0] = True
    np.testing.assert_array_equal(p.mask, shown)


def widened(low: float, high: float) -> tuple[float, float]:
    """(low, high) widened to the next tenth of a decade."""
    return (10 ** (np.floor(10 * np.log10(low)) / 10), 10 ** (np.ceil(10 * np.log10(high)) / 10))


def test_default_range_is_the_percentiles_of_the_positive_means() -> None:
    means = np.geomspace(1.0, 1e4, 64).reshape(8, 8)
    means[0, 0] = 0.0  # dead block: the lowest level, left out of the range
    p = frame_picture(np.kron(means, np.ones((2, 2))), long_side=8)
    low, high = widened(*np.percentile(means.ravel()[1:], [0.5, 99.9]))
    assert (p.low, p.high) == pytest.approx((low, high))
    np.testing.assert_array_equal(p.levels.ravel()[1:], levels_of(means.ravel()[1:], low, high))
    assert p.levels[0, 0] == LOWEST and p.mask is None and p.saturated == 0
    mask = np.zeros((16, 16), bool)
    mask[:, 8:] = True  # the range from the left half only
    left = frame_picture(np.kron(means, np.ones((2, 2))), mask=mask, long_side=8)
    assert (left.low, left.high) == pytest.approx(widened(*np.percentile(
        means[:, :4].ravel()[1:], [0.5, 99.9])))
    flat = frame_picture(np.full((4, 4), 50.0), long_side=4)  # one tenth of a decade wide
    assert (flat.low, flat.high) == pytest.approx((10 ** 1.6, 10 ** 1.7))
    assert (flat.levels > LOWEST).all() and (flat.levels < HIGHEST).all()


def test_picture_sizes_of_real_detectors() -> None:
    assert block_factor((1043, 981)) == 5  # Pilatus 1M: 209 x 197 levels
    assert block_factor((2167, 2070)) == 9  # EIGER2 4M: 241 x 230
    assert block_factor((64, 48)) == 1


def test_message_round_trip_and_placement() -> None:
    image = np.arange(35 * 23, dtype=np.int32).reshape(35, 23)
    p = frame_picture(image, mask=image % 3 == 0, long_side=10)
    name, back = from_message(to_message("frame_00001", p))
    assert name == "frame_00001" and (back.block, back.shape) == (4, (35, 23))
    np.testing.assert_array_equal(back.levels, p.levels)
    np.testing.assert_array_equal(back.mask, p.mask)
    assert (back.low, back.high, back.saturated) == (p.low, p.high, p.saturated)
    # 9 x 6 blocks of 4: the top edge at Y = 35, reaching 1 below Y = 0 and 1 beyond X = 23
    assert placement(p) == {"x": 0.0, "y": -1.0, "dw": 24.0, "dh": 36.0}
    assert from_message({"h": 2, "w": 2, "levels": b"\x00"}) is None
    assert beam_xy({"beam_center": [808.37, 387.772]}) == (387.772, 808.37)
    assert beam_xy({}) is None


def test_beam_centre_lands_on_the_beam_of_the_real_frame() -> None:
    # How the page's orientation was checked against the real frame: the marker goes at
    # (X, Y) = (BeamCenter[1], BeamCenter[0]) on the picture as the page draws it (flipped,
    # placed by `placement`); there the beam stop's mask must be, with the scattering
    # falling off around it. Drawn upside down, the marker lands on flat background.
    from saxs_pipeline.frames.registry import open_frames
    from saxs_pipeline.integrator import Integrator
    from saxs_pipeline.pipeline.picture import saturation_of

    frame, cal = require("buf1_00000.tif"), require("cal_flat.json")
    with open_frames(frame) as src:
        image, meta = src.read(0, 1)[0], src.metadata(0, 1)[0]
    p = frame_picture(image, saturation=saturation_of(meta), mask=~Integrator(cal).valid[0])
    assert p.levels.shape == (209, 197) and p.saturated == 0
    drawn, drawn_mask, place = p.levels[::-1], p.mask[::-1], placement(p)
    x, y = beam_xy({"beam_center": [808.37, 387.772]})
    i = np.arange(drawn.shape[0])[:, None] * p.block + place["y"] + p.block / 2 - y
    j = np.arange(drawn.shape[1])[None, :] * p.block + place["x"] + p.block / 2 - x
    r = np.hypot(i, j)  # frame pixels from the marker, per drawn block
    assert drawn_mask[r < 15].all()  # the beam stop under the marker
    shown = ~drawn_mask & (drawn != NO_DATA)
    near = np.median(drawn[(r > 20) & (r < 60) & shown])
    far = np.median(drawn[(r > 300) & (r < 340) & shown])
    # the scattering around the beam, about twice the counts further out: levels ~155
    # and ~85 (upside down: ~59 at both radii)
    assert near > far + 40


def test_task_brings_a_picture_of_its_last_frame_only_when_asked(saxs_setup) -> None:
    from saxs_pipeline.pipeline.task import process_frames
    from saxs_pipeline.pipeline.tasktypes import FrameTask, TaskOptions

    setup = saxs_setup(n_frames=3)
    integ = setup.integrator()
    tasks = [FrameTask(str(p), str(setup.root / "out" / Path(p).stem)) for p in setup.frames]
    tasks.append(FrameTask(str(setup.root / "missing.tif"), str(setup.root / "out" / "m")))
    options = TaskOptions(write_chi=False)
    asked = process_frames("q", tasks, options, integrator=integ, picture=True)
    assert [r.picture is not None for r in asked] == [False, False, True, False]
    p = asked[2].picture
    expected = frame_picture(setup.image(2), mask=~integ.valid[0])
    np.testing.assert_array_equal(p.levels, expected.levels)
    np.testing.assert_array_equal(p.mask, expected.mask)
    assert p.levels[0, 0] == NO_DATA  # the generated frame's -1 gap pixels
    plain = process_frames("q", tasks, options, integrator=integ)
    assert all(r.picture is None for r in plain)
