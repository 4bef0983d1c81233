"""Wedge spans and the check of one wedge (config/wedges.py)."""

from __future__ import annotations

import pytest

from saxs_pipeline.config.wedges import check_wedge, wedge_span


def test_span_runs_counter_clockwise_and_wraps() -> None:
    assert wedge_span(30, 70) == 40
    assert wedge_span(330, 30) == 60
    assert wedge_span(-15, 15) == 30
    assert wedge_span(10, 5) == 355
    assert wedge_span(0, 360) == 360


@pytest.mark.parametrize(("wedge", "reason"), [([5, 5], "start equals stop"), ([-360, 360], "spans 720")])
def test_invalid_wedges(wedge, reason) -> None:
    with pytest.raises(ValueError, match=reason):
        check_wedge(wedge)
    assert check_wedge([330, 30]) == (330.0, 30.0)
