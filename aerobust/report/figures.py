"""The audit's figures: Fig. 2 (attack loss against lambda), robustness against fidelity, Fig. 3 examples."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .columns import ATTACK_TITLES, EXAMPLE_COLUMNS, METRICS_BY_COLUMN
from .results_io import lambda_text
from .statistics import clean_statistics, ordered_attacks, table1_metrics, trial_statistics

def _panel_per_attack(results: pd.DataFrame):
    """A figure with one titled panel per attack; returns (figure, [(axis, attack)])."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = ordered_attacks(results)
    figure, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.4), squeeze=False)
    for axis, attack in zip(axes[0], attacks):
        axis.set_title(ATTACK_TITLES.get(attack, attack))
        axis.grid(alpha=0.3)
    return figure, list(zip(axes[0], attacks))


def _with_model_legend(figure, panels):
    handles, labels = panels[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5),
                      bbox_to_anchor=(0.5, 1.08), frameon=False)
    figure.tight_layout()
    return figure


def attack_loss_figure(results: pd.DataFrame):
    """Fig. 2: attack loss against lambda, one panel per attack, mean ± std over trials per model."""
    figure, panels = _panel_per_attack(results)
    stats = trial_statistics(results, "attack_loss").reset_index()
    for axis, attack in panels:
        for model in dict.fromkeys(results["model"]):
            rows = stats[(stats["attack"] == attack) & (stats["model"] == model)].sort_values("lambda")
            if rows.empty or rows["mean"].isna().all():
                continue
            line, = axis.plot(rows["lambda"], rows["mean"], marker="o", label=model)
            band = rows["std"].fillna(0.0)
            axis.fill_between(rows["lambda"], rows["mean"] - band, rows["mean"] + band,
                              color=line.get_color(), alpha=0.2)
        axis.set_xlabel("λ (L2 budget)")
        axis.set_ylabel("attack loss")
    return _with_model_legend(figure, panels)


def robustness_fidelity_figure(results: pd.DataFrame):
    """Robustness against clean fidelity: per attack, each model's Table-1 robustness score per lambda
    (y) at its clean MS-SSIM(x, x̃) (x). A model far left reconstructs badly, whatever its robustness."""
    figure, panels = _panel_per_attack(results)
    fidelity = clean_statistics(results, "msssim_input_recon")[("clean", "msssim_input_recon", "", "mean")]
    for axis, attack in panels:
        column = table1_metrics(results, attack)[0]
        stats = trial_statistics(results[results["attack"] == attack], column, by=("model", "lambda")).reset_index()
        for model in dict.fromkeys(results["model"]):
            rows = stats[stats["model"] == model].sort_values("lambda")
            x = np.full(len(rows), fidelity.get(model, np.nan))
            points = axis.scatter(x, rows["mean"], label=model)
            for x_value, (_, row) in zip(x, rows.iterrows()):
                axis.annotate(f"λ={lambda_text(row['lambda'])}", (x_value, row["mean"]), fontsize=7,
                              xytext=(4, 0), textcoords="offset points", color=points.get_facecolor()[0])
        # The whole fidelity range, so that a model that reconstructs nothing stands apart at the left.
        axis.set_xlim(min(0.0, float(np.nanmin(fidelity.to_numpy(), initial=0.0))) - 0.02, 1.02)
        axis.set_xlabel("clean MS-SSIM(x, x̃) (fidelity)")
        axis.set_ylabel(METRICS_BY_COLUMN[column].text)
    return _with_model_legend(figure, panels)


def example_grid_figure(examples: dict, attack: str, lam: str, per_model: int = 2):
    """Fig. 3: rows of input | clean reconstruction | adversarial input | its reconstruction | target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(model, grid) for (model, a, l), array in examples.items() if a == attack and l == lam
            for grid in array[:per_model]]
    if not rows:
        return None
    has_target = any(not np.isnan(grid[4]).all() for _, grid in rows)
    columns = EXAMPLE_COLUMNS if has_target else EXAMPLE_COLUMNS[:4]
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(1.5 * len(columns) + 1.2, 1.5 * len(rows)),
                                squeeze=False)
    previous_model = None
    for row, (model, grid) in enumerate(rows):
        for col, title in enumerate(columns):
            axis = axes[row][col]
            image = grid[col]
            axis.set_xticks([])
            axis.set_yticks([])
            if np.isnan(image).all():
                axis.set_facecolor("#eeeeee")
            elif image.shape[0] == 1:
                axis.imshow(image[0], cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
            if row == 0:
                axis.set_title(title, fontsize=8)
        if model != previous_model:
            axes[row][0].set_ylabel(model, fontsize=8)
            previous_model = model
    figure.suptitle(f"{ATTACK_TITLES.get(attack, attack)}, λ = {lam}", fontsize=10)
    figure.tight_layout()
    return figure

