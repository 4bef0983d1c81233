"""The original Saxsdog's Python API ("seed API"), for old scripts.

``saxs_pipeline.calibration``, ``saxs_pipeline.slice``, ``calc_theta``, ``scalemat`` and
``openmask`` keep the original's names, signatures and return values, but every number
comes from the clean API (:mod:`saxs_pipeline.config.calibration`, :mod:`saxs_pipeline.ops`):
these are thin wrappers, not a second implementation. New code should use
:class:`saxs_pipeline.integrator.Integrator` or the ``ops`` functions directly.

Differences from the original, all deliberate:

* Configs may be a dict or a path, in the nested or the old flat form; the original took
  nested dicts only (and crashed on a missing ``Phi-mode``).
* Pilatus gap (-1) and bad (-2) pixels are excluded even where the mask misses them, and
  q bins never shift when labels are missing (see :mod:`saxs_pipeline.ops.operator`).
* :meth:`calibration.integParameters` returns :class:`IntegralParameters`, which unpacks
  like the original's tuple (``I0, I1, I2 = cal.integParameters(I)``) and is also
  indexable by name like the ``{"I0", "I1", "I2"}`` dict of the ``.chi`` header.
* :meth:`calibration.plot` honours ``startplotat`` (the original documented but ignored it).
* Calibrations with the summed-normalisation definition (``Dark``, ``Flat``,
  ``SolidAngle``, ``Sensor`` or ``IntensityDefinition``) are refused: the seed API keeps the
  original's definition; :class:`saxs_pipeline.integrator.Integrator` integrates them.
* ``slice`` fixes the original's bugs (see :mod:`saxs_pipeline.ops.slices`): no crash
  without attachments, ``MaskRef = -1`` means no mask, q at pixel centres.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from saxs_pipeline.config.calibration import (
    Calibration,
    MaskConfig,
    Polarization,
    SliceConfig,
    load_calibration,
)
from saxs_pipeline.config.calibschema import CalibrationError
from saxs_pipeline.config.masks import decode_attachment, load_mask, mask_from_bytes, read_mask
from saxs_pipeline.curves import chi
from saxs_pipeline.integrator import Curve
from saxs_pipeline.ops import integrate as integ
from saxs_pipeline.ops.geometry import calc_theta, polarization_factor
from saxs_pipeline.ops.operator import IntegrationOperator, cached_operator
from saxs_pipeline.ops.slices import SliceOperator, build_slice, integrate_slice, slice_labels

__all__ = [
    "IntegralParameters",
    "LegacyCalibration",
    "LegacySlice",
    "calc_theta",
    "calibration",
    "openmask",
    "scalemat",
    "slice",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# The original skipped writing when handed this literal path (used for GISAXSmode).
NO_OUTPUT = "xxx"


class IntegralParameters(NamedTuple):
    """I0, I1, I2 of one curve (see :func:`saxs_pipeline.ops.integrate.integral_parameters`).

    Unpacks and indexes like the original's ``(I0, I1, I2)`` tuple; ``p["I0"]``,
    ``p.keys()`` and ``dict(p)`` work like the ``{"I0", "I1", "I2"}`` dict.
    """

    I0: float
    I1: float
    I2: float

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:
        return self._fields

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in self._fields}


def _load(config: dict[str, Any] | PathLike | Calibration) -> Calibration:
    if isinstance(config, dict | str | os.PathLike):
        config = load_calibration(config)
    if not isinstance(config, Calibration):
        raise TypeError(f"a calibration config must be a dict or a path, not {type(config).__name__}")
    if config.summed_normalisation:
        raise CalibrationError(
            "seed API", "$.IntensityDefinition",
            "saxs_pipeline.calibration implements the original's definition only (no Dark, "
            "Flat, SolidAngle, Sensor); integrate this calibration with "
            "saxs_pipeline.integrator.Integrator")
    return config


def _index_in(cal: Calibration, key: str, entry: Any) -> int | None:
    for i, candidate in enumerate(cal.raw.get(key, [])):
        if candidate == entry:
            return i
    return None


def _parse_entry(cal: Calibration, key: str, entry: Any, what: str) -> Calibration:
    """``cal`` with ``key`` (``"Masks"`` or ``"Slices"``) replaced by the single entry
    ``entry``: validates and parses an entry that is not one of the calibration's own."""
    if not isinstance(entry, dict):
        raise TypeError(f"the {what} config must be a dict, not {type(entry).__name__}")
    variant = copy.deepcopy(cal.raw)
    variant[key] = [copy.deepcopy(entry)]
    if key == "Masks":
        # The calibration's slices may refer to mask entries this variant does not have.
        variant.pop("Slices", None)
    try:
        return load_calibration(variant, base_dir=cal.base_dir)
    except CalibrationError as exc:
        raise CalibrationError(what, exc.path.replace(f"$.{key}[0]", "$", 1), exc.reason) from None


