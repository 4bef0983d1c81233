"""``%.18e`` for whole ``.chi`` tables in compiled code, byte for byte what Python prints.

The original's files hold every number as ``%.18e``: 19 significant digits, more than a
double carries, so each is the exact binary value rounded once (ties to even), as
Python's correctly rounded ``dtoa`` gives it. Python formats ~2000 numbers per curve file
at ~0.5 us each, which was 40 % of a worker's time per frame. Here each value is taken
exactly as an integer in base 10^9 limbs: ``m * 2**e`` for ``e >= 0``, else
``m * 5**-e`` (the value times ``10**-e``); its leading 19 decimal digits are rounded half
to even with the exact rest, so the text is the same as Python's for every double (tests
compare 200 000 random bit patterns, subnormals, exact ties, nan and inf).
"""

from __future__ import annotations

import numpy as np

from saxs_pipeline.ops.kernels import _jit

__all__ = ["WIDTH", "format_e18", "format_table"]

WIDTH = 26  # the longest "%.18e": "-d." (3), 18 digits, "e-324" (5)
_BASE = np.uint64(1_000_000_000)  # typed: uint64 mixed with int64 would give float64
_TEN = np.uint64(10)
_ZERO = np.uint64(0)
_LIMBS = 96  # 2**53 * 5**1074 < 10**767: 86 limbs of 9 digits


@_jit
def _mul_small(limbs, n, factor):  # pragma: no cover - compiled
    # limbs * factor with factor <= 5**13 (< 1.23e9): each product stays below 2**64.
    carry = _ZERO
    for i in range(n):
        v = limbs[i] * factor + carry
        limbs[i] = v % _BASE
        carry = v // _BASE
    while carry != _ZERO:
        limbs[n] = carry % _BASE
        carry //= _BASE
        n += 1
    return n


@_jit
def _limb_digits(v, count, digits, m):  # pragma: no cover - compiled
    # The count decimal digits of one limb (zero-padded) into digits[m:m + count].
    for p in range(count - 1, -1, -1):
        digits[m + p] = v % _TEN
        v //= _TEN
    return m + count


