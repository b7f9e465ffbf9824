"""Views over the analyses beside the audit tables: the statistics tables of a report (intervals, paired
tests, universal share, AUDDC), the distortion-distortion curve and the r-robustness margin CDF.

The analyses compute their numbers (:mod:`aerobust.stats`, :mod:`aerobust.distortion`,
:mod:`aerobust.robustness_margin`); here they become tables and figures in the report style, written by
``writer.save_figure``/``write_table`` like every other table and figure.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..threat import BUDGETS
from ..distortion import auddc_table
from ..stats import interval_table, paired_comparisons, universal_share
from .style import paper_figure, styled


def report_tables(results: pd.DataFrame, columns: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The statistics tables of a report: intervals of every cell and, where they apply, paired tests
    between models (two or more models), the universal attack's share of per-image damage, and AUDDC."""
    present = [c for c in columns if results[c].notna().any()]
    tables = {"intervals": interval_table(results, present)}
    optional = {"paired_tests": paired_comparisons(results, present), "universal_share": universal_share(results),
                "auddc": auddc_table(results)}
    tables.update({name: table for name, table in optional.items() if len(table)})
    return tables


@styled
def distortion_figure(curves: pd.DataFrame):
    """Relative output distortion against the budget fraction, one line per model."""
    figure, axes = paper_figure(width="single")
    axis = axes.flat[0]
    for model, curve in curves.groupby("model", sort=False):
        axis.plot(curve["budget_fraction"], curve["relative_output"], marker="o", label=str(model))
    attack = curves["attack"].iloc[0] if len(curves) else ""
    axis.set_xlabel("λ / λ_max (fraction of the largest budget)")
    axis.set_ylabel("‖x̃_a − x_t‖ / ‖x̃ − x_t‖ (ratio)")
    axis.set_title(f"distortion-distortion curve ({attack} attack)")
    axis.set_ylim(bottom=0)
    axis.legend()
    return figure


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
