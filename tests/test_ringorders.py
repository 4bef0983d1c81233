"""Which calibrant reflection each ring is, from radius ratios alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from saxs_pipeline.ops.calibrants import CALIBRANTS
from saxs_pipeline.ops.ringorders import OrderError, assign_orders


def radii(name: str, scale: float, idx, lam: float = 1.0):
    vis = CALIBRANTS[name].visible(lam)
    return [scale * math.tan(vis[i][1]) for i in idx]


def test_agbh_orders_1_2_3_not_2_4_6() -> None:
    a = assign_orders(radii("AgBh", 6000.0, [0, 1, 2]), CALIBRANTS["AgBh"], 1.0)
    assert a.reflection == (0, 1, 2) and a.scale_px == pytest.approx(6000.0, rel=1e-6)


def test_missing_inner_order_hidden_by_the_beam_stop() -> None:
    # orders 2-5 found; order 1 falls behind the beam stop (not seen): still 2, 3, 4, 5
    r = radii("AgBh", 3000.0, [1, 2, 3, 4])
    a = assign_orders(r, CALIBRANTS["AgBh"], 1.0, seen=lambda x: x > 60)
    assert a.reflection == (1, 2, 3, 4)


def test_lab6_with_a_missing_ring_and_an_artefact() -> None:
    r = radii("LaB6", 2000.0, [0, 1, 3, 4, 5]) + [123.4]  # (111) missing, one spurious peak
    a = assign_orders(r, CALIBRANTS["LaB6"], 1.0)
    assert a.scale_px == pytest.approx(2000.0, rel=1e-6)
    assert sorted(j for j in a.reflection if j is not None) == [0, 1, 3, 4, 5]


def test_one_ring_is_order_one_when_nothing_inside_it_is_seen_missing() -> None:
    a = assign_orders(radii("AgBh", 50000.0, [0]), CALIBRANTS["AgBh"], 1.0, seen=lambda x: x > 30)
    assert a.reflection == (0,)


def test_one_ring_with_its_inside_hidden_is_refused_as_ambiguous() -> None:
    r = radii("AgBh", 50000.0, [0])
    with pytest.raises(OrderError, match=r"1 ring at 856\.\d px fit AgBh 00\d \(distance \d+ px\) as well as 00\d .*; give an approximate distance"):
        assign_orders(r, CALIBRANTS["AgBh"], 1.0, seen=lambda x: x > 700)


def test_ratios_of_no_calibrant_order_are_refused() -> None:
    # LaB6's first five rings (tan 2theta at 1 A) offered as AgBh: a few pairs are near
    # some high AgBh orders, but only with most inner orders unseen -- refused
    r = np.array(radii("LaB6", 400.0, [0, 1, 2, 3, 4]))
    with pytest.raises(OrderError, match=r"5 rings at 1000\.0, 1446\.9, 1814\.6, 2147\.4, 2463\.0 px \(ratios "
                                         r"1:1\.447:1\.815:2\.147:2\.463\) match no AgBh reflection set at 1 A"):
        assign_orders(r * 1000 / r[0], CALIBRANTS["AgBh"], 1.0)
