"""Alias of :mod:`aerobust.report.writer` for modules written before the report package (classifier defense)."""
from .report.writer import Label, latex_text, save_figure, write_table  # noqa: F401
