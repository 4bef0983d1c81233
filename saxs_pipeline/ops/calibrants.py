"""Calibrants as data: their d-spacings in Angstrom and where every number comes from.

A calibration only ever uses the d-spacings (2theta = 2 asin(lambda / 2d)); the lattice
constants below are the certified values, and the reflections are generated from the
space group's extinction rules so that no hand-typed list can miss or add a ring.

Sources (checked against the certificates' published values):

* **AgBh** (silver behenate), lamellar d(001) = 58.380 Angstrom: T. C. Huang, H. Toraya,
  T. N. Blanton and Y. Wu, "X-ray powder diffraction analysis of silver behenate, a
  possible low-angle diffraction standard", J. Appl. Cryst. 26 (1993) 180-184. Its rings
  are the orders (00l), d = 58.380 / l.
* **LaB6**: NIST SRM 660c certificate, a = 0.415 682 6 nm +- 0.000 008 nm at 22.5 C;
  space group Pm-3m (primitive cubic): every (hkl) is allowed.
* **CeO2**: NIST SRM 674b, a = 0.541 165 1 nm (the value GSAS-II's and pyFAI's calibrant
  tables carry for SRM 674b); fluorite, Fm-3m: h, k, l all even or all odd.
* **Si**: NIST SRM 640f certificate, a = 0.543 114 4 nm +- 0.000 008 nm at 22.5 C (the
  certificate's Table 1 of Cu K-alpha1 positions, 28.441 deg for (111), follows from it;
  SRM 640e was certified at 0.543 117 9 nm); diamond, Fd-3m: fcc rule and, for all-even
  indices, h + k + l divisible by 4.

Any other calibrant is a list of d-spacings (``"d1,d2,..."`` in Angstrom).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CALIBRANTS", "Calibrant", "Reflection", "calibrant_from_spec", "cubic_calibrant", "lamellar_calibrant"]


@dataclass(frozen=True)
class Reflection:
    """One ring of a calibrant: its d-spacing (Angstrom) and a label ("001", "111", "d3")."""

    d_a: float
    label: str

    def two_theta(self, wavelength_a: float) -> float | None:
        """2theta (rad) at this wavelength, None when the reflection cannot diffract."""
        s = wavelength_a / (2.0 * self.d_a)
        return 2.0 * math.asin(s) if s < 1.0 else None


@dataclass(frozen=True)
class Calibrant:
    """A calibrant: name, its reflections sorted by decreasing d (increasing angle), and
    the source of its numbers (shown in reports so a calibration says what it assumed)."""

    name: str
    reflections: tuple[Reflection, ...]
    source: str

    def d_spacings(self) -> list[float]:
        return [r.d_a for r in self.reflections]

    def visible(self, wavelength_a: float, max_two_theta: float = math.radians(80.0)) -> list[tuple[Reflection, float]]:
        """Reflections with their 2theta (rad) up to ``max_two_theta``: a flat detector never
        sees more (and tan 2theta diverges at 90 deg)."""
        out = []
        for r in self.reflections:
            tth = r.two_theta(wavelength_a)
            if tth is not None and tth <= max_two_theta:
                out.append((r, tth))
        return out


def lamellar_calibrant(name: str, d001_a: float, orders: int, source: str) -> Calibrant:
    """A lamellar calibrant: orders l = 1..orders of d(001), d = d001 / l."""
    refl = tuple(Reflection(d001_a / n, f"00{n}") for n in range(1, orders + 1))
    return Calibrant(name, refl, source)


def _fcc(h: int, k: int, m: int) -> bool:
    return len({h % 2, k % 2, m % 2}) == 1


def _diamond(h: int, k: int, m: int) -> bool:
    if not _fcc(h, k, m):
        return False
    return h % 2 == 1 or (h + k + m) % 4 == 0


_RULES: dict[str, Callable[[int, int, int], bool]] = {
    "P": lambda h, k, m: True,
    "F": _fcc,
    "Fd": _diamond,
}


def cubic_calibrant(name: str, a: float, lattice: str, source: str, max_index: int = 12) -> Calibrant:
    """A cubic calibrant from its lattice constant ``a`` (Angstrom) and extinction rule
    ``lattice`` ("P", "F" or "Fd"): one reflection per distinct h^2+k^2+l^2 that the rule
    allows, labelled by its first (h >= k >= l) triple."""
    rule = _RULES[lattice]
    seen: dict[int, str] = {}
    for h in range(max_index + 1):
        for k in range(h + 1):
            for m in range(k + 1):
                n = h * h + k * k + m * m
                if n and n not in seen and rule(h, k, m):
                    seen[n] = f"{h}{k}{m}"
    refl = tuple(Reflection(a / math.sqrt(n), seen[n]) for n in sorted(seen))
    return Calibrant(name, refl, source)


CALIBRANTS: dict[str, Calibrant] = {
    "AgBh": lamellar_calibrant(
        "AgBh", 58.380, 30,
        "silver behenate d(001) = 58.380 A, Huang et al., J. Appl. Cryst. 26 (1993) 180"),
    "LaB6": cubic_calibrant("LaB6", 4.156826, "P", "NIST SRM 660c, a = 4.156826 A (Pm-3m)"),
    "CeO2": cubic_calibrant("CeO2", 5.411651, "F", "NIST SRM 674b, a = 5.411651 A (Fm-3m)"),
    "Si": cubic_calibrant("Si", 5.431144, "Fd", "NIST SRM 640f, a = 5.431144 A (Fd-3m)"),
}
_ALIASES = {"agbeh": "AgBh", "agbh": "AgBh", "lab6": "LaB6", "ceo2": "CeO2", "si": "Si"}


def calibrant_from_spec(spec: str) -> Calibrant:
    """A calibrant by name (AgBh/AgBeh, LaB6, CeO2, Si; any case) or as a comma-separated
    list of d-spacings in Angstrom ("58.38,29.19")."""
    key = _ALIASES.get(spec.strip().lower())
    if key is not None:
        return CALIBRANTS[key]
    try:
        ds = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        names = ", ".join(CALIBRANTS)
        raise ValueError(f"unknown calibrant {spec!r}: use one of {names} or d-spacings in A "
                         "separated by commas") from None
    if not ds or any(not math.isfinite(d) or d <= 0 for d in ds):
        raise ValueError(f"calibrant {spec!r}: d-spacings must be positive numbers in A")
    ds = sorted(set(ds), reverse=True)
    refl = tuple(Reflection(d, f"d{i + 1}") for i, d in enumerate(ds))
    return Calibrant("custom", refl, f"user-given d-spacings {', '.join(f'{d:g}' for d in ds)} A")
