"""Everything one frame needs: the operators of a calibration and how to write its curves.

An :class:`Integrator` is built once per calibration (operators from the cache when
possible) and reused for every frame; it is what the Dask worker plugin holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saxs_pipeline.io import chi
from saxs_pipeline.io.calibration import Calibration, load_calibration
from saxs_pipeline.io.masks import load_mask
from saxs_pipeline.ops import integrate as integ
from saxs_pipeline.ops.operator import IntegrationOperator, cached_operator
from saxs_pipeline.ops.slices import SliceOperator, build_slice, integrate_slice, slice_labels

__all__ = ["Curve", "Integrator", "chi_suffix"]

log = logging.getLogger(__name__)


def chi_suffix(kind: str, calnum: int) -> str:
    """File-name suffix: none for the first calibration, ``_cR1``/``_cS2`` after."""
    return "" if calnum == 0 else f"_c{kind[0]}{calnum}"


@dataclass(frozen=True)
class Curve:
    """One integrated curve of one frame. ``calnum`` is the index in the combined list of
    masks then slices (it picks the ``.chi`` suffix); ``kind`` is "Radial" or "Slice"
    (Phi-mode masks are "Radial" entries with ``phi=True``, as in the original)."""

    kind: str
    calnum: int
    radial: np.ndarray
    mean: np.ndarray
    poisson: np.ndarray
    std: np.ndarray | None
    integparams: dict[str, float]
    labels: list[str]
    phi: bool = False

    @property
    def key(self) -> str:
        """The original's history key: first letter of the kind and calnum ("R0", "S2")."""
        return f"{self.kind[0]}{self.calnum}"

    def suffix(self) -> str:
        return chi_suffix(self.kind, self.calnum)

    def to_graph(self, config: dict[str, Any], mask_config: dict[str, Any] | None) -> dict[str, Any]:
        """The dict the original's ``integratechi`` returned (what ``plot`` replies carry)."""
        err = self.poisson
        graph: dict[str, Any] = {
            "array": [self.radial.tolist(), self.mean.tolist(), err.tolist()],
            "columnLabels": self.labels,
            "kind": self.kind,
            "conf": config,
        }
        if self.kind == "Radial":
            graph["mask"] = mask_config
            graph["Integparam"] = self.integparams
        else:
            graph["slice"] = mask_config
        return graph


class Integrator:
    """Operators of one calibration: radial/phi masks first, then slices (the original's
    order, which numbers the output files)."""

    def __init__(
        self,
        calibration: Calibration | dict[str, Any] | str | Path,
        attachments: Sequence[dict[str, Any] | None] | None = None,
        *,
        cache_dir: str | Path | None | bool = None,
        with_std: bool = True,
        error_model: str | None = None,
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
        self.valid = []
        self.operators: list[IntegrationOperator | None] = []
        for i, mc in enumerate(cal.masks):
            att = attachments[i] if i < len(attachments) else None
            valid = load_mask(cal, mc, att)
            self.valid.append(valid)
            if i == 0 and cal.gisaxs_mode:
                # GISAXSmode skips the first radial mask entirely (keeps its mask for slices).
                self.operators.append(None)
                continue
            self.operators.append(cached_operator(cal.geometry, mc, valid, cal.polarization, cache_dir))
        self.slices: list[SliceOperator] = [
            build_slice(cal.geometry, sc, None if sc.mask_ref < 0 else self.valid[sc.mask_ref])
            for sc in cal.slices
        ]

    @property
    def shape(self) -> tuple[int, int]:
        return self.calibration.geometry.image_shape

    def check_shape(self, image: np.ndarray, source: str = "frame") -> None:
        if image.shape != self.shape:
            raise ValueError(
                f"{source} has shape {image.shape} but Imagesize is {list(self.shape)}"
            )

    def integrate(self, image: np.ndarray, *, invalid: float | None = None) -> list[Curve]:
        """All curves of one frame; pixels equal to ``invalid`` (an EIGER's 2**32 - 1) are
        excluded like negative ones."""
        self.check_shape(image)
        curves: list[Curve] = []
        for i, (mc, op) in enumerate(zip(self.calibration.masks, self.operators, strict=True)):
            if op is None:
                continue
            if self.with_std:
                r = integ.integrate_error(op, image, error_model=self.error_model, invalid=invalid)
                mean, poisson, std = r.mean, r.poisson, r.std
            else:
                mean, poisson = integ.integrate_poisson(op, image, error_model=self.error_model,
                                                        invalid=invalid)
                std = None
            curves.append(self._radial_curve(i, mc, op, mean, poisson, std))
        curves.extend(self._slice_curves(image))
        return curves

    def integrate_many(self, images: Sequence[np.ndarray], *,
                       invalid: float | None = None) -> list[list[Curve]]:
        """Curves of several frames; without the standard deviation the radial curves come
        from :func:`~saxs_pipeline.ops.integrate.integrate_batch` per mask."""
        if self.with_std or len(images) < 2:
            return [self.integrate(img, invalid=invalid) for img in images]
        for img in images:
            self.check_shape(img)
        per_frame: list[list[Curve]] = [[] for _ in images]
        for i, (mc, op) in enumerate(zip(self.calibration.masks, self.operators, strict=True)):
            if op is None:
                continue
            means, errs = integ.integrate_batch(op, images, error_model=self.error_model,
                                                invalid=invalid)
            for f in range(len(images)):
                per_frame[f].append(self._radial_curve(i, mc, op, means[f], errs[f], None))
        for f, img in enumerate(images):
            per_frame[f].extend(self._slice_curves(img))
        return per_frame

    def _radial_curve(self, i, mc, op, mean, poisson, std) -> Curve:
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
            mean, err = integrate_slice(sop, image)
            curves.append(
                Curve("Slice", offset + j, sop.axis, mean, err, None,
                      {"I0": 0.0, "I1": 0.0, "I2": 0.0}, slice_labels(sop.config))
            )
        return curves

    def write_chi(self, curves: Sequence[Curve], basename: str | Path) -> list[Path]:
        """Write ``basename<suffix>.chi`` for every curve; returns the paths."""
        config_json = self.calibration.to_json()
        paths = []
        for c in curves:
            path = Path(f"{basename}{c.suffix()}.chi")
            if c.kind == "Slice":
                chi.write_slice_chi(path, c.radial, c.mean, c.poisson, config_json=config_json, labels=c.labels)
            else:
                chi.write_chi(path, c.radial, c.mean, c.poisson, config_json=config_json,
                              integparams=c.integparams, labels=c.labels)
            paths.append(path)
        return paths

    def definitions(self) -> dict[str, str]:
        """Column name -> definition text of the radial curves (for zarr attributes)."""
        return {
            "I": "sum_p W[k,p] x_p / sum_p A[p,k]: mean counts per pixel, W = A c with A the "
                 "area fraction of pixel p in bin k and c = 1/polarization factor (or 1)",
            "poisson": integ.ERROR_MODELS[self.error_model],
            "std": "sqrt(sum_p W[k,p] (x_p - back_p)^2 / sum_p A[p,k]), back_p = sum_k W[k,p] I_k: "
                   "the original Saxsdog's weighted standard deviation of the pixels in a bin",
        }

    def output_suffixes(self) -> list[str]:
        """The ``.chi`` suffixes this calibration writes, in order (for resume checks)."""
        n_masks = len(self.calibration.masks)
        suffixes = [chi_suffix("Radial", i) for i, op in enumerate(self.operators) if op is not None]
        return suffixes + [chi_suffix("Slice", n_masks + j) for j in range(len(self.slices))]
