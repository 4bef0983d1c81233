"""Small synthetic set-ups shared by the engine tests (fast to build, tilted, off-centre)."""

from __future__ import annotations

import dataclasses

import numpy as np

from saxs_pipeline.config.calibration import Geometry, MaskConfig, Polarization

SMALL = Geometry(
    beam_center_y=40.3,
    beam_center_x=20.7,
    distance_mm=100.0,
    pixel_size_um=(172.0, 172.0),
    image_shape=(64, 48),
    tilt_angle_deg=5.0,
    tilt_rot_deg=30.0,
    wavelength_a=1.54,
)
POL = Polarization(fraction=0.9, angle_deg=20.0)


def mask_config(**kw) -> MaskConfig:
    return dataclasses.replace(MaskConfig(mask_file="none", oversampling=3), **kw)


def small_valid(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    valid = rng.random(SMALL.image_shape) > 0.15
    valid[20:24, :] = False  # a module gap
    return valid
