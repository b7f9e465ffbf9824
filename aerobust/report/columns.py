"""The results schema the report reads: result columns, their labels, the attack names.

Kept in one module so that one place says what a results.csv holds and how each column is named.
"""
from __future__ import annotations

from dataclasses import dataclass

LATENT_ATTACK = "latent"
MAX_DAMAGE_ATTACK = "max-damage"
CLASSIFIER_ATTACK = "latent-classifier"
KNOWN_ATTACK_ORDER = (LATENT_ATTACK, MAX_DAMAGE_ATTACK, CLASSIFIER_ATTACK)

KEY_COLUMNS = ("model", "attack", "lambda", "trial", "image_id")
RESULT_COLUMNS = (
    "model", "attack", "lambda", "radius", "trial", "image_id", "target_id", "label", "target_label",
    "attack_loss", "l2_delta", "msssim_input_adv", "msssim_target_advrecon", "msssim_input_advrecon",
    "msssim_recon_advrecon", "l2_recon_advrecon", "l2_target_advrecon", "latent_target_distance",
    "classifier_correct", "clean_classifier_correct",
    "msssim_input_recon", "mse_input_recon", "latent_shift", "relative_code_shift",
)
# Clean behaviour of the model on the audited image: one value per image, repeated in every block.
CLEAN_COLUMNS = ("clean_classifier_correct", "msssim_input_recon", "mse_input_recon")
STATISTICS = ("mean", "std", "n", "rows")
INTEGER_COLUMNS = ("trial", "image_id", "target_id", "label", "target_label")
# The attack's absolute budget for each lambda (its unit is the attack's --budget): a setting, not a measurement.
SETTING_COLUMNS = ("radius",)
FLOAT_COLUMNS = tuple(c for c in RESULT_COLUMNS
                      if c not in ("model", "attack", "lambda", *SETTING_COLUMNS, *INTEGER_COLUMNS))
EXAMPLE_COLUMNS = ("input x", "clean reconstruction", "adversarial x_a", "adversarial reconstruction",
                   "target x_t")


@dataclass(frozen=True)
class Metric:
    """A per-row result column, how tables and figures name it (plain text and LaTeX), and which way is better.

    ``direction``: "higher" or "lower" is better (more robust under attack, more faithful when clean);
    None where neither is (the attack's own loss and budget, how visible the perturbation is).
    """

    column: str
    text: str
    latex: str
    percent: bool = False
    direction: str | None = None


METRICS_BY_COLUMN = {m.column: m for m in (
    Metric("attack_loss", "attack loss", "attack loss"),
    Metric("l2_delta", "‖x_a − x‖", r"$\|x_a - x\|_2$"),
    Metric("msssim_input_adv", "MS-SSIM(x_r, x_a), x_r = x", r"MS-SSIM($x_r, x_a$), $x_r = x$"),
    Metric("msssim_target_advrecon", "MS-SSIM(x_r, x̃_a), x_r = x_t", r"MS-SSIM($x_r, \tilde{x}_a$), $x_r = x_t$",
           direction="lower"),
    Metric("msssim_input_advrecon", "MS-SSIM(x, x̃_a)", r"MS-SSIM($x, \tilde{x}_a$)", direction="higher"),
    Metric("msssim_recon_advrecon", "MS-SSIM(x̃_r, x̃_a)", r"MS-SSIM($\tilde{x}_r, \tilde{x}_a$)", direction="higher"),
    Metric("l2_recon_advrecon", "‖x̃_a − x̃_r‖", r"$\|\tilde{x}_a - \tilde{x}_r\|_2$", direction="lower"),
    Metric("l2_target_advrecon", "‖x̃_a − x_t‖", r"$\|\tilde{x}_a - x_t\|_2$", direction="higher"),
    Metric("latent_target_distance", "‖g(x_a) − g(x_t)‖", r"$\|g(x_a) - g(x_t)\|_2$", direction="higher"),
    Metric("classifier_correct", "accuracy under attack (%)", r"accuracy under attack (\%)", True, "higher"),
    Metric("clean_classifier_correct", "clean accuracy (%)", r"clean accuracy (\%)", True, "higher"),
    Metric("msssim_input_recon", "clean MS-SSIM(x, x̃)", r"clean MS-SSIM($x, \tilde{x}$)", direction="higher"),
    Metric("mse_input_recon", "clean MSE(x, x̃)", r"clean MSE($x, \tilde{x}$)", direction="lower"),
    Metric("latent_shift", "‖g(x_a) − g(x)‖", r"$\|g(x_a) - g(x)\|_2$", direction="lower"),
    Metric("relative_code_shift", "‖g(x_a) − g(x)‖ / code separation",
           r"$\|g(x_a) - g(x)\|_2$ / code separation", direction="lower"),
)}

ATTACK_TITLES = {LATENT_ATTACK: "latent-space attack", MAX_DAMAGE_ATTACK: "maximum-damage attack",
                 CLASSIFIER_ATTACK: "latent-classifier attack"}

CLEAN_ATTACK = "clean"  # the attack level of clean-behaviour columns in the tables


def attack_title(attack: str) -> str:
    """A readable attack name: the built-in ones spelled out, a plugin's name with "attack" after it."""
    if attack == CLEAN_ATTACK:
        return "no attack"
    return ATTACK_TITLES.get(attack, f"{attack} attack")
