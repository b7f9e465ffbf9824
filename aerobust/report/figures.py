"""The audit's figures: Fig. 2 (attack loss against lambda), robustness against fidelity, Fig. 3 examples.

All are drawn in the paper style (:mod:`.style`) at print size; ``writer.save_figure`` writes PNG and PDF.
Each figure function returns the figure; ``FIGURE_CAPTIONS`` says what a reader sees (bands, directions).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .columns import EXAMPLE_COLUMNS, LATENT_ATTACK, MAX_DAMAGE_ATTACK, CLASSIFIER_ATTACK, METRICS_BY_COLUMN, \
    attack_title
from ..results import lambda_text
from .statistics import clean_statistics, ordered_attacks, table1_metrics, cell_statistics
from ..threat import BUDGETS, lambda_with_unit
from .style import paper_figure, styled

# What the attack loss of each built-in attack is, with its unit and which way is a stronger attack.
ATTACK_LOSS_LABELS = {
    LATENT_ATTACK: "latent distance ‖g(x_a) − g(x_t)‖₂\n(code units; lower = stronger attack)",
    MAX_DAMAGE_ATTACK: "reconstruction distance ‖x̃_a − x̃‖₂\n(pixel units; higher = stronger attack)",
    CLASSIFIER_ATTACK: "cross-entropy of the code classifier\n(nats; higher = stronger attack)",
}
# Median code separations of two models further apart than this factor make their latent distances incomparable.
CODE_SCALE_RATIO = 1.5

FIGURE_CAPTIONS = {
    "fig2_attack_loss": (
        "Figure 2: the attack's own loss against λ, one panel per attack (each with its quantity and which way "
        "is a stronger attack on the y-axis). Lines: mean over images and trials; bands: the 95 % interval over "
        "images (cluster bootstrap: the images are the independent units)."),
    "robustness_vs_fidelity": (
        "Robustness against clean fidelity: per attack, each model's Table-1 robustness score at every λ "
        "(y, its direction on the axis) at the model's clean MS-SSIM(x, x̃) (x), each with its 95 % interval over "
        "images; a model's points are joined in λ order, the smallest and largest λ named. A model far left "
        "reconstructs badly, whatever its robustness score."),
    "fig3": (
        "Figure 3: input x | clean reconstruction x̃ | adversarial input x_a | adversarial reconstruction x̃_a | "
        "target x_t (targeted attacks); under each x̃_a its own score, the Table-1 robustness metric of that "
        "example (computed from the saved images with the audit's MS-SSIM settings)."),
}


def attack_budget(manifest: dict | None, attack: str) -> str | None:
    """The budget unit the audit recorded for ``attack`` (None before budgets were recorded: the paper's L2)."""
    return (((manifest or {}).get("attacks") or {}).get(attack) or {}).get("budget")


def attack_loss_label(attack: str, manifest: dict | None = None) -> str:
    """The y-label of an attack's loss: the built-in description, else what the attack recorded about itself."""
    if attack in ATTACK_LOSS_LABELS:
        return ATTACK_LOSS_LABELS[attack]
    recorded = (((manifest or {}).get("attacks") or {}).get(attack) or {}).get("attack_loss")
    return recorded.replace(", ", "\n(", 1) + ")" if recorded and ", " in recorded else (recorded or "attack loss")


def code_scales(results: pd.DataFrame) -> pd.Series:
    """Median code separation per model (the median distance between the codes of two audited images),
    recovered from the code shift in absolute and in separation units; NaN where not recorded."""
    separation = results["latent_shift"] / results["relative_code_shift"]
    separation = separation.where(np.isfinite(separation) & (separation > 0))
    return separation.groupby(results["model"], sort=False).median()


def incomparable_code_scales(results: pd.DataFrame) -> pd.Series | None:
    """The models' code scales when they differ by more than CODE_SCALE_RATIO (latent distances then do not
    compare across models, as the reference paper warns); None when they agree or are unknown."""
    scales = code_scales(results).dropna()
    if len(scales) < 2 or scales.max() <= CODE_SCALE_RATIO * scales.min():
        return None
    return scales


def _panels(results: pd.DataFrame, height_per_row: float = 2.3):
    """One titled panel per attack, up to three per row at the full text width; returns (figure, [(axis, attack)])."""
    attacks = ordered_attacks(results)
    ncols = min(3, len(attacks))
    nrows = math.ceil(len(attacks) / ncols)
    figure, axes = paper_figure(nrows, ncols, width="double", height=height_per_row * nrows + 0.3)
    for axis in list(axes.flat)[len(attacks):]:
        axis.set_visible(False)
    for axis, attack in zip(axes.flat, attacks):
        axis.set_title(attack_title(attack))
    return figure, list(zip(axes.flat, attacks))


def _model_legend(figure, panels):
    handles, labels = panels[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 5))
    return figure


@styled
def attack_loss_figure(results: pd.DataFrame, manifest: dict | None = None):
    """Fig. 2: attack loss against lambda, one panel per attack, mean and its 95 % interval over images per model."""
    figure, panels = _panels(results)
    stats = cell_statistics(results, "attack_loss").reset_index()
    scales = incomparable_code_scales(results)
    for axis, attack in panels:
        for model in dict.fromkeys(results["model"]):
            rows = stats[(stats["attack"] == attack) & (stats["model"] == model)].sort_values("lambda")
            if rows.empty or rows["mean"].isna().all():
                continue
            line, = axis.plot(rows["lambda"], rows["mean"], marker="o", label=model)
            axis.fill_between(rows["lambda"], rows["low"], rows["high"], color=line.get_color(), alpha=0.2,
                              linewidth=0)
        axis.set_xlabel(f"λ: {BUDGETS.get(attack_budget(manifest, attack) or 'l2', ('', 'attack budget'))[1]}",
                        fontsize=7)
        axis.set_ylabel(attack_loss_label(attack, manifest))
        if attack == LATENT_ATTACK and scales is not None:
            axis.text(0.02, 0.02, "codes of different scales:\nnot comparable across models", fontsize=6,
                      color="#B00000", transform=axis.transAxes, va="bottom")
    return _model_legend(figure, panels)


