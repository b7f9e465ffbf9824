"""Views of ``aerobust margin``: the summary table and the CDF of the r-robustness margins.

:func:`aerobust.robustness_margin.run_margins` computes the margins and writes them (margins.csv and the
manifest); here they become the table and the figure, through the one writer and style.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..robustness_margin import MarginRun
from ..threat import BUDGETS
from .style import paper_figure, styled
from .writer import save_figure, write_table


@styled
def margin_figure(margins: pd.DataFrame, lambda_max: float, budget: str | None = None):
    """Empirical CDF of the margins per model; censored images (no break up to lambda_max) never reach 1."""
    figure, axes = paper_figure(width="single")
    axis = axes.flat[0]
    for model, rows in margins.groupby("model", sort=False):
        values = np.sort(rows["margin"].to_numpy())
        finite = values[np.isfinite(values)]
        fraction = np.arange(1, len(finite) + 1) / len(values)
        axis.step(np.concatenate([[0.0], finite, [lambda_max]]),
                  np.concatenate([[0.0], fraction, [fraction[-1] if len(fraction) else 0.0]]), where="post",
                  label=f"{model} ({len(values) - len(finite)} of {len(values)} > λ_max)")
    axis.set_xlabel(f"r-robustness margin λ ({BUDGETS.get(budget or 'l2', ('', str(budget)))[1]})", fontsize=7)
    axis.set_ylabel("fraction of images broken")
    axis.set_xlim(0, lambda_max)
    axis.set_ylim(0, 1)
    axis.legend()
    return figure


def write_margin_views(run: MarginRun, out_dir: str | os.PathLike) -> dict[str, Path]:
    """margin_summary (CSV, Markdown, LaTeX, HTML) and fig_margins (PNG, PDF) in ``out_dir``; returns the paths."""
    written = write_table(run.summary, out_dir, "margin_summary")
    written["figure"] = save_figure(margin_figure(run.margins, run.lambda_max, run.budget), out_dir, "fig_margins")
    return written
