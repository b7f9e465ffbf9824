"""The posterior KL attack on VAEs: minimise KL(q(z|x + d) || q(z|x_t)) towards a target image's posterior.

Paper: Gondim-Ribeiro, Tabacof and Valle, Adversarial attacks on variational autoencoders (2018).
Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
Arguments: the options of :class:`aerobust.attacks.Attack` (optimizer="pgd", steps=100, restarts=2,
    step_size=0.25, budget="l2", ...).
Shape: x (N, C, H, W), targets (trials, N, C, H, W) -> x_adv (L, trials, N, C, H, W), loss (L, trials, N).

Examples::
    >>> attack = ATTACKS.create("latent-kl", steps=100)
    >>> result = attack.sweep(vae, x, [1.0], trials=2, seed=0, targets=targets)
"""
from __future__ import annotations

from ..registry import register_attack
from .base import Attack


@register_attack("latent-kl")
class LatentKLAttack(Attack):
    """Posterior KL attack on VAEs: minimise KL(q(z|x + d) || q(z|x_t)) towards a target image's posterior."""

    objective_name = "latent-kl"
    needs_targets = True
