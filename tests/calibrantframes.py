"""Calibrant frames with known geometry for the calibration tests and benchmark.

A frame is the expected counts of a powder calibrant (Gaussian rings in 2theta on a
smooth background), sampled on sub-pixels with the pipeline's own q map
(:func:`saxs_pipeline.ops.geometry.q_map`, so the generated frame and the integration
agree on the FIT2D convention), averaged per pixel, shadowed by a beam stop with its arm,
drawn as Poisson counts, and given the detector's module gaps, hot and dead pixels.

A scene can also carry what a real SAXS frame has around its first rings: small-angle
scattering falling as a power of q, a halo of parasitic scattering just outside the beam
stop, and a beam footprint (a Gaussian of given sigma per axis) that smears the whole
pattern -- each point of the beam's cross-section draws the rings about its own centre,
so the frame is the point pattern convolved with the footprint.
Truth masks of every category come with it, so a test can score a generated mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from saxs_pipeline.ops import geometry as geo
from saxs_pipeline.ops.calibrants import Calibrant


@dataclass(frozen=True)
class Detector:
    """A modular detector: shape (rows, cols), pixel size (um), module size and the gaps
    between modules (rows, cols), the dtype and the value the detector writes into gaps."""

    name: str
    shape: tuple[int, int]
    pixel_um: float
    module: tuple[int, int]
    gap: tuple[int, int]
    dtype: type
    invalid: int

    def gap_mask(self) -> np.ndarray:
        rows, cols = self.shape
        mask = np.zeros(self.shape, dtype=bool)
        for axis, (size, gap, n) in enumerate(zip(self.module, self.gap, self.shape, strict=True)):
            pitch = size + gap
            idx = np.arange(n)
            line = (idx % pitch) >= size
            if axis == 0:
                mask[line, :] = True
            else:
                mask[:, line] = True
        return mask


# Pilatus 1M: 2 x 5 modules of 487 x 195 px, gaps 7 px between columns of modules and 17 px
# between rows; gaps read -1 in its int32 frames.
PILATUS_1M = Detector("Pilatus 1M", (1043, 981), 172.0, (195, 487), (17, 7), np.int32, -1)
# EIGER2 4M: 2 x 4 modules of 1028 x 512 px, gaps 12 px / 38 px; uint32 frames mark gaps
# with the type's maximum.
EIGER2_4M = Detector("EIGER2 4M", (2162, 2068), 75.0, (512, 1028), (38, 12), np.uint32, 2**32 - 1)
# A small crop (no module gaps) for the many noise realisations of the uncertainty test.
CROP = Detector("crop", (400, 420), 172.0, (400, 420), (0, 0), np.int32, -1)


@dataclass(frozen=True)
class Scene:
    """What the frame shows besides its geometry."""

    ring_counts: float = 400.0  # peak counts of the first ring (per pixel)
    ring_decay: float = 0.8  # each further ring has this fraction of the previous one's peak
    ring_width_px: float = 1.5  # Gaussian sigma of a ring, in radial pixels
    ring_eta: float = 0.0  # Lorentzian fraction of a pseudo-Voigt ring of the same FWHM (0: Gaussian)
    background: float = 60.0  # diffuse counts per pixel at the beam, falling off with 2theta
    background_floor: float = 20.0
    beamstop_px: float = 25.0  # radius of the round beam stop
    arm_deg: float | None = 100.0  # direction of the arm (azimuth, deg) or None
    arm_px: float = 12.0  # width of the arm
    n_hot: int = 40
    n_dead: int = 40
    oversampling: int = 2
    saxs_counts: float = 0.0  # small-angle scattering: counts per pixel at saxs_ref_px from the beam ...
    saxs_ref_px: float = 100.0
    saxs_power: float = 3.0  # ... falling as (radius / saxs_ref_px)^-saxs_power
    halo_counts: float = 0.0  # parasitic scattering at the beam stop's edge ...
    halo_px: float = 15.0  # ... falling exponentially with this length outside it
    beam_sigma_px: tuple[float, float] = (0.0, 0.0)  # the beam footprint's sigma (rows, columns) in px


# A scene like the real Pilatus AgBh frame (agbeh2_1M.tif, 835 mm, 1.54 A): small-angle
# scattering falling as q^-3 from ~2000 counts inside the first ring, a halo round the
# beam stop, rings 3 px wide with Lorentzian tails and a beam footprint of 6.6 x 0.7 px
# (the real rings are 7 px wide at their sides and 3 px at top and bottom), peaks from
# 60000 counts falling by ~0.45 per order on a floor of 750, the stop's arm going up.
AGBH_LIKE = Scene(ring_counts=60_000.0, ring_decay=0.45, ring_width_px=3.0, ring_eta=0.3, background=0.0,
                  background_floor=750.0, saxs_counts=2000.0, saxs_power=3.0, halo_counts=5000.0, halo_px=10.0,
                  beamstop_px=35.0, arm_deg=270.0, arm_px=20.0, beam_sigma_px=(0.7, 6.6), oversampling=1)


@dataclass
class Frame:
    image: np.ndarray
    expected: np.ndarray
    geometry: geo.Geometry
    gaps: np.ndarray
    beamstop: np.ndarray
    hot: np.ndarray
    dead: np.ndarray
    rings_in_view: int
    extra: dict = field(default_factory=dict)

    @property
    def good(self) -> np.ndarray:
        return ~(self.gaps | self.beamstop | self.hot | self.dead)


def make_geometry(det: Detector, *, distance_mm: float, wavelength_a: float, center_yx: tuple[float, float],
                  tilt_deg: float = 0.0, rot_deg: float = 0.0) -> geo.Geometry:
    return geo.Geometry(beam_center_y=center_yx[0], beam_center_x=center_yx[1], distance_mm=distance_mm,
                        pixel_size_um=(det.pixel_um, det.pixel_um), image_shape=det.shape,
                        tilt_angle_deg=tilt_deg, tilt_rot_deg=rot_deg, wavelength_a=wavelength_a)


def agbh_like_geometry() -> geo.Geometry:
    """The real AgBh frame's fitted geometry (a fit of ours), for :data:`AGBH_LIKE`."""
    return make_geometry(PILATUS_1M, distance_mm=835.3, wavelength_a=1.54, center_yx=(804.74, 422.51),
                         tilt_deg=0.35, rot_deg=-148.0)