@_jit
def _format_one(bits, out, at, limbs, digits):  # pragma: no cover - compiled
    """Write ``"%.18e"`` of the double whose bits are ``bits`` at ``out[at:]``; return the
    new end."""
    biased = np.int64((bits >> np.uint64(52)) & np.uint64(0x7FF))
    frac = bits & np.uint64((1 << 52) - 1)
    if biased == 0x7FF and frac != _ZERO:
        out[at], out[at + 1], out[at + 2] = 110, 97, 110  # "nan", as Python: no sign
        return at + 3
    if bits >> np.uint64(63):
        out[at] = 45  # "-"
        at += 1
    if biased == 0x7FF:
        out[at], out[at + 1], out[at + 2] = 105, 110, 102  # "inf"
        return at + 3
    if biased == 0 and frac == _ZERO:
        digits[:] = 0
        exp10 = 0
    else:
        if biased == 0:
            mant, exp2 = frac, np.int64(-1074)
        else:
            mant, exp2 = frac | np.uint64(1 << 52), biased - 1075
        limbs[0], limbs[1] = mant % _BASE, mant // _BASE
        n = 2 if limbs[1] != _ZERO else 1
        shift = 0
        if exp2 >= 0:
            e = exp2
            while e >= 29:
                n = _mul_small(limbs, n, np.uint64(1 << 29))
                e -= 29
            n = _mul_small(limbs, n, np.uint64(1 << e))
        else:
            e = -exp2
            shift = e
            while e >= 13:
                n = _mul_small(limbs, n, np.uint64(1220703125))  # 5**13
                e -= 13
            n = _mul_small(limbs, n, np.uint64(5**e) if e else np.uint64(1))
        top = limbs[n - 1]
        top_digits = 0
        while top != _ZERO:
            top //= _TEN
            top_digits += 1
        exp10 = top_digits + 9 * (n - 1) - 1 - shift
        # The leading >= 20 digits, from the top limb down; the limbs below only matter
        # through "is any of them nonzero" (a tie at digit 20 or not).
        m = _limb_digits(limbs[n - 1], top_digits, digits, 0)
        limb = n - 1
        while m < 20 and limb > 0:
            limb -= 1
            m = _limb_digits(limbs[limb], 9, digits, m)
        digits[m:20] = 0
        if m > 19:
            rest = False
            for k in range(20, m):
                rest = rest or digits[k] != 0
            for k in range(limb):
                rest = rest or limbs[k] != _ZERO
            up = digits[19] > 5 or (digits[19] == 5 and (rest or digits[18] % 2 == 1))
            if up:
                k = 18
                while k >= 0 and digits[k] == 9:
                    digits[k] = 0
                    k -= 1
                if k < 0:
                    digits[0] = 1
                    exp10 += 1
                else:
                    digits[k] += 1
    out[at] = 48 + digits[0]
    out[at + 1] = 46  # "."
    for k in range(1, 19):
        out[at + 1 + k] = 48 + digits[k]
    at += 20
    out[at] = 101  # "e"
    out[at + 1] = 45 if exp10 < 0 else 43
    a = -exp10 if exp10 < 0 else exp10
    at += 2
    if a >= 100:
        out[at] = 48 + a // 100
        at += 1
    out[at] = 48 + (a // 10) % 10
    out[at + 1] = 48 + a % 10
    return at + 2


@_jit
def _format_array(bits, out):  # pragma: no cover - compiled
    limbs = np.zeros(_LIMBS, np.uint64)
    digits = np.zeros(40, np.int64)
    ends = np.empty(bits.size, np.int64)
    at = 0
    for i in range(bits.size):
        at = _format_one(bits[i], out, at, limbs, digits)
        ends[i] = at
    return ends


@_jit
def _format_rows(axis_text, axis_ends, a, b, out):  # pragma: no cover - compiled
    # Each row "<axis> <a> <b>\n " (the original's savetxt(newline="\n ")); a and b are
    # the columns' bits (uint64 views).
    limbs = np.zeros(_LIMBS, np.uint64)
    digits = np.zeros(40, np.int64)
    at = 0
    start = 0
    for i in range(a.size):
        end = axis_ends[i]
        for k in range(start, end):
            out[at] = axis_text[k]
            at += 1
        start = end
        out[at] = 32
        at = _format_one(a[i], out, at + 1, limbs, digits)
        out[at] = 32
        at = _format_one(b[i], out, at + 1, limbs, digits)
        out[at] = 10
        out[at + 1] = 32
        at += 2
    return at


def format_e18(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Every value of a 1-D float64 array as ``%.18e``, concatenated; with the end offset
    of each (to split it, or to reuse it as a table's first column)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty(values.size * WIDTH, np.uint8)
    ends = _format_array(values.view(np.uint64), out)
    used = int(ends[-1]) if ends.size else 0
    return out[:used].tobytes(), ends


def format_table(axis: tuple[bytes, np.ndarray], a: np.ndarray, b: np.ndarray) -> bytes:
    """``("%s %.18e %.18e\\n " * n) % rows`` for a pre-formatted first column ``axis``
    (from :func:`format_e18`) and two float64 columns of the same length."""
    text, ends = axis
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if not ends.size == a.size == b.size or a.ndim != 1 or b.ndim != 1:
        # the kernel does not check bounds: columns of other lengths would overrun
        raise ValueError(f"columns of {ends.size}, {a.shape} and {b.shape} values")
    out = np.empty(len(text) + a.size * (2 * WIDTH + 4), np.uint8)
    used = _format_rows(np.frombuffer(text, np.uint8), ends, a.view(np.uint64),
                        b.view(np.uint64), out)
    return out[:used].tobytes()
