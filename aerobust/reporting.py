"""Writing tables and figures: the one output path every report (audit, training, defend) uses."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import pandas as pd

TABLE_FORMATS = ("csv", "md", "tex", "html")


def write_table(table: pd.DataFrame, out_dir: str | os.PathLike, stem: str,
                formats: Iterable[str] = TABLE_FORMATS, float_format: str = "{:.4f}") -> dict[str, Path]:
    """Write ``table`` as ``stem.csv/.md/.tex/.html`` under ``out_dir``; returns the paths by format.

    The CSV keeps full precision; the human formats round with ``float_format``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    pretty = table.copy()
    for column in pretty.columns:
        if pd.api.types.is_float_dtype(pretty[column]):
            pretty[column] = pretty[column].map(lambda v: "" if pd.isna(v) else float_format.format(v))
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "csv":
            table.to_csv(path, index=not isinstance(table.index, pd.RangeIndex))
        elif fmt == "md":
            path.write_text(pretty.to_markdown() + "\n")
        elif fmt == "tex":
            path.write_text(pretty.to_latex())
        elif fmt == "html":
            path.write_text(pretty.to_html(border=0, classes="aerobust-table"))
        else:
            raise ValueError(f"unknown table format {fmt}")
        written[fmt] = path
    return written


def save_figure(figure, out_dir: str | os.PathLike, stem: str, dpi: int = 120) -> Path:
    """Save a matplotlib figure as ``stem.png`` and close it (reports create many figures)."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.png"
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path
