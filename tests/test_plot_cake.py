"""Drawing a cake I(q, chi) as an image (plot.draw_cake), written to a real PNG."""

from __future__ import annotations

import numpy as np
import pytest

from saxs_pipeline.curves.plot import draw_cake, new_figure, save_figure


def test_cake_is_drawn_as_an_image(tmp_path) -> None:
    q, chi = np.linspace(0.1, 3, 50), np.linspace(-175, 175, 36)
    z = np.exp(-q)[None, :] * (2 + np.cos(np.radians(chi)))[:, None]
    z[:3] = np.nan  # empty cells stay blank
    fig = new_figure()
    ax = fig.add_subplot()
    image = draw_cake(ax, q, chi, z)
    assert image.get_array().shape == (36, 50)
    np.testing.assert_allclose(image.get_extent(), [q[0] - 0.5 * (q[1] - q[0]), q[-1] + 0.5 * (q[1] - q[0]),
                                                    -180, 180])
    path = save_figure(fig, tmp_path / "cake.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"\(chi, q\)"):
        draw_cake(ax, q, chi, z.T)
