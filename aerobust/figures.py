"""Alias of :mod:`aerobust.report.style` for modules written before the report package (classifier defense)."""
from .report.style import COLORS, DOUBLE_COLUMN_IN, PAPER_RC, paper_figure, paper_style, styled  # noqa: F401
