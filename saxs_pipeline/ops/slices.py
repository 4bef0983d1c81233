"""GISAXS line cuts ("Slices"): the mean of a band of rows or columns on a q axis.

Band (as the original, verified numerically): Direction "x" averages numpy rows
``[Ny - CP - CM, Ny - CP + CM]`` (CutPosition = 1-based row counted from the bottom, FIT2D
Y); Direction "y" averages columns ``[CP - 1 - CM, CP - 1 + CM]`` (1-based column from the
left). Output: ``mean = sum/count`` and ``err = sqrt(sum)/count`` of the used pixels per
line position, NaN where no pixel is used. With the summed-normalisation definition
(:mod:`saxs_pipeline.ops.corrections`): ``mean = sum (x - d) / sum c`` and
``err = sqrt(sum (x + v)) / sum c``.

Bugs of the original fixed here: the q axis uses pixel centres (k + 0.5, as the radial
code); each axis uses its own pixel size (the original always used PixelSizeMicroM[1]);
``MaskRef = -1`` means no mask (the original built an all-zero mask of transposed shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saxs_pipeline.config.calibration import Geometry, SliceConfig
from saxs_pipeline.ops.corrections import PixelCorrections
from saxs_pipeline.ops.geometry import ANGSTROM_NM

__all__ = ["SliceOperator", "build_slice", "integrate_slice", "slice_labels"]


@dataclass(frozen=True)
class SliceOperator:
    config: SliceConfig
    axis: np.ndarray  # q_h or q_v in nm^-1, one per line position
    band: tuple[slice, slice]  # numpy index of the band
    reduce_axis: int  # axis of the band that is averaged away
    valid: np.ndarray  # band-shaped bool, pixels used
    count: np.ndarray  # used pixels per line position


def slice_labels(config: SliceConfig) -> list[str]:
    if config.plane == "Vertical":
        first = "vertical scattering Vector $q_{v} [nm^{-1}]$"
    else:
        first = "horizontal scattering vector $ q_{h} [nm^{-1}]$"
    return [first, "Intensity (Count/Pixel)", "Error Margin"]


def build_slice(geometry: Geometry, config: SliceConfig, valid: np.ndarray | None) -> SliceOperator:
    rows, cols = geometry.image_shape
    cp, cm = config.cut_position, config.cut_margin
    if config.direction == "x":
        lo, hi = rows - cp - cm, rows - cp + cm + 1
        if lo < 0 or hi > rows:
            raise ValueError(f"slice {config.index}: rows {lo}..{hi - 1} of the band are outside the image")
        band = (slice(lo, hi), slice(0, cols))
        reduce_axis, n = 0, cols
    else:
        lo, hi = cp - 1 - cm, cp + cm
        if lo < 0 or hi > cols:
            raise ValueError(f"slice {config.index}: columns {lo}..{hi - 1} of the band are outside the image")
        band = (slice(0, rows), slice(lo, hi))
        reduce_axis, n = 1, rows
    band_valid = (
        np.ones((band[0].stop - band[0].start, band[1].stop - band[1].start), dtype=bool)
        if valid is None
        else np.asarray(valid, dtype=bool)[band]
    )
    return SliceOperator(
        config=config,
        axis=_q_axis(geometry, config, n),
        band=band,
        reduce_axis=reduce_axis,
        valid=band_valid,
        count=band_valid.sum(axis=reduce_axis),
    )


def _q_axis(geometry: Geometry, config: SliceConfig, n: int) -> np.ndarray:
    rows, _ = geometry.image_shape
    d = geometry.distance_mm
    psy, psx = (s * 1e-3 for s in geometry.pixel_size_um)
    k = np.arange(n) + 0.5
    # Along columns the beam is at BeamCenter[1]; along rows at Ny - BeamCenter[0].
    if config.direction == "x":
        offset_mm = (k - geometry.beam_center_x) * psx
    else:
        offset_mm = (k - (rows - geometry.beam_center_y)) * psy
    two_pi_over_lambda = 2 * np.pi / (geometry.wavelength_a * ANGSTROM_NM)
    if config.plane == "Vertical":
        alpha_f = np.arctan(offset_mm / d)
        alpha_i = np.deg2rad(config.incident_angle_deg)
        return -two_pi_over_lambda * (np.sin(alpha_f) + np.sin(alpha_i))
    two_theta_f = np.arctan(offset_mm / d)
    return 2 * two_pi_over_lambda * np.sin(two_theta_f / 2)


def integrate_slice(
    op: SliceOperator, image: np.ndarray, pixels: PixelCorrections | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and error of the band per line position; negative pixels count as masked.
    With ``pixels``, the summed-normalisation definition (module doc)."""
    image = np.asarray(image)
    band = image[op.band]
    used = op.valid & (band >= 0)

    def band_sum(values) -> np.ndarray:
        return np.where(used, values, 0).sum(axis=op.reduce_axis, dtype=np.float64)

    if pixels is None:
        total = variance = band_sum(band)
        count = used.sum(axis=op.reduce_axis)
    else:
        def part(arr: np.ndarray | None) -> np.ndarray | float:
            return 0.0 if arr is None else arr.reshape(image.shape)[op.band]

        total = band_sum(band - part(pixels.dark))
        variance = band_sum(band + part(pixels.dark_variance))
        count = band_sum(part(pixels.normalisation))
    mean = np.full(total.shape, np.nan)
    err = np.full(total.shape, np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    np.divide(np.sqrt(np.maximum(variance, 0)), count, out=err, where=count > 0)
    return mean, err
