"""Where the real Pilatus 1M test data lives (../shared beside the checkout) and a skip
with the reason when it is absent (e.g. on a user's machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pilatus1m"


def require(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"real Pilatus test data {name} not found in {DATA}")
    return path
