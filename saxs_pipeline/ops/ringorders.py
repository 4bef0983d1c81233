"""Which calibrant reflection each found ring is, from the ratios of the ring radii.

On a flat detector at distance D a ring of angle 2theta has radius ``D tan 2theta`` (to
second order in the tilt), so the radii are the calibrant's ``tan 2theta`` values times
one unknown scale ``D / pixel``. Every (ring, reflection) pair proposes a scale; each
proposal is scored by how many rings it explains (within a tolerance that grows with the
radius) against how many reflections it predicts *inside* the explained range, on pixels
the detector sees, that were not found. The interior-miss penalty is what separates
orders 1, 2, 3 from orders 2, 4, 6 (which would leave 1, 3, 5 unexplained); misses beyond
the outermost ring are not counted, because high orders fade.

When two proposals explain the rings equally well the answer is refused rather than
guessed (one ring with its inner neighbour hidden by the beam stop, for instance).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from saxs_pipeline.ops.calibrants import Calibrant, Reflection

__all__ = ["OrderAssignment", "OrderError", "assign_orders"]

MISS_PENALTY = 0.5  # an unexplained inner reflection costs half a matched ring
EXTRA_PENALTY = 0.3  # a ring that no reflection explains (artefact or impurity)


class OrderError(ValueError):
    """The rings' radii match no reflection set of the calibrant, or match several."""


@dataclass(frozen=True)
class OrderAssignment:
    """The chosen scale (px per unit tan 2theta, i.e. distance / pixel at zero tilt), the
    reflection index per ring (None: unexplained), the score and the rms misfit (px)."""

    scale_px: float
    reflection: tuple[int | None, ...]
    score: float
    rms_px: float
    missing: tuple[int, ...]


def _match(radii: np.ndarray, pred: np.ndarray, tol: np.ndarray) -> list[int | None]:
    """Each ring to its nearest predicted reflection within ``tol``; a reflection once."""
    out: list[int | None] = [None] * radii.size
    taken: set[int] = set()
    order = np.argsort([np.min(np.abs(pred - r)) for r in radii])
    for i in order:
        d = np.abs(pred - radii[i])
        for j in np.argsort(d):
            if d[j] > tol[i]:
                break
            if j not in taken:
                out[i] = int(j)
                taken.add(int(j))
                break
    return out


def _evaluate(scale: float, radii, tans, tol, seen: Callable[[float], bool]):
    pred = scale * tans
    match = _match(radii, pred, tol)
    pairs = [(i, j) for i, j in enumerate(match) if j is not None]
    if not pairs:
        return None
    ri = np.array([radii[i] for i, _ in pairs])
    ti = np.array([tans[j] for _, j in pairs])
    scale = float(np.sum(ri * ti) / np.sum(ti * ti))  # least squares through the origin
    pred = scale * tans
    match = _match(radii, pred, tol)
    pairs = [(i, j) for i, j in enumerate(match) if j is not None]
    if not pairs:
        return None
    used = {j for _, j in pairs}
    outer = max(pred[j] for j in used)
    missing = tuple(j for j in range(tans.size) if j not in used and pred[j] < outer
                    and not _merged(j, pred, used, tol.min()) and seen(pred[j]))
    resid = np.array([radii[i] - pred[j] for i, j in pairs])
    score = len(pairs) - MISS_PENALTY * len(missing) - EXTRA_PENALTY * (radii.size - len(pairs))
    return OrderAssignment(scale, tuple(match), score, float(np.sqrt(np.mean(resid ** 2))), missing)


def _merged(j: int, pred: np.ndarray, used: set[int], tol: float) -> bool:
    """A reflection closer than the tolerance to a matched one is the same ring."""
    return any(abs(pred[j] - pred[k]) < 2 * tol for k in used)


def assign_orders(radii_px: Sequence[float], calibrant: Calibrant, wavelength_a: float, *,
                  seen: Callable[[float], bool] = lambda r: True,
                  scale_range: tuple[float, float] = (50.0, 1e6),
                  rel_tol: float = 0.01, abs_tol: float = 1.5) -> OrderAssignment:
    """Assign calibrant reflections to ring radii (px).

    ``seen(r)`` says whether a ring of radius ``r`` px would be on enough valid pixels to be
    found (not behind the beam stop, not off the detector); ``scale_range`` bounds the
    distance in pixels. Raises :class:`OrderError` with what was found when no assignment
    or more than one fits."""
    radii = np.sort(np.asarray(radii_px, dtype=float))
    refl: list[tuple[Reflection, float]] = calibrant.visible(wavelength_a)
    if radii.size == 0:
        raise OrderError("no rings to assign")
    tans = np.array([math.tan(t) for _, t in refl])
    tol = abs_tol + rel_tol * radii
    results: list[OrderAssignment] = []
    # proposals from the innermost rings only: every right assignment explains them too,
    # and the number of proposals stays ~5 x reflections however many rings were found
    for r in radii[:5]:
        for t in tans:
            s = r / t
            if not scale_range[0] <= s <= scale_range[1]:
                continue
            if any(abs(s / o.scale_px - 1) < 0.002 for o in results):
                continue
            res = _evaluate(s, radii, tans, tol, seen)
            if res is not None and all(abs(res.scale_px / o.scale_px - 1) > 0.002 for o in results):
                results.append(res)
    found = describe(radii)
    # an assignment that needs more unseen inner reflections than it explains rings is a
    # coincidence of ratios (any ratio is near some pair of high AgBh orders)
    results = [a for a in results if len(a.missing) <= sum(j is not None for j in a.reflection)]
    if not results:
        raise OrderError(f"{found} match no {calibrant.name} reflections at {wavelength_a:g} A")
    results.sort(key=lambda a: (-a.score, a.rms_px))
    best = results[0]
    n_matched = sum(j is not None for j in best.reflection)
    if n_matched < min(2, radii.size) or n_matched < 0.6 * radii.size:
        raise OrderError(f"{found} match no {calibrant.name} reflection set at {wavelength_a:g} A "
                         f"(the best explains {n_matched} of {radii.size})")
    rivals = [a for a in results[1:] if a.score >= best.score - 0.25 and abs(a.scale_px / best.scale_px - 1) > 0.02]
    if rivals:
        alt = rivals[0]
        raise OrderError(f"{found} fit {calibrant.name} {_labels(best, refl)} (distance {best.scale_px:.0f} px) "
                         f"as well as {_labels(alt, refl)} (distance {alt.scale_px:.0f} px); "
                         "give an approximate distance or more rings")
    return best


def _labels(a: OrderAssignment, refl) -> str:
    return ", ".join(refl[j][0].label if j is not None else "?" for j in a.reflection)


def describe(radii: np.ndarray) -> str:
    """'3 rings at 181.2, 362.9, 544.0 px (ratios 1:2.003:3.002)'."""
    n = radii.size
    at = ", ".join(f"{r:.1f}" for r in radii)
    if n == 1:
        return f"1 ring at {at} px"
    ratios = ":".join(["1"] + [f"{r / radii[0]:.3f}" for r in radii[1:]])
    return f"{n} rings at {at} px (ratios {ratios})"
