"""The untargeted posterior attack on VAEs: maximise KL(q(z|x + d) || q(z|x)).

Paper: Kuzina, Welling and Tomczak (2021), the untargeted form of the posterior attacks.
Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
Arguments: the options of :class:`aerobust.attacks.Attack` (optimizer="pgd", steps=100, restarts=2,
    step_size=0.25, budget="l2", ...).
Shape: x (N, C, H, W) in [0, 1] -> SweepResult.x_adv (L, trials, N, C, H, W), attack_loss (L, trials, N).

Examples::
    >>> attack = ATTACKS.create("max-kl", steps=100)
    >>> result = attack.sweep(vae, x, [1.0], trials=2, seed=0)
"""
from __future__ import annotations

from ..registry import register_attack
from .base import Attack


@register_attack("max-kl")
class MaxKLAttack(Attack):
    """Untargeted posterior attack on VAEs: maximise KL(q(z|x + d) || q(z|x))."""

    objective_name = "max-kl"
