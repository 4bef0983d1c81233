"""The beam centre voted by ring gradients, with no geometry."""

from __future__ import annotations

import numpy as np
import pytest

from saxs_pipeline.ops.beamcentre import vote_centre
from saxs_pipeline.ops.calibrants import CALIBRANTS

from calibrantframes import PILATUS_1M, Scene, make_frame, make_geometry


@pytest.mark.parametrize(("centre", "tilt"), [((520.3, 490.6), 0.0), ((950.0, 40.0), 3.0), ((-30.0, 1000.0), 0.0)])
def test_vote_lands_near_the_beam_even_near_or_past_a_corner(centre, tilt) -> None:
    # coarse by design: within 3 px is what the ring fits after it need (they search
    # +-8 px or more); a centre 30 px outside the detector still collects its arcs' votes
    g = make_geometry(PILATUS_1M, distance_mm=700.0, wavelength_a=1.0, center_yx=centre, tilt_deg=tilt)
    frame = make_frame(PILATUS_1M, g, CALIBRANTS["AgBh"], np.random.default_rng(2), Scene(n_hot=200))
    vote = vote_centre(frame.image.astype(float), frame.image >= 0)
    assert vote is not None
    assert abs(vote.u - centre[1]) < 3.0 and abs(vote.v - (1043 - centre[0])) < 3.0


def test_no_edges_no_vote() -> None:
    assert vote_centre(np.zeros((100, 100)), np.zeros((100, 100), bool)) is None
