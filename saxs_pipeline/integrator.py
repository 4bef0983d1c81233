"""Everything one frame needs: the operators of a calibration and how to write its curves.

An :class:`Integrator` is built once per calibration (operators from the cache when
possible) and reused for every frame; it is what the Dask worker plugin holds. Per-frame
normalisation (``Normalisation``: monitor, transmission, ...) enters as the ``scale`` of
:meth:`Integrator.integrate`, the frame's
:attr:`~saxs_pipeline.config.normalisation.FrameNormalisation.multiplier`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.config.calibration import Calibration, load_calibration
from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.config.darkflat import CorrectionImages, load_correction_images
from saxs_pipeline.config.masks import load_mask
from saxs_pipeline.curves import chi
from saxs_pipeline.ops import corrections as corr
from saxs_pipeline.ops import integrate as integ
from saxs_pipeline.ops.operator import IntegrationOperator, cached_operator
from saxs_pipeline.ops.slices import SliceOperator, build_slice, integrate_slice, slice_labels
from saxs_pipeline.ops.sums import BinSums, frame_sums, scaled_sums

__all__ = ["Curve", "Integrator", "chi_suffix", "definitions"]

log = logging.getLogger(__name__)


SUMMED_DEFINITIONS = {
    "I": "s sum_p A[p,k] (x_p - d_p) / sum_p A[p,k] c_p: the summed signal over the summed "
         "normalisation (pyFAI's definition), A the area fraction of pixel p in bin k, d the "
         "dark, c = flat * solid angle * sensor efficiency * polarization factor (1 where not "
         "configured), s the frame's normalisation multiplier",
    "std": "s sqrt(sum_p A (x_p - d_p - c_p back_p)^2 / sum_p A c_p^2), back_p = sum_k A[p,k] "
           "I_k / s: the weighted standard deviation of the normalised pixel values in a bin",
}
SUMMED_ERRORS = {
    "poisson": "s sqrt(sum_p A[p,k]^2 (x_p + v_p)) / sum_p A[p,k] c_p, v = max(d, 0) / N the "
               "variance of a dark averaged over N exposures: the Poisson standard error",
    "saxsdog": "s sqrt(sum_p A[p,k] (x_p + v_p)) / sum_p A[p,k] c_p, v the dark's variance: the "
               "original's Poisson error formula with the summed normalisation",
}


def _scale(scale: float) -> float:
    s = float(scale)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"a frame's scale must be a positive finite number, not {scale!r}")
    return s


def definitions(cal: Calibration, error_model: str | None = None) -> dict[str, str]:
    """:meth:`Integrator.definitions` of calibration ``cal`` (its ErrorModel by default)."""
    error_model = error_model or cal.error_model
    if cal.summed_normalisation:
        return dict(SUMMED_DEFINITIONS, poisson=SUMMED_ERRORS[error_model])
    return {
        "I": "s sum_p W[k,p] x_p / sum_p A[p,k]: mean counts per pixel, W = A c with A the "
             "area fraction of pixel p in bin k and c = 1/polarization factor (or 1)",
        "poisson": "s " + integ.ERROR_MODELS[error_model],
        "std": "s sqrt(sum_p W[k,p] (x_p - back_p)^2 / sum_p A[p,k]), back_p = sum_k W[k,p] I_k: "
               "the original Saxsdog's weighted standard deviation of the pixels in a bin",
    }


def chi_suffix(kind: str, calnum: int) -> str:
    """File-name suffix: none for the first calibration, ``_cR1``/``_cS2`` after."""
    return "" if calnum == 0 else f"_c{kind[0]}{calnum}"


@dataclass(frozen=True)
class Curve:
    """One integrated curve of one frame. ``calnum`` is the index in the combined list of
    masks then slices (it picks the ``.chi`` suffix); ``kind`` is "Radial" or "Slice"
    (Phi-mode masks are "Radial" entries with ``phi=True``, as in the original). A cake
    (``AzimuthBins``) is a "Radial" entry with ``chi`` (its azimuth bin centres, deg):
    ``mean``/``poisson``/``std`` are flat ``(chi, q)`` in C order, see :attr:`shape`."""

    kind: str
    calnum: int
    radial: np.ndarray
    mean: np.ndarray
    poisson: np.ndarray
    std: np.ndarray | None
    integparams: dict[str, float]
    labels: list[str]
    phi: bool = False
    chi: np.ndarray | None = None
    sums: BinSums | None = None  # the per-bin sums (StoreSums), of the scaled frame

    @property
    def shape(self) -> tuple[int, ...]:
        """``(q,)``, or ``(chi, q)`` for a cake."""
        n = int(np.size(self.radial))
        return (n,) if self.chi is None else (int(np.size(self.chi)), n)

    @property
    def key(self) -> str:
        """The original's history key: first letter of the kind and calnum ("R0", "S2")."""
        return f"{self.kind[0]}{self.calnum}"

    def suffix(self) -> str:
        return chi_suffix(self.kind, self.calnum)

    def scaled(self, scale: float) -> Curve:
        """This curve with intensity and errors multiplied by ``scale`` (the frame's
        normalisation multiplier); I0/I1/I2 follow the intensity."""
        if scale == 1.0:
            return self
        return dataclasses.replace(
            self, mean=self.mean * scale, poisson=self.poisson * scale,
            std=None if self.std is None else self.std * scale,
            integparams={k: v * scale for k, v in self.integparams.items()},
            sums=None if self.sums is None else scaled_sums(self.sums, scale))

    def to_graph(self, config: dict[str, Any], mask_config: dict[str, Any] | None) -> dict[str, Any]:
        """The dict the original's ``integratechi`` returned (what ``plot`` replies carry)."""
        mean, err = np.reshape(self.mean, self.shape), np.reshape(self.poisson, self.shape)
        graph: dict[str, Any] = {
            # a cake: I and its error as (chi, q) nested lists, chi its bin centres (deg)
            "array": [self.radial.tolist(), mean.tolist(), err.tolist()],
            "columnLabels": self.labels,
            "kind": self.kind,
            "conf": config,
        }
        if self.chi is not None:
            graph["chi"] = self.chi.tolist()
        if self.kind == "Radial":
            graph["mask"] = mask_config
            graph["Integparam"] = self.integparams
        else:
            graph["slice"] = mask_config
        return graph


