"""The compiled ``%.18e`` must give Python's text byte for byte: ``.chi`` files are compared
with the original's as bytes, so the tolerance here is zero."""

from __future__ import annotations

import numpy as np
import pytest

from saxs_pipeline.curves.chiformat import format_e18, format_table


def _python(values: np.ndarray) -> list[str]:
    # "%" exactly as the original's numpy savetxt formats
    return ["%.18e" % v for v in values.tolist()]  # noqa: UP031


def _ours(values: np.ndarray) -> list[str]:
    text, ends = format_e18(values)
    starts = np.r_[0, ends[:-1]]
    return [text[s:e].decode("ascii") for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def _ties(rng: np.random.Generator) -> np.ndarray:
    out = []
    for n in range(5, 64):
        lo, hi = -(-10**19 // 5**n), min(10**20 // 5**n, 2**53)
        if lo >= hi:
            continue
        for m in rng.integers(lo, hi, size=64).tolist():
            m |= 1
            if len(str(m * 5**n)) == 20 and m < 2**53:
                out.append(m / 2**n)  # exact: m has at most 53 bits
    values = np.array(out)
    return np.concatenate([values, -values])


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261206)
    powers = np.arange(-300, 300, dtype=np.float64)
    return {
        # every exponent, sign and mantissa pattern, NaN payloads and subnormals included
        "random bits": rng.integers(0, 2**64, size=200_000, dtype=np.uint64).view(np.float64),
        # what curves hold: float32 results widened to float64
        "float32 curves": (rng.random(50_000) * 1e4).astype(np.float32).astype(np.float64),
        # exact ties at the 20th digit (round half to even): M / 2**n with M odd has the
        # decimal digits of M * 5**n, the last a 5; those with exactly 20 digits
        "ties": _ties(rng),
        "eighths": np.arange(-4000, 4000) / 8.0,
        "integers": np.array([1e18, 1e19, 9999999999999999999.0, 2.0**64, 2.0**70, 12345.0]),
        "powers of two": 2.0 ** np.arange(-1074, 1024),
        "powers of ten and neighbours": np.concatenate(
            [10.0**powers, np.nextafter(10.0**powers, np.inf), np.nextafter(10.0**powers, 0)]
        ),
        "specials": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324,
                              2.2250738585072014e-308, 1.7976931348623157e308]),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_every_value_formats_as_python_does(name: str) -> None:
    values = _cases()[name]
    ours, python = _ours(values), _python(values)
    wrong = [(v, o, p) for v, o, p in zip(values.tolist(), ours, python, strict=True) if o != p]
    assert not wrong, f"{len(wrong)} of {values.size} differ, e.g. {wrong[:3]}"


def test_table_is_the_original_row_format() -> None:
    rng = np.random.default_rng(3)
    q = np.linspace(3e-3, 6.0, 1003)
    intensity, error = rng.random(1003) * 1e3, rng.random(1003)
    intensity[[0, 17]] = np.nan
    rows = ("%s %.18e %.18e\n " * q.size) % tuple(
        v for row in zip(_python(q), intensity.tolist(), error.tolist(), strict=True) for v in row
    )
    assert format_table(format_e18(q), intensity, error) == rows.encode("ascii")


def test_columns_of_other_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="columns"):
        format_table(format_e18(np.ones(3)), np.ones(5), np.ones(2))


def test_empty_table() -> None:
    empty = np.zeros(0)
    assert format_table(format_e18(empty), empty, empty) == b""
