"""``saxsdog mask`` as a subprocess: a mask file our reader reads back, and its picture."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from saxs_pipeline.config.masks import read_mask
from saxs_pipeline.frames.tiff import write_pilatus_tiff
from saxs_pipeline.ops.calibrants import CALIBRANTS

from calibrantframes import PILATUS_1M, make_frame, make_geometry


def test_mask_of_a_frame_in_every_format(tmp_path) -> None:
    # >= 99 % of the gap, beam-stop, hot and dead pixels and <= 1 % of the good ones
    # masked (the figures), identical through .msk, .npy and .tif
    g = make_geometry(PILATUS_1M, distance_mm=1000.0, wavelength_a=1.0, center_yx=(520.3, 490.6))
    frame = make_frame(PILATUS_1M, g, CALIBRANTS["AgBh"], np.random.default_rng(31))
    write_pilatus_tiff(tmp_path / "f.tif", frame.image)
    masks = []
    for ext in ("msk", "npy", "tif"):
        args = [str(tmp_path / "f.tif"), "-o", str(tmp_path / f"m.{ext}")]
        if ext == "msk":
            args += ["--plot", str(tmp_path / "mask.png")]
        done = subprocess.run([sys.executable, "-m", "saxs_pipeline.cli.saxsdog", "mask", *args], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["counts"]["module gap"] == 73_533
        masks.append(read_mask(tmp_path / f"m.{ext}", PILATUS_1M.shape))
    assert all(np.array_equal(masks[0], m) for m in masks[1:])
    masked = ~masks[0]
    for name in ("gaps", "beamstop", "hot", "dead"):
        assert masked[getattr(frame, name)].mean() >= 0.99, name
    assert masked[frame.good].mean() <= 0.01
    assert (tmp_path / "mask.png").stat().st_size > 10_000


def test_a_mask_to_an_unknown_format_is_refused(tmp_path) -> None:
    np.save(tmp_path / "f.npy", np.zeros((10, 10)))
    write_pilatus_tiff(tmp_path / "f.tif", np.full((40, 40), 100, np.int32))
    done = subprocess.run([sys.executable, "-m", "saxs_pipeline.cli.saxsdog", "mask", str(tmp_path / "f.tif"), "-o",
                           str(tmp_path / "m.png")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "a mask is written as .msk, .npy or .tif" in done.stderr