class Integrator:
    """Operators of one calibration: radial/phi masks first, then slices (the original's
    order, which numbers the output files).

    With the summed-normalisation definition (``IntensityDefinition``, implied by any of
    ``Dark``/``Flat``/``SolidAngle``/``Sensor``) the dark and flat are read from the
    calibration's files, or taken from ``correction_images`` (e.g. read once by a driver
    and shipped to workers that do not see its paths); pixels the dark marks unusable
    are masked. ``pixels`` then holds the per-pixel arrays and ``corrections`` the
    per-operator constants (None entries with the original definition)."""

    def __init__(
        self,
        calibration: Calibration | dict[str, Any] | str | Path,
        attachments: Sequence[dict[str, Any] | None] | None = None,
        *,
        cache_dir: str | Path | None | bool = None,
        with_std: bool = True,
        error_model: str | None = None,
        correction_images: CorrectionImages | None = None,
    ) -> None:
        cal = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
        self.calibration = cal
        self.with_std = with_std
        # The .chi error column: the calibration's ErrorModel, else the Poisson error of the
        # weighted mean (the original's is ~20 % too large where pixels are split).
        self.error_model = error_model or cal.error_model
        if self.error_model not in integ.ERROR_MODELS:
            raise ValueError(f"error_model must be one of {sorted(integ.ERROR_MODELS)}, "
                             f"not {self.error_model!r}")
        attachments = list(attachments or [])
        images = None
        if cal.summed_normalisation:
            images = correction_images or load_correction_images(cal)
            for key, image in (("Dark", images.dark), ("Flat", images.flat)):
                if image is not None and image.shape != self.shape:
                    raise CalibrationError("calibration", f"$.{key}", f"image of shape "
                                           f"{image.shape}, Imagesize is {list(self.shape)}")
        self.valid = []
        for i, mc in enumerate(cal.masks):
            valid = load_mask(cal, mc, attachments[i] if i < len(attachments) else None)
            if images is not None and images.dark is not None:
                valid = valid & np.isfinite(images.dark)
            self.valid.append(valid)
        self.pixels = None if images is None else self._pixel_corrections(images)
        # In the summed normalisation the polarization is part of c, not of the weights.
        pol = None if cal.summed_normalisation else cal.polarization
        self.operators: list[IntegrationOperator | None] = []
        self.corrections: list[corr.Corrections | None] = []
        for i, (mc, valid) in enumerate(zip(cal.masks, self.valid, strict=True)):
            # GISAXSmode skips the first radial mask entirely (keeps its mask for slices).
            op = None if i == 0 and cal.gisaxs_mode else cached_operator(
                cal.geometry, mc, valid, pol, cache_dir)
            self.operators.append(op)
            self.corrections.append(
                None if op is None or self.pixels is None else corr.corrections_for(op, self.pixels))
        for mc in cal.masks:
            if mc.store_sums and cal.summed_normalisation:
                raise CalibrationError("calibration", f"$.Masks[{mc.index}].StoreSums",
                                       "stored sums need the original intensity definition "
                                       "(no Dark, Flat, SolidAngle or Sensor)")
        self.slices: list[SliceOperator] = [
            build_slice(cal.geometry, sc, None if sc.mask_ref < 0 else self.valid[sc.mask_ref])
            for sc in cal.slices
        ]

    def _pixel_corrections(self, images: CorrectionImages) -> corr.PixelCorrections:
        cal = self.calibration
        flat = images.flat
        if flat is not None:
            used = np.logical_or.reduce(self.valid)
            try:
                flat = corr.normalised_flat(flat, used, str(cal.resolve(cal.flat or "flat")))
            except ValueError as exc:
                raise CalibrationError("calibration", "$.Flat", str(exc)) from None
        return corr.pixel_corrections(
            cal.geometry, polarization=cal.polarization, solid_angle=cal.solid_angle,
            sensor=cal.sensor, flat=flat, dark=images.dark, dark_exposures=images.dark_exposures)

    @property
    def shape(self) -> tuple[int, int]:
        return self.calibration.geometry.image_shape

    def check_shape(self, image: np.ndarray, source: str = "frame") -> None:
        if image.shape != self.shape:
            raise ValueError(
                f"{source} has shape {image.shape} but Imagesize is {list(self.shape)}"
            )

    def integrate(self, image: np.ndarray, scale: float = 1.0, *,
                  invalid: float | None = None) -> list[Curve]:
        """All curves of one frame, intensities and errors multiplied by ``scale`` (the
        frame's normalisation multiplier, AbsoluteScale / (Monitor * Transmission *
        ExposureTime * Thickness); 1 = none). Pixels equal to ``invalid`` (an EIGER's
        2**32 - 1) are excluded like negative ones."""
        self.check_shape(image)
        scale = _scale(scale)
        curves: list[Curve] = []
        for i, (mc, op, cor) in enumerate(zip(self.calibration.masks, self.operators,
                                              self.corrections, strict=True)):
            if op is None:
                continue
            if cor is not None:
                r = integ.integrate_corrected(op, image, cor, error_model=self.error_model,
                                              with_std=self.with_std, invalid=invalid)
                mean, poisson, std = r.mean, r.poisson, r.std
            elif self.with_std:
                r = integ.integrate_error(op, image, error_model=self.error_model, invalid=invalid)
                mean, poisson, std = r.mean, r.poisson, r.std
            else:
                mean, poisson = integ.integrate_poisson(op, image, error_model=self.error_model,
                                                        invalid=invalid)
                std = None
            curve = self._radial_curve(i, mc, op, mean, poisson, std)
            if mc.store_sums:
                curve = dataclasses.replace(curve, sums=frame_sums(op, image, invalid=invalid))
            curves.append(curve.scaled(scale))
        curves.extend(c.scaled(scale) for c in self._slice_curves(image))
        return curves

    def integrate_many(
        self, images: Sequence[np.ndarray], scales: Sequence[float] | None = None, *,
        invalid: float | None = None,
    ) -> list[list[Curve]]:
        """Curves of several frames, each multiplied by its entry of ``scales`` (default
        1); without the standard deviation the radial curves come from
        :func:`~saxs_pipeline.ops.integrate.integrate_batch` per mask."""
        scales = [1.0] * len(images) if scales is None else [_scale(s) for s in scales]
        if len(scales) != len(images):
            raise ValueError(f"{len(scales)} scales for {len(images)} frames")
        if self.with_std or len(images) < 2:
            return [self.integrate(img, s, invalid=invalid)
                    for img, s in zip(images, scales, strict=True)]
        for img in images:
            self.check_shape(img)
        per_frame: list[list[Curve]] = [[] for _ in images]
        for i, (mc, op, cor) in enumerate(zip(self.calibration.masks, self.operators,
                                              self.corrections, strict=True)):
            if op is None:
                continue
            means, errs = integ.integrate_batch(op, images, error_model=self.error_model,
                                                invalid=invalid, corrections=cor)
            for f in range(len(images)):
                curve = self._radial_curve(i, mc, op, means[f], errs[f], None)
                if mc.store_sums:
                    curve = dataclasses.replace(curve, sums=frame_sums(op, images[f], invalid=invalid))
                per_frame[f].append(curve.scaled(scales[f]))
        for f, img in enumerate(images):
            per_frame[f].extend(c.scaled(scales[f]) for c in self._slice_curves(img))
        return per_frame

    def _radial_curve(self, i, mc, op, mean, poisson, std) -> Curve:
        if op.kind == "Cake":
            # The integral parameters are those of a 1-D curve: 0 as for Phi-mode and slices.
            zero = {"I0": 0.0, "I1": 0.0, "I2": 0.0}
            centres = 0.5 * (op.chi_edges[:-1] + op.chi_edges[1:])
            return Curve("Radial", i, op.radial[: op.nrad], mean, poisson, std, zero,
                         list(chi.RADIAL_LABELS), False, centres)
        if mc.phi_mode:
            params = {"I0": 0.0, "I1": 0.0, "I2": 0.0}
            labels = chi.PHI_LABELS
        else:
            params = integ.integral_parameters(op.radial, mean, mc.q_start, mc.q_stop, op.edges)
            labels = chi.RADIAL_LABELS
        return Curve("Radial", i, op.radial, mean, poisson, std, params, list(labels), mc.phi_mode)

    def _slice_curves(self, image: np.ndarray) -> list[Curve]:
        offset = len(self.calibration.masks)
        curves = []
        for j, sop in enumerate(self.slices):
            mean, err = integrate_slice(sop, image, self.pixels)
            curves.append(
                Curve("Slice", offset + j, sop.axis, mean, err, None,
                      {"I0": 0.0, "I1": 0.0, "I2": 0.0}, slice_labels(sop.config))
            )
        return curves

    def write_chi(self, curves: Sequence[Curve], basename: str | Path) -> list[Path]:
        """Write ``basename<suffix>.chi`` for every curve but cakes (a 2-D I(q, chi) has
        no .chi form: the curve stack holds it); returns the paths."""
        config_json = self.calibration.to_json()
        paths = []
        for c in curves:
            if c.chi is not None:
                continue
            path = Path(f"{basename}{c.suffix()}.chi")
            if c.kind == "Slice":
                chi.write_slice_chi(path, c.radial, c.mean, c.poisson, config_json=config_json, labels=c.labels)
            else:
                chi.write_chi(path, c.radial, c.mean, c.poisson, config_json=config_json,
                              integparams=c.integparams, labels=c.labels)
            paths.append(path)
        return paths

    def definitions(self) -> dict[str, str]:
        """Column name -> definition text of the radial curves (for zarr attributes); all
        columns are multiplied by the frame's normalisation multiplier ``s`` (1 without
        ``Normalisation``)."""
        return definitions(self.calibration, self.error_model)

    def output_suffixes(self) -> list[str]:
        """The ``.chi`` suffixes this calibration writes, in order (for resume checks)."""
        n_masks = len(self.calibration.masks)
        suffixes = [chi_suffix("Radial", i) for i, op in enumerate(self.operators)
                    if op is not None and op.kind != "Cake"]
        return suffixes + [chi_suffix("Slice", n_masks + j) for j in range(len(self.slices))]
