"""Every .tex the project writes compiles in a table float with caption and unique label, and fits 6.5 in."""
from __future__ import annotations

from pathlib import Path

from tests.latex import check_tables, require_pdflatex

REPORTS = Path(__file__).resolve().parent.parent / "reports"


def test_every_committed_table_compiles_fits_the_page_and_has_its_own_label(tmp_path):
    require_pdflatex()
    files = sorted(REPORTS.rglob("*.tex"))
    assert len(files) >= 40  # the committed reports (demo, leaderboard, defend, training, taef2, reproduction)
    assert check_tables(files, tmp_path) == []
