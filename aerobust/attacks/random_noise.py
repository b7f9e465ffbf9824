"""Random noise of the attack's size: the baseline every maximum-damage score should be read beside.

A perturbation drawn at random on the surface of the budget's ball (L2: a uniform direction at the
full radius; L-inf: every pixel moved by +-lambda with a random sign), then projected onto the
[0, 1] box, and scored with eq. 13 (the distance of the reconstruction of x + d from that of x). No
gradient is taken: the gap between this row and ``max-damage`` at the same budget is what the
optimizer adds over chance. ``restarts`` defaults to 1 (one draw; with more, the worst draw is
kept, which is then no longer plain noise). Each draw comes from the sample's own seed (the one
the gradient attacks' random start uses), so it does not depend on chunking.

Paper: the noise baseline of Kos et al., Adversarial examples for generative models (2018), and of
    PhotoGuard-style encoder attacks; here on eq. 13 of Saseendran et al.
Distance: on the sphere of radius lambda in the budget's norm (L2 or L-inf), inside the [0, 1] box.
Arguments: restarts (1), budget, norm and the other options of :class:`aerobust.attacks.Attack`;
    sanity checks default to off (they judge an optimizer, and this draws no steps).
Shape: x (N, C, H, W) in [0, 1] -> SweepResult.x_adv (L, trials, N, C, H, W), attack_loss (L, trials, N).

Examples::
    >>> attack = ATTACKS.create("random-noise", budget="linf-255")
    >>> result = attack.sweep(model, x, [8.0], trials=1, seed=0)
"""
from __future__ import annotations

import torch

from ..registry import register_attack
from ..threat import seeded_noise
from .base import Attack
from .problem import AttackProblem, OptimizationResult
from .settings import OptimizerSettings


@register_attack("random-noise")
class RandomNoiseAttack(Attack):
    """Random noise at the full budget, scored by the maximum-damage objective (no optimization)."""

    objective_name = "max-damage"
    settings_class = OptimizerSettings  # it draws, it does not step: no settings

    def __init__(self, *, restarts: int = 1, sanity_checks: bool = False, **options):
        super().__init__(restarts=restarts, sanity_checks=sanity_checks, **options)

    def optimize(self, problem: AttackProblem) -> OptimizationResult:
        x = problem.x
        normal, _ = seeded_noise(problem.seeds, x.shape[1:], x.device)
        normal = normal.to(x.dtype)
        radius = problem.threat.radii(x).view(-1, *([1] * (x.dim() - 1)))
        if problem.threat.norm == "l2":
            delta = normal / normal.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(radius) * radius
        else:
            delta = normal.sign() * radius
        x_adv = problem.threat.apply(x, delta)
        with torch.no_grad():
            history = problem.values(x_adv).unsqueeze(1)
        return OptimizationResult(x_adv, history)
