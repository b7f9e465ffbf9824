"""The maximum-damage attack: push the reconstruction of x + d as far as possible from that of x.

Paper: Saseendran et al., Trading off Image Quality for Robustness is not Necessary with Regularized
    Deterministic Autoencoders, eq. 13 (maximise ||f(g(x + d)) - f(g(x))||_2).
Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
Arguments: the options of :class:`aerobust.attacks.Attack` (optimizer="pgd", steps=100, restarts=2,
    step_size=0.25, budget="l2", ...).
Shape: x (N, C, H, W) in [0, 1] -> SweepResult.x_adv (L, trials, N, C, H, W), attack_loss (L, trials, N).

Examples::
    >>> attack = ATTACKS.create("max-damage", steps=100)
    >>> result = attack.sweep(model, x, [1.0, 3.0], trials=2, seed=0)
"""
from __future__ import annotations

from ..registry import register_attack
from .base import Attack


@register_attack("max-damage")
class MaxDamageAttack(Attack):
    """Maximum-damage attack: push the reconstruction of x + d as far as possible from that of x."""

    objective_name = "max-damage"