@styled
def robustness_fidelity_figure(results: pd.DataFrame, manifest: dict | None = None):
    """Robustness against clean fidelity: per attack, each model's Table-1 robustness score per lambda
    (y) at its clean MS-SSIM(x, x̃) (x), both with their 95 % intervals over images. A model's points
    (one per lambda) are joined in lambda order and the smallest and largest lambda are named at the
    ends, so that labels of neighbouring points do not overlap. The x range fits the data (with a
    margin): a model far left of the others reconstructs badly, whatever its robustness."""
    figure, panels = _panels(results)
    clean = clean_statistics(results, "msssim_input_recon")
    fidelity = clean[("clean", "msssim_input_recon", "", "mean")]
    low_x, high_x = clean[("clean", "msssim_input_recon", "", "low")], clean[("clean", "msssim_input_recon", "", "high")]
    for axis, attack in panels:
        column = table1_metrics(results, attack)[0]
        stats = cell_statistics(results[results["attack"] == attack], column, by=("model", "lambda")).reset_index()
        for model in dict.fromkeys(results["model"]):
            rows = stats[stats["model"] == model].sort_values("lambda")
            if rows.empty or model not in fidelity:
                continue
            x = np.full(len(rows), fidelity[model])
            xerr = np.array([[fidelity[model] - low_x[model]], [high_x[model] - fidelity[model]]]).repeat(len(rows), 1)
            yerr = np.vstack([rows["mean"] - rows["low"], rows["high"] - rows["mean"]])
            bars = axis.errorbar(x, rows["mean"], xerr=xerr, yerr=yerr, fmt="o-", capsize=2, label=model)
            color = bars[0].get_color()
            for position in {0, len(rows) - 1}:
                row = rows.iloc[position]
                axis.annotate(f"λ = {lambda_with_unit(lambda_text(row['lambda']), attack_budget(manifest, attack))}", (x[position], row["mean"]), fontsize=6,
                              xytext=(5, -3 if position == 0 else 3), textcoords="offset points", color=color)
        present = fidelity.dropna()
        if len(present):
            span = max(float(high_x.max() - low_x.min()), 0.05)
            axis.set_xlim(float(low_x.min()) - 0.15 * span, min(1.0, float(high_x.max())) + 0.35 * span)
        axis.set_xlabel("clean MS-SSIM(x, x̃), unitless\n(fidelity; higher = better)")
        metric = METRICS_BY_COLUMN[column]
        better = {"higher": "higher = more robust", "lower": "lower = more robust"}.get(metric.direction, "")
        axis.set_ylabel(f"{metric.text}\n({better})" if better else metric.text)
    return _model_legend(figure, panels)


def example_scores(grid: np.ndarray, metric_settings) -> float:
    """The Table-1 robustness score of one example from its saved images: MS-SSIM of the adversarial
    reconstruction against the target (targeted) or against the clean reconstruction (untargeted)."""
    import torch

    from ..metrics import ms_ssim

    reference = grid[4] if not np.isnan(grid[4]).all() else grid[1]
    pair = [torch.from_numpy(np.ascontiguousarray(image[None])).float() for image in (reference, grid[3])]
    return float(ms_ssim(pair[0], pair[1], metric_settings)[0])


@styled
def example_grid_figure(examples: dict, attack: str, lam: str, per_model: int = 3, offset: int = 0,
                        metric_settings=None, budget: str | None = None):
    """Fig. 3: per model ``per_model`` rows of input | clean reconstruction | adversarial input | its
    reconstruction | target, starting at example ``offset`` (so that grids of several lambdas show
    different images); with ``metric_settings`` the example's MS-SSIM score under its adversarial reconstruction."""
    rows = []
    for (model, a, l), array in examples.items():
        if a == attack and l == lam:
            chosen = [(offset + k) % len(array) for k in range(min(per_model, len(array)))]
            rows += [(model, array[index]) for index in chosen]
    if not rows:
        return None
    has_target = any(not np.isnan(grid[4]).all() for _, grid in rows)
    columns = EXAMPLE_COLUMNS if has_target else EXAMPLE_COLUMNS[:4]
    reference = "x_t" if has_target else "x̃"
    figure, axes = paper_figure(len(rows), len(columns), width=1.25 * len(columns) + 0.5,
                                height=1.45 * len(rows) + 0.4)
    previous_model = None
    for row, (model, grid) in enumerate(rows):
        for col, title in enumerate(columns):
            axis = axes[row][col]
            image = grid[col]
            axis.set_xticks([])
            axis.set_yticks([])
            axis.grid(False)
            if np.isnan(image).all():
                axis.set_facecolor("#eeeeee")
            elif image.shape[0] == 1:
                axis.imshow(image[0], cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
            if row == 0:
                axis.set_title(title.replace(" ", "\n", 1) if len(title) > 14 else title)
        if metric_settings is not None:
            axes[row][3].set_xlabel(f"MS-SSIM({reference}, x̃_a) = {example_scores(grid, metric_settings):.2f}",
                                    fontsize=7)
        if model != previous_model:
            axes[row][0].set_ylabel(model, fontweight="bold")
            previous_model = model
    figure.suptitle(f"{attack_title(attack)}, λ = {lambda_with_unit(lam, budget)}")
    return figure
