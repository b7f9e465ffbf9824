"""Figures of ``aerobust reproduce``: a view over the curves it computes (its tables go through the writer)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .style import paper_figure, styled

# Panels of the paper's Fig. 2: title and y-label (quantity, unit, which way is a stronger attack).
FIG2_PANELS = {
    "latent": ("(a) latent-space attack (eq. 12)", "‖g(x_a) − g(x_t)‖₂, code units\n(lower = stronger attack)"),
    "max-damage": ("(b) maximum-damage attack (eq. 13)",
                   "‖f(g(x_a)) − f(g(x))‖₂, pixel units\n(higher = stronger attack)"),
}


def row_colors(count: int) -> list:
    """``count`` distinct colours for the rows other than the highlighted one (which is black)."""
    import matplotlib

    return [matplotlib.colormaps["tab10"](k % 10) for k in range(count)]


@styled
def attack_loss_over_seeds_figure(curves: pd.DataFrame, models: list[str], ours: str):
    """Fig. 2 over seeds: attack loss against lambda with its 95 % interval (``curves``: model, attack, lambda,
    mean, low, high); ``ours`` in black and thicker; one legend with every row under both panels."""
    figure, axes = paper_figure(1, 2, width="double", height=3.2)
    axes = axes[0]
    colors = dict(zip([m for m in models if m != ours], row_colors(len(models))))
    for axis, (attack, (title, label)) in zip(axes, FIG2_PANELS.items()):
        for model in models:
            rows = curves[(curves["model"] == model) & (curves["attack"] == attack)].sort_values("lambda")
            if rows.empty or np.isnan(rows["mean"]).all():
                continue
            highlighted = model == ours
            line, = axis.plot(rows["lambda"], rows["mean"], marker="o", label=model,
                              color="black" if highlighted else colors[model], linewidth=2.4 if highlighted else 1.2,
                              zorder=3 if highlighted else 2)
            axis.fill_between(rows["lambda"], rows["low"], rows["high"], color=line.get_color(), alpha=0.12,
                              linewidth=0)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("λ (L2 budget, pixel units)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].text(0.98, 0.98, "codes of different scales (GMM prior ~10x the VAEs'):\nnot comparable across models",
                 fontsize=6, color="#B00000", transform=axes[0].transAxes, va="top", ha="right")
    handles, names = axes[1].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncol=min(len(names), 5), fontsize=7)
    return figure
