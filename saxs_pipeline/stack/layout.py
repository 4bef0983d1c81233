"""The layout of a curve stack (zarr v3), shared by its writer and its readers.

One stack per run and calibration::

    <path>/                          group, attributes:
        format      "saxs_pipeline.curves/2"
        calibration the calibration (parsed JSON)
        curve_keys  ["R0", "R1", "S2", ...]
        n_valid     rows that are completely written and committed to the run ledger;
                    written LAST after every flush
      filename        (frame,)        str      frame source: path relative to the run's
                                               directory ("/" separators)
      frame_index     (frame,)        int64    frame index within its source file
      image_time      (frame,)        float64  "seconds since 1970-01-01" (detector date)
      processed_time  (frame,)        float64  "seconds since 1970-01-01"
      R0/                            one group per curve (Curve.key), attributes:
                                     key, kind, phi, axis_name, axis_units, labels
        q             (q,)            float64  radial axis ("q", "phi", "q_h" or "q_v")
        I             (frame, q)      float32  mean intensity, NaN fill
        poisson       (frame, q)      float32  Poisson error
        std           (frame, q)      float32  standard deviation (NaN when not computed)
        I0, I1, I2    (frame,)        float64  integral parameters
        sum_signal, sum_variance, sum_norm, count
                      (frame, q)      float64  opt-in (StoreSums) per-bin sums, ops.sums
      R1/                            a cake (AzimuthBins): as above plus
        chi           (chi,)          float64  azimuth bin centres, deg (the Azimuth convention)
        I, poisson, std (frame, chi, q) float32; I0, I1, I2 0 (1-D curves only)

Arrays carry CF-style ``units`` and ``long_name`` attributes; I, poisson and std also a
``definition`` (the formula, from ``Integrator.definitions``) where the writer got one.
Rows are in the order frames completed; ``(filename, frame_index)`` is the frame's
identity and :func:`saxs_pipeline.stack.read.open_dataset` sorts by it. Every array has
``dimension_names`` and every numeric one a ``units`` attribute (xarray-ready). Version 1
stacks (no ``frame_index``) are read as frame index 0 and upgraded when written to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from saxs_pipeline.integrator import Curve

__all__ = [
    "CURVE_ARRAYS",
    "FORMAT",
    "FORMATS_READ",
    "FRAME_ARRAYS",
    "INTENSITY_UNITS",
    "LONG_NAMES",
    "PARAM_ARRAYS",
    "SUM_ARRAYS",
    "SUM_FIELDS",
    "SUM_UNITS",
    "TIME_UNITS",
    "CurveSpec",
    "StackLayoutError",
    "param_units",
]

FORMAT = "saxs_pipeline.curves/2"
FORMATS_READ = ("saxs_pipeline.curves/1", FORMAT)
TIME_UNITS = "seconds since 1970-01-01"
INTENSITY_UNITS = "counts/pixel"
CURVE_ARRAYS = ("I", "poisson", "std")
PARAM_ARRAYS = ("I0", "I1", "I2")
# Opt-in per-bin sums (StoreSums; ops.sums): array names, the BinSums field each holds.
SUM_ARRAYS = ("sum_signal", "sum_variance", "sum_norm", "count")
SUM_FIELDS = ("signal", "variance", "norm", "count")
# CF-style names of the arrays; the definitions of I and its errors (which depend on the
# calibration's IntensityDefinition and ErrorModel) come with the writer's definitions.
LONG_NAMES = {
    "I": "mean intensity per pixel",
    "poisson": "Poisson standard error of I",
    "std": "standard deviation of the pixel values in a bin",
    "I0": "integral of I over the axis in [qStart, qStop]",
    "I1": "integral of I * axis",
    "I2": "integral of I * axis^2",
    "sum_signal": "sum_p W[k,p] x_p: corrected counts in the bin",
    "sum_variance": "sum_p W[k,p]^2 x_p: Poisson variance of sum_signal",
    "sum_norm": "sum_p A[p,k]: effective number of pixels in the bin (I = sum_signal / sum_norm)",
    "count": "number of pixels with a share in the bin",
}
SUM_UNITS = {"sum_signal": "counts", "sum_variance": "counts^2", "sum_norm": "pixel", "count": "pixel"}
FRAME_ARRAYS = ("filename", "frame_index", "image_time", "processed_time")


class StackLayoutError(ValueError):
    """An existing store that is not a curve stack or does not match the curve specs."""


@dataclass(frozen=True, eq=False)
class CurveSpec:
    """One curve family of a stack: its key (``Curve.key``: "R0", "S2"), kind ("Radial"
    or "Slice"), radial axis values and the axis name and units."""

    key: str
    kind: str
    axis: np.ndarray
    axis_name: str = "q"
    axis_units: str = "1/nm"
    labels: tuple[str, ...] = ()
    phi: bool = False
    chi: np.ndarray | None = None  # a cake's azimuth bin centres (deg)
    sums: bool = False  # the per-bin sums are stored too (StoreSums)

    def __post_init__(self) -> None:
        axis = np.array(self.axis, dtype=np.float64)
        if axis.ndim != 1 or axis.size == 0:
            raise ValueError(f"curve {self.key}: axis must be a non-empty 1-D array")
        axis.flags.writeable = False
        object.__setattr__(self, "axis", axis)
        if self.chi is not None:
            chi = np.array(self.chi, dtype=np.float64)
            if chi.ndim != 1 or chi.size == 0:
                raise ValueError(f"curve {self.key}: chi must be a non-empty 1-D array")
            chi.flags.writeable = False
            object.__setattr__(self, "chi", chi)
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.axis_name == "frame":
            raise ValueError(f"curve {self.key}: the axis cannot be called 'frame'")

    @property
    def size(self) -> int:
        return int(self.axis.size)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one frame's values: ``(q,)``, or ``(chi, q)`` for a cake."""
        return (self.size,) if self.chi is None else (int(self.chi.size), self.size)

    @property
    def dims(self) -> tuple[str, ...]:
        return (self.axis_name,) if self.chi is None else ("chi", self.axis_name)

    @classmethod
    def from_curve(cls, curve: Curve) -> CurveSpec:
        """The spec of ``curve``'s family: axis "q" (1/nm) for radial curves, "phi" (rad)
        for phi-mode curves, "q_h"/"q_v" (1/nm) for slices (from the column label)."""
        if curve.kind == "Slice":
            vertical = bool(curve.labels) and "q_{v}" in curve.labels[0]
            name, units = ("q_v" if vertical else "q_h"), "1/nm"
        elif curve.phi:
            name, units = "phi", "rad"
        else:
            name, units = "q", "1/nm"
        return cls(curve.key, curve.kind, np.asarray(curve.radial), name, units,
                   tuple(curve.labels), bool(curve.phi), curve.chi, curve.sums is not None)

    @classmethod
    def from_group(cls, key: str, grp: Any) -> CurveSpec:
        """The spec stored in a stack's curve group (what a writer continuing it checks)."""
        chi = grp["chi"][:] if "chi" in grp else None
        return cls(key, str(grp.attrs["kind"]), grp[grp.attrs["axis_name"]][:],
                   str(grp.attrs["axis_name"]), str(grp.attrs["axis_units"]), chi=chi,
                   sums=SUM_ARRAYS[0] in grp)

    @classmethod
    def from_curves(cls, curves: Sequence[Curve]) -> list[CurveSpec]:
        """Specs of every curve of one frame (what ``Integrator.integrate`` returns)."""
        return [cls.from_curve(c) for c in curves]

    def same_layout(self, other: CurveSpec) -> bool:
        return (
            self.key == other.key
            and self.axis_name == other.axis_name
            and self.axis.shape == other.axis.shape
            and bool(np.array_equal(self.axis, other.axis))
            and (self.chi is None) == (other.chi is None)
            and (self.chi is None or bool(np.array_equal(self.chi, other.chi)))
            and self.sums == other.sums
        )


def param_units(axis_units: str, power: int) -> str:
    """Units of the integral parameter I_power = sum I * axis^power * d(axis)."""
    axis = axis_units if power == 0 else f"({axis_units})^{power + 1}"
    return f"{INTENSITY_UNITS} * {axis}"
