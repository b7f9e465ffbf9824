"""Universal perturbations: one perturbation for the whole image set (maximum mean reconstruction damage).

Per (lambda, trial, restart) one perturbation ``v`` with ``||v|| <= lambda`` is fitted by projected
gradient ascent (``steps``, ``step_size``, ``schedule`` as for PGD, the engine's
:func:`~aerobust.attacks.optimizers.projected_step`) on the mean over all images of eq. 13 at
``clip(x + v, 0, 1)``; every image then gets ``x + P_x(v)``, the exact projection onto its own threat
set (for ``||v|| <= lambda`` that is the clip to the pixel box). Its attack loss beside the per-image
max-damage attack's shows how much of the per-image damage one shared pattern reaches. ``restarts``
defaults to 1: with more, the sweep keeps each image's worst restart, so an image may then take
another of the shared patterns than its neighbour.

Paper: Moosavi-Dezfooli et al., Universal adversarial perturbations (CVPR 2017), here on eq. 13.
Distance: one shared perturbation in the L2 (or L-inf) ball of radius lambda, clipped to the box per image.
Arguments: steps (default 100), step_size (0.25), schedule ("cosine"), restarts (1) and the options of
    :class:`aerobust.attacks.Attack`.
Shape: x (N, C, H, W) in [0, 1] -> SweepResult.x_adv (L, trials, N, C, H, W); one pattern per (L, trial).

Examples::
    >>> attack = ATTACKS.create("universal", steps=100)
    >>> result = attack.sweep(model, x, [1.0], trials=1, seed=0)
"""
from __future__ import annotations

import contextlib
import math

import torch

from ..errors import AerobustError
from ..registry import register_attack
from ..threat import Threat
from .base import Attack
from .optimizers import ScheduledSteps, projected_step
from .problem import AttackProblem, OptimizationResult, input_gradient, sample_seeds


@register_attack("universal")
class UniversalAttack(Attack):
    """One perturbation for the whole image set (maximum mean reconstruction damage), projected per image."""

    objective_name = "max-damage"
    settings_class = ScheduledSteps
    fits_over_image_set = True

    def __init__(self, *, restarts: int = 1, **options):
        super().__init__(restarts=restarts, **options)
        self._fitted: dict | None = None

    @contextlib.contextmanager
    def over_image_set(self, model, x, radii, trials, seed, image_ids):
        """Fits the shared perturbations on all of ``x``; ``optimize`` looks them up per row meanwhile."""
        self._fitted = self._fit(model, x, radii, trials, seed, image_ids)
        try:
            yield
        finally:
            self._fitted = None

    def _fit(self, model, x: torch.Tensor, radii: list[float], trials: int, seed: int, ids: torch.Tensor) -> dict:
        """{(radius, row seed): shared perturbation}, keyed like the rows the sweep builds."""
        groups = [(size, t, r) for size in radii for t in range(trials) for r in range(self.restarts) if size > 0]
        if not groups:
            return {}
        count, n_images = len(groups), len(x)
        radius = torch.tensor([g[0] for g in groups], dtype=x.dtype, device=x.device)
        # "auto" chunks one image set at a time: the least the sweep attacks at once for one lambda.
        chunk_size = n_images if self.batch_size == "auto" else self.batch_size
        ball = Threat(radius, self.norm)
        # Around mid-grey the box [-0.5, 0.5] leaves the start a uniform draw from the ball for any
        # budget below half the pixel range; it only seeds the ascent.
        grey = torch.full((count, *x.shape[1:]), 0.5, dtype=x.dtype, device=x.device)
        shared = ball.random_start(grey, sample_seeds(seed, "universal", [g[1] for g in groups], [g[2] for g in groups]))
        unit_box = (-torch.ones_like(grey), torch.ones_like(grey))
        objective = self.objective.bind(model, x)
        best, best_damage = shared.clone(), torch.full((count,), -math.inf, device=x.device)
        rows = torch.arange(count * n_images, device=x.device)
        steps = self.settings.steps
        for step in range(steps + 1):
            damage = torch.zeros(count, device=x.device)
            gradient = torch.zeros_like(shared)
            for chunk in rows.split(chunk_size):
                group, image = chunk // n_images, chunk % n_images
                with torch.enable_grad():
                    pattern = shared.detach().requires_grad_(True)
                    values = objective.select(image).values((x[image] + pattern[group]).clamp(0.0, 1.0))
                    total = torch.zeros(count, device=x.device).index_add(0, group, values) / n_images
                    gradient += input_gradient(-total, pattern)
                damage += total.detach()
            improved = damage > best_damage
            best[improved], best_damage[improved] = shared[improved], damage[improved]
            if step == steps:
                break
            shared, _, _ = projected_step(ball, grey, shared, gradient, self.settings.step_length(step, radius),
                                          unit_box)
        row_seeds = {}
        for index, (size, t, r) in enumerate(groups):
            key_radius = float(torch.tensor(size, dtype=x.dtype))
            for row_seed in sample_seeds(seed, "start", [t] * n_images, ids.tolist(), [r] * n_images).tolist():
                row_seeds[(key_radius, row_seed)] = best[index]
        return row_seeds

    def optimize(self, problem: AttackProblem) -> OptimizationResult:
        if self._fitted is None:
            raise AerobustError("the universal attack fits one perturbation over a whole image set; "
                                "run it through sweep() (or an audit), not on single rows")
        radii = problem.threat.radii(problem.x).tolist()
        try:
            shared = torch.stack([self._fitted[(float(lam), int(s))] for lam, s in zip(radii, problem.seeds.tolist())])
        except KeyError:
            raise AerobustError("the universal attack was asked for rows it did not fit; run it through sweep()") from None
        return OptimizationResult(problem.threat.apply(problem.x, shared.to(problem.x.device)))
