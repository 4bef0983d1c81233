"""A mask made from the frames themselves, and the cause of every masked pixel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from saxs_pipeline.ops.calibrants import CALIBRANTS
from saxs_pipeline.ops.datamask import BEAMSTOP, CAUSES, DEAD, GAP, HOT, mask_from_frames

from calibrantframes import EIGER2_4M, PILATUS_1M, Scene, make_frame, make_geometry
from realdata import require


def _coverage(frame, mask):
    masked = ~mask.valid
    return ({k: float(masked[getattr(frame, k)].mean()) for k in ("gaps", "beamstop", "hot", "dead")},
            float(masked[frame.good].mean()))


@pytest.mark.parametrize(("det", "centre", "hint"), [
    (PILATUS_1M, (520.3, 490.6), "centre"),  # a voted centre 1 px off, no geometry yet
    (PILATUS_1M, (900.0, 120.0), "geometry"),
    (EIGER2_4M, (1300.0, 900.0), "geometry"),  # uint32: gaps are 2^32 - 1
])
def test_generated_mask_covers_every_bad_pixel_and_few_good_ones(det, centre, hint) -> None:
    # the criterion: >= 99 % of gap, beam-stop, hot and dead pixels masked, <= 1 %
    # of the good pixels
    g = make_geometry(det, distance_mm=1000.0, wavelength_a=1.0, center_yx=centre, tilt_deg=1.0)
    scene = Scene(oversampling=1) if det is EIGER2_4M else Scene()
    frame = make_frame(det, g, CALIBRANTS["AgBh"], np.random.default_rng(4), scene)
    kw = {"geometry": g} if hint == "geometry" else {"centre_uv": (centre[1] + 0.8, det.shape[0] - centre[0] - 0.6)}
    mask = mask_from_frames([frame.image], **kw)
    bad, good = _coverage(frame, mask)
    print(det.name, bad, good, mask.counts)
    assert min(bad.values()) >= 0.99
    assert good <= 0.01
    assert (mask.cause[frame.hot] == HOT).mean() > 0.9 and (mask.cause[frame.gaps] == GAP).all()
    assert (mask.cause[frame.beamstop & ~frame.gaps] == BEAMSTOP).mean() > 0.9  # gaps win over the stop


def test_dead_and_hot_are_judged_over_all_frames() -> None:
    # a pixel zero in one frame only is Poisson, not dead; a zinger in one frame of three
    # still counts as hot in their sum (it would spoil the sum)
    rng = np.random.default_rng(5)
    frames = [rng.poisson(200, (120, 130)).astype(np.int32) for _ in range(3)]
    frames[0][10, 10] = 0
    for f in frames:
        f[20, 20] = 0
    frames[1][30, 30] = 50_000
    mask = mask_from_frames(frames, centre_uv=(65.0, 60.0), shadows=False)
    assert mask.cause[20, 20] == DEAD and mask.cause[10, 10] == 0 and mask.cause[30, 30] == HOT
    assert mask.counts["dead"] == 1 and mask.counts["hot"] == 1


def test_detector_pixel_mask_and_shape_checks() -> None:
    frame = np.full((50, 60), 100, np.int32)
    det = np.zeros((50, 60), bool)
    det[5, 5] = True
    mask = mask_from_frames([frame], detector_mask=det, centre_uv=(30.0, 25.0), shadows=False)
    assert CAUSES[int(mask.cause[5, 5])] == "detector mask"
    with pytest.raises(ValueError, match=r"frame 1 has shape 50 x 61, frame 0 50 x 60"):
        mask_from_frames([frame, np.zeros((50, 61), np.int32)])
    with pytest.raises(ValueError, match=r"the frames' shape 50 x 60 differs from the detector mask's 60 x 50"):
        mask_from_frames([frame], detector_mask=np.zeros((60, 50), bool))


def test_buffer_frame_mask_reproduces_fit2d_in_its_region() -> None:
    # buf1_00000.tif masked from its own data (gaps, beam-stop shadow, hot/dead pixels) and
    # integrated with cal_flat.json's geometry against FIT2D's curve, 0.2 < q < 6.3 nm^-1.
    # This frame is anisotropic: its top module row is 20-30 % brighter at q < 2 nm^-1
    # (parasitic scattering around the beam stop), so the beamline's hand mask keeps only
    # the lower "V" of the detector and FIT2D's curve is that region's. We take from the
    # hand mask only that region's outline (every gap, bad pixel and the beam-stop edge
    # inside it filled back in) and let our mask do all the pixel work inside it: the
    # issue's tolerance 2e-3 (the hand mask itself: 7.3e-4 on this range and grid).
    from saxs_pipeline.config.calibration import Polarization, load_calibration
    from saxs_pipeline.config.masks import load_mask
    from saxs_pipeline.frames.tiff import read_image
    from saxs_pipeline.ops.integrate import integrate
    from saxs_pipeline.ops.operator import build_operator

    cal = load_calibration(require("cal_flat.json"))
    image = read_image(require("buf1_00000.tif"))
    fit2d = np.loadtxt(require("buf1_00000.chi"), skiprows=4)
    hand = load_mask(cal, cal.masks[0])
    mask = mask_from_frames([image], geometry=cal.geometry)
    # the V's outline: per column the first row the hand mask keeps (interpolated over gaps)
    first = np.argmax(hand, axis=0).astype(float)
    cols = np.arange(image.shape[1])
    keep = hand.any(axis=0) & ~(mask.cause == GAP).all(axis=0)
    region = np.arange(image.shape[0])[:, None] >= np.interp(cols, cols[keep], first[keep])[None, :]
    assert (region & ~hand).sum() > 50_000  # the hand mask's pixel work we leave to ours

    def median_rel(valid):
        op = build_operator(cal.geometry, dataclasses.replace(cal.masks[0], oversampling=3), valid,
                            Polarization(0.995, 0.0))
        mean = integrate(op, image)
        ok = ~np.isnan(mean)
        ours = np.interp(fit2d[:, 0], op.radial[ok], mean[ok])
        q = fit2d[:, 0]
        use = (fit2d[:, 1] > 0) & (q > 0.2) & (q < 6.3)
        return float(np.median(np.abs(ours[use] / fit2d[use, 1] - 1)))

    ours = median_rel(mask.valid & region)
    whole = median_rel(mask.valid)
    print(f"vs FIT2D: data mask in the V {ours:.2e}; whole frame {whole:.2e}; counts {mask.counts}")
    assert ours <= 2e-3
    assert mask.counts["beam stop"] > 10_000 and mask.counts["module gap"] == 73_533
