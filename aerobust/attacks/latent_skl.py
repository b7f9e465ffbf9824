"""The symmetric posterior KL attack on VAEs: minimise KL(q_a || q_t) + KL(q_t || q_a) to a target's posterior.

Paper: Kuzina, Welling and Tomczak, Diagnosing vulnerability of variational auto-encoders to
    adversarial attacks (RobustML workshop, ICLR 2021).
Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
Arguments: the options of :class:`aerobust.attacks.Attack` (optimizer="pgd", steps=100, restarts=2,
    step_size=0.25, budget="l2", ...).
Shape: x (N, C, H, W), targets (trials, N, C, H, W) -> x_adv (L, trials, N, C, H, W), loss (L, trials, N).

Examples::
    >>> attack = ATTACKS.create("latent-skl", steps=100)
    >>> result = attack.sweep(vae, x, [1.0], trials=2, seed=0, targets=targets)
"""
from __future__ import annotations

from ..registry import register_attack
from .base import Attack


@register_attack("latent-skl")
class LatentSymmetricKLAttack(Attack):
    """Symmetric posterior KL attack on VAEs: minimise KL(q_a || q_t) + KL(q_t || q_a) to a target's posterior."""

    objective_name = "latent-skl"
    needs_targets = True
