"""The reference docs are generated from the schema and from each command's --help; the
committed pages must be what the generator writes today (no drift), and every console
script's --help must work."""

from __future__ import annotations

from pathlib import Path

import pytest

from saxs_pipeline.config import docgen

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_calibration_reference_matches_the_schema() -> None:
    committed = (DOCS / "calibration.md").read_text()
    assert committed == docgen.calibration_reference(), "run: python -m saxs_pipeline.config.docgen"


@pytest.mark.parametrize("name", sorted(docgen.CONSOLE_SCRIPTS))
def test_cli_page_matches_help(name: str) -> None:
    page = docgen.cli_reference(name)
    assert "usage" in page.lower()  # --help printed a usage line: the command's help works
    committed = (DOCS / "cli" / f"{name}.md").read_text()
    assert committed == page, "run: python -m saxs_pipeline.config.docgen"