def expected_counts(g: geo.Geometry, calibrant: Calibrant, scene: Scene) -> tuple[np.ndarray, int]:
    """Pixel-averaged expected counts of the calibrant (no beam stop), and how many rings
    fall on the detector."""
    ov = scene.oversampling
    q = geo.q_map(g, ov)
    tth = 2.0 * np.arcsin(np.minimum(q / geo.q_scale(g.wavelength_a), 1.0))
    del q
    px = 1e-3 * 0.5 * sum(g.pixel_size_um)
    img = scene.background_floor + scene.background * np.exp(-tth / 0.02)
    lo, hi = float(tth.min()), float(tth.max())
    peak, n_in = scene.ring_counts, 0
    for refl, t in calibrant.visible(g.wavelength_a):
        # a ring of width ring_width_px at this angle: dr/d2theta = D / cos^2 2theta
        s = scene.ring_width_px * px * math.cos(t) ** 2 / g.distance_mm
        # a Lorentzian's tails reach much further than a Gaussian's
        reach = 6 * s if scene.ring_eta == 0 else 60 * s
        if lo - reach < t < hi + reach:
            near = np.abs(tth - t) < reach
            # a powder ring's counts per pixel carry the 1/q^2 of the powder average
            shell = (math.sin(t / 2) / np.sin(tth[near] / 2)) ** 2
            z = (tth[near] - t) / s
            profile = (1 - scene.ring_eta) * np.exp(-0.5 * z * z) + scene.ring_eta / (1 + z * z / (2 * math.log(2)))
            img[near] += peak * shell * profile
            n_in += int(lo < t < hi)
        peak *= scene.ring_decay
        del refl
    if scene.saxs_counts or scene.halo_counts:
        radius = g.distance_mm * np.tan(tth) / px
        # clipped inside the beam stop, whose shadow covers it anyway
        img += scene.saxs_counts * np.maximum(radius / scene.saxs_ref_px, 0.2) ** -scene.saxs_power
        img += scene.halo_counts * np.exp(-np.maximum(radius - scene.beamstop_px, 0.0) / scene.halo_px)
    if any(scene.beam_sigma_px):
        img = ndimage.gaussian_filter(img, [s * ov for s in scene.beam_sigma_px], mode="nearest")
    rows, cols = g.image_shape
    return img.reshape(rows, ov, cols, ov).mean(axis=(1, 3)), n_in


def beamstop_mask(g: geo.Geometry, scene: Scene) -> np.ndarray:
    rows, cols = g.image_shape
    u = np.arange(cols) + 0.5 - g.beam_center_x
    v = np.arange(rows) + 0.5 - (rows - g.beam_center_y)
    uu, vv = np.meshgrid(u, v)
    mask = uu * uu + vv * vv < scene.beamstop_px ** 2
    if scene.arm_deg is not None:
        a = math.radians(scene.arm_deg)
        along = uu * math.cos(a) + vv * math.sin(a)
        across = -uu * math.sin(a) + vv * math.cos(a)
        mask |= (along > 0) & (np.abs(across) < scene.arm_px / 2)
    return mask


def make_frame(det: Detector, g: geo.Geometry, calibrant: Calibrant, rng: np.random.Generator,
               scene: Scene = Scene(), expected: tuple[np.ndarray, int] | None = None) -> Frame:
    """A frame of ``calibrant`` seen with geometry ``g`` on ``det``; pass ``expected``
    (from :func:`expected_counts`) to draw another noise realisation cheaply."""
    clean, n_in = expected if expected is not None else expected_counts(g, calibrant, scene)
    stop = beamstop_mask(g, scene)
    lam = np.where(stop, 0.003 * clean + 0.2, clean)
    image = rng.poisson(lam).astype(np.int64)
    gaps = det.gap_mask()
    free = np.flatnonzero(~gaps & ~stop)
    picks = rng.choice(free, size=scene.n_hot + scene.n_dead, replace=False)
    hot = np.zeros(det.shape, dtype=bool)
    dead = np.zeros(det.shape, dtype=bool)
    hot.flat[picks[: scene.n_hot]] = True
    dead.flat[picks[scene.n_hot:]] = True
    image[hot] = rng.integers(20_000, 1_000_000, scene.n_hot)
    image[dead] = 0
    image[gaps] = det.invalid
    return Frame(image=image.astype(det.dtype), expected=lam, geometry=g, gaps=gaps, beamstop=stop,
                 hot=hot, dead=dead, rings_in_view=n_in)
