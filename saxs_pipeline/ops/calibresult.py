"""What a calibration returns, and the refusal it raises instead of a wrong geometry."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saxs_pipeline.ops import geometry as geo

__all__ = ["CalibrationRefused", "CalibrationResult", "DroppedRing", "RingReport"]


class CalibrationRefused(ValueError):
    """The frame does not give a trustworthy geometry; the message says what was found
    (rings, their ratios, the orders they matched, the fit's rms)."""


@dataclass(frozen=True)
class RingReport:
    """A ring used in the fit: its calibrant label ("001", "111"), d-spacing (A), 2theta
    (deg), mean radius on the detector (px), points measured and kept, rms residual (px)."""

    label: str
    d_a: float
    two_theta_deg: float
    radius_px: float
    points: int
    used: int
    rms_px: float


@dataclass(frozen=True)
class DroppedRing:
    """A calibrant ring in view that was not used, and why."""

    label: str
    d_a: float
    reason: str


@dataclass(frozen=True)
class CalibrationResult:
    """A refined geometry with its 1 sigma uncertainties (FIT2D's names: ``BeamCenter``
    [sigma Y, sigma X] px, ``DedectorDistanceMM``, ``TiltAngleDeg``, ``TiltRotDeg``,
    ``Wavelength``; 0 for a parameter held fixed), the rings used and dropped, the overall
    rms residual (px) and reduced chi^2, notes on choices made, and the time taken (s)."""

    geometry: geo.Geometry
    uncertainty: dict[str, Any]
    rings: tuple[RingReport, ...]
    dropped: tuple[DroppedRing, ...]
    rms_px: float
    chi2_red: float
    calibrant: str
    calibrant_source: str
    free: tuple[str, ...]
    covariance: np.ndarray
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def report(self) -> dict[str, Any]:
        """The report as plain JSON-able data (the issue's ``report.json``)."""
        g = self.geometry
        return {
            "BeamCenter": [g.beam_center_y, g.beam_center_x],
            "DedectorDistanceMM": g.distance_mm,
            "TiltAngleDeg": g.tilt_angle_deg,
            "TiltRotDeg": g.tilt_rot_deg,
            "Wavelength": g.wavelength_a,
            "PixelSizeMicroM": list(g.pixel_size_um),
            "uncertainty": self.uncertainty,
            "calibrant": {"name": self.calibrant, "source": self.calibrant_source},
            "rings": [{"order": r.label, "d_A": r.d_a, "two_theta_deg": r.two_theta_deg,
                       "radius_px": round(r.radius_px, 3), "points": r.points, "used": r.used,
                       "rms_px": round(r.rms_px, 4)} for r in self.rings],
            "dropped": [{"order": d.label, "d_A": d.d_a, "reason": d.reason} for d in self.dropped],
            "rms_px": round(self.rms_px, 4),
            "chi2_reduced": round(self.chi2_red, 3),
            "refined": list(self.free),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        g, s = self.geometry, self.uncertainty
        return (f"BeamCenter [{g.beam_center_y:.3f} +- {s['BeamCenter'][0]:.3f}, "
                f"{g.beam_center_x:.3f} +- {s['BeamCenter'][1]:.3f}] px, distance "
                f"{g.distance_mm:.3f} +- {s['DedectorDistanceMM']:.3f} mm, tilt {g.tilt_angle_deg:.3f} +- "
                f"{s['TiltAngleDeg']:.3f} deg at {g.tilt_rot_deg:.1f} +- {_fmt(s['TiltRotDeg'])} deg, "
                f"{len(self.rings)} rings, rms {self.rms_px:.3f} px")


def _fmt(x: float) -> str:
    return "undefined" if not math.isfinite(x) or x >= 180 else f"{x:.1f}"