def _mask_entry(cal: Calibration, mask: dict[str, Any] | None) -> tuple[MaskConfig, dict[str, Any]]:
    if mask is None:
        return cal.masks[0], cal.raw["Masks"][0]
    index = _index_in(cal, "Masks", mask)
    if index is not None:
        return cal.masks[index], cal.raw["Masks"][index]
    return _parse_entry(cal, "Masks", mask, "mask").masks[0], mask


def _slice_entry(cal: Calibration, sliceconf: dict[str, Any]) -> SliceConfig:
    index = _index_in(cal, "Slices", sliceconf)
    if index is not None:
        return cal.slices[index]
    return _parse_entry(cal, "Slices", sliceconf, "slice").slices[0]


class LegacyCalibration:
    """The original ``calibration(config, mask=None, attachment=None)``: one radial (or
    Phi-mode) integration of a calibration's mask entry.

    ``config``: calibration dict or file path (nested or flat form). ``mask``: a
    ``Masks[]`` entry dict (default ``Masks[0]``); it need not be one of the calibration's
    entries (e.g. the same mask with another q window). ``attachment``: the mask file as a
    network attachment ``{"filename", "data"}`` instead of reading ``MaskFile``.
    ``cache_dir`` (keyword, new): where built operators are cached, see
    :func:`saxs_pipeline.ops.operator.cached_operator`.

    Attributes as the original: ``config`` (the calibration, nested form), ``mask`` and
    ``maskconfig`` (the mask entry dict), ``kind`` ("Radial"), ``qgrid`` (bin centres,
    q in nm^-1, or phi in rad in Phi-mode). New: ``calibration`` (the parsed
    :class:`~saxs_pipeline.config.calibration.Calibration`), ``mask_config``, ``valid`` (used
    pixels) and ``operator``.
    """

    kind = "Radial"

    def __init__(
        self,
        config: dict[str, Any] | PathLike,
        mask: dict[str, Any] | None = None,
        attachment: dict[str, Any] | None = None,
        *,
        cache_dir: PathLike | None | bool = None,
    ) -> None:
        cal = _load(config)
        self.calibration = cal
        self.config: dict[str, Any] = cal.raw
        self.mask_config, self.maskconfig = _mask_entry(cal, mask)
        self.mask: dict[str, Any] = self.maskconfig
        self.valid: np.ndarray = load_mask(cal, self.mask_config, attachment)
        self.operator: IntegrationOperator = cached_operator(
            cal.geometry, self.mask_config, self.valid, cal.polarization, cache_dir
        )
        self.qgrid: np.ndarray = self.operator.radial

    def __repr__(self) -> str:
        return f"<saxs_pipeline.calibration {self.kind} mask={self.mask_config.mask_file!r} bins={self.qgrid.size}>"

    def integrate(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(qgrid, intensity)``: mean counts per pixel per bin, NaN for empty bins."""
        return self.qgrid, integ.integrate(self.operator, image)

    def integrateerror(self, image: np.ndarray) -> np.ndarray:
        """3 x N array ``[mean, stddev, poisson]`` (the original's definitions)."""
        r = integ.integrate_error(self.operator, image)
        return np.array([r.mean, r.std, r.poisson])

    def integParameters(self, intensity: Any) -> IntegralParameters:  # the original name
        """I0, I1, I2 of ``intensity`` over the mask entry's [qStart, qStop); all zero in
        Phi-mode (as the original)."""
        if self.mask_config.phi_mode:
            return IntegralParameters(0.0, 0.0, 0.0)
        p = integ.integral_parameters(
            self.qgrid,
            intensity,
            self.mask_config.q_start,
            self.mask_config.q_stop,
            self.operator.edges,
        )
        return IntegralParameters(p["I0"], p["I1"], p["I2"])

    def integratechi(self, image: np.ndarray, path: PathLike, picture: Any = None) -> dict[str, Any]:
        """Integrate, write the ``.chi`` file ``path`` (unless ``path == "xxx"``) and return
        the original's dict ``{"array", "columnLabels", "kind", "conf", "mask",
        "Integparam"}``. ``picture`` (the image's path) is accepted for compatibility and
        not used, as in the original."""
        mean, poisson = integ.integrate_poisson(self.operator, image)
        params = self.integParameters(mean).as_dict()
        phi = self.mask_config.phi_mode
        labels = list(chi.PHI_LABELS if phi else chi.RADIAL_LABELS)
        if os.fspath(path) != NO_OUTPUT:
            chi.write_chi(
                path, self.qgrid, mean, poisson,
                config_json=self.calibration.to_json(), integparams=params, labels=labels,
            )
        curve = Curve("Radial", self.mask_config.index, self.qgrid, mean, poisson, None, params, labels, phi)
        return curve.to_graph(self.config, self.maskconfig)

    def plot(
        self,
        image: np.ndarray,
        outputfile: PathLike = "",
        startplotat: int = 0,
        fig: Any = None,
    ) -> Any:
        """Plot the curve of ``image`` as the original: mean on a log y axis with a yellow
        +-stddev band and a blue +-Poisson band (lower edges clipped at 1), bins with
        mean > 0 from bin ``startplotat`` on; titled and saved to ``outputfile`` when one
        is given (format by suffix). Draws into ``fig`` (cleared first) when given;
        otherwise a new figure, registered with pyplot only when nothing is saved (so
        ``plt.show()`` displays it, and saving loops do not accumulate figures).
        Returns the figure."""
        from saxs_pipeline.curves import plot as splot  # matplotlib only when plotting

        r = integ.integrate_error(self.operator, image)
        keep = np.arange(self.qgrid.size) >= int(startplotat)
        keep &= r.mean > 0
        if fig is None:
            fig = splot.new_figure(pyplot=not os.fspath(outputfile))
        fig.clf()
        ax = fig.add_subplot(111)
        bands = [
            splot.Band(r.std[keep], color="yellow", alpha=0.5),
            splot.Band(r.poisson[keep], color="blue", alpha=0.2),
        ]
        splot.draw_curve(ax, self.qgrid[keep], r.mean[keep], bands, floor=1.0)
        ax.set_xlabel("phi [rad]" if self.mask_config.phi_mode else splot.Q_LABEL)
        ax.set_ylabel(splot.INTENSITY_LABEL)
        ax.set_yscale("log")
        ax.set_title(os.fspath(outputfile))
        if os.fspath(outputfile):
            splot.save_figure(fig, outputfile)
        return fig

    def polcorr(self, Pfrac: float, rot: float) -> np.ndarray:  # the original names
        """The polarization factor of every pixel (image shape) for the polarized
        fraction ``Pfrac`` and ``rot = Angle*pi/180 - pi/2`` in radians (the original's
        argument). Like the original this returns the factor P itself; intensities are
        divided by it, i.e. the per-pixel correction is ``1 / polcorr(...)``."""
        angle_deg = float(np.rad2deg(rot + np.pi / 2))
        return polarization_factor(self.calibration.geometry, Polarization(float(Pfrac), angle_deg))


class LegacySlice:
    """The original ``slice(conf, sliceconf, attachments=[])``: one GISAXS line cut.

    ``conf``: calibration dict or path; ``sliceconf``: a ``Slices[]`` entry dict (it need
    not be one of the calibration's); ``attachments``: mask attachments in ``Masks`` order,
    the one at ``MaskRef`` is used instead of reading the mask file.

    Attributes as the original: ``kind`` ("Slice"), ``conf``, ``sliceconf``, ``grid`` (the
    q axis, one value per line position), ``qname`` (its label), ``mask`` (used pixels, or
    None for ``MaskRef = -1``). New: ``config`` (= ``conf``), ``qgrid`` (= ``grid``),
    ``operator``.
    """

    kind = "Slice"

    def __init__(
        self,
        conf: dict[str, Any] | PathLike,
        sliceconf: dict[str, Any],
        attachments: Sequence[dict[str, Any] | None] = (),
    ) -> None:
        cal = _load(conf)
        self.calibration = cal
        self.conf: dict[str, Any] = cal.raw
        self.config = self.conf
        self.slice_config = _slice_entry(cal, sliceconf)
        self.sliceconf = sliceconf
        attachments = list(attachments or [])
        ref = self.slice_config.mask_ref
        if ref < 0:
            self.mask: np.ndarray | None = None
        else:
            att = attachments[ref] if ref < len(attachments) else None
            self.mask = load_mask(cal, cal.masks[ref], att)
        self.operator: SliceOperator = build_slice(cal.geometry, self.slice_config, self.mask)
        self.grid: np.ndarray = self.operator.axis
        self.qgrid = self.grid
        self.labels = slice_labels(self.slice_config)
        self.qname = self.labels[0]

    def integrate(self, image: np.ndarray) -> np.ndarray:
        """Mean intensity per line position (the original returned only this)."""
        return integrate_slice(self.operator, image)[0]

    def integratechi(self, image: np.ndarray, path: PathLike, picture: Any = None) -> dict[str, Any]:
        """Integrate, write the slice ``.chi`` (unless ``path == "xxx"``) and return
        ``{"array", "columnLabels", "kind": "Slice", "conf", "slice"}``."""
        mean, err = integrate_slice(self.operator, image)
        if os.fspath(path) != NO_OUTPUT:
            chi.write_slice_chi(
                path, self.grid, mean, err, config_json=self.calibration.to_json(), labels=self.labels
            )
        curve = Curve("Slice", self.slice_config.index, self.grid, mean, err, None,
                      {"I0": 0.0, "I1": 0.0, "I2": 0.0}, list(self.labels))
        return curve.to_graph(self.conf, self.sliceconf)

    def plot(self, image: np.ndarray, outputfile: PathLike = "", startplotat: int = 0, fig: Any = None) -> None:
        """Does nothing, as the original (queues call ``plot`` on every calibration)."""
        return None


def scalemat(Xsize: int, Ysize: int, ov: int) -> sp.csr_matrix:  # the original names
    """The original's block-averaging matrix from sub-pixels to pixels.

    ``Xsize`` is the number of image **rows** and ``Ysize`` the number of **columns**
    (numpy shape ``(Xsize, Ysize)``; the original's names notwithstanding, it was called
    as ``scalemat(mask.shape[0], mask.shape[1], ov)``). Pixels are numbered row-major
    over ``(Xsize, Ysize)``, sub-pixels row-major over ``(Xsize*ov, Ysize*ov)``. The result
    has shape ``(Xsize*Ysize, Xsize*Ysize*ov**2)``, float64, with ``1/ov**2`` at
    ``[p, s]`` for the ``ov x ov`` sub-pixels ``s`` of pixel ``p``: ``scalemat(...) @
    sub.ravel()`` is the pixel-wise mean of the sub-pixel image ``sub``.
    """
    rows, cols, ov = int(Xsize), int(Ysize), int(ov)
    if rows < 0 or cols < 0 or ov < 1:
        raise ValueError(f"scalemat needs sizes >= 0 and ov >= 1, not {Xsize}, {Ysize}, {ov}")
    npix = rows * cols
    r, c = np.divmod(np.arange(npix, dtype=np.int64), cols)
    first = r * (ov * ov * cols) + c * ov  # flat index of each pixel's top-left sub-pixel
    block = (np.arange(ov)[:, None] * (cols * ov) + np.arange(ov)[None, :]).ravel()
    indices = (first[:, None] + block[None, :]).ravel()
    indptr = np.arange(0, npix * ov * ov + 1, ov * ov, dtype=np.int64)
    data = np.full(indices.size, 1.0 / (ov * ov))
    return sp.csr_matrix((data, indices, indptr), shape=(npix, npix * ov * ov))


def openmask(mfile: PathLike, attachment: dict[str, Any] | None = None) -> np.ndarray:
    """The mask ``mfile`` as a bool array, True = pixel used. With ``attachment`` (a
    network attachment ``{"filename", "data"}``, latin-1 or base64) its bytes are decoded
    instead of reading the file. The format comes from the content (FIT2D ``.msk``, TIFF,
    PNG, ``.npy``), not from the name."""
    if attachment:
        name = str(attachment.get("filename", mfile)) if isinstance(attachment, dict) else str(mfile)
        return mask_from_bytes(decode_attachment(attachment), name)
    return read_mask(Path(mfile).expanduser())


# The original's lower-case class names.
calibration = LegacyCalibration
slice = LegacySlice
