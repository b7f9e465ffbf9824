"""Views over the analyses beside the audit tables: the statistics tables of a report (intervals, paired
tests, universal share, AUDDC) and the distortion-distortion curve.

The analyses compute their numbers (:mod:`aerobust.stats`, :mod:`aerobust.distortion`); here they become
tables and figures in the report style, written by ``writer.save_figure``/``write_table`` like every other
table and figure.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

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
