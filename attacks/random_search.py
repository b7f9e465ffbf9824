"""Plugin example written from scratch: gradient-free random search (any objective, L2 or L-inf).

Load with ``aerobust audit --plugin attacks/random_search.py --attacks random-search``. Each step proposes, for every
sample, the current perturbation plus a random direction of a shrinking size, projects it onto the
threat and keeps it when the objective improves. Every sample draws from its own generator
(seeded by the base class per lambda/trial/image/restart), so results do not depend on the batch.
Pass ``objective="latent"`` (with targets) to search eq. 12 instead of the default eq. 13.
"""
import dataclasses

import torch

from aerobust.attacks import Attack, OptimizationResult
from aerobust.attacks.settings import OptimizerSettings, finite_number, flag, setting, whole_number
from aerobust.objectives import make_objective
from aerobust.registry import register_attack


@dataclasses.dataclass(frozen=True)
class RandomSearchSettings(OptimizerSettings):
    """What optimize() reads (recorded in configs): steps, the start, the first step as a fraction of lambda."""

    steps: int = setting(300, whole_number(1))
    random_start: bool = setting(True, flag)
    initial_size: float = setting(0.5, finite_number(0, inclusive=False, meaning=" (a fraction of lambda)"))


@register_attack("random-search")
class RandomSearch(Attack):
    """Random search: keep a random step of shrinking size whenever it strengthens the attack.

    Paper: none in particular (the gradient-free baseline; cf. Andriushchenko et al.'s Square Attack).
    Distance: the attack's threat, L2 or L-inf ball of radius lambda, inside the [0, 1] box.
    Arguments: objective (str, default "max-damage"), initial_size (float, fraction of lambda, default
        0.5), steps (default 300), restarts (default 1) and the options of :class:`aerobust.attacks.Attack`.
    Shape: x (N, C, H, W) in [0, 1] -> SweepResult.x_adv (L, trials, N, C, H, W).

    Examples::
        >>> attack = ATTACKS.create("random-search", steps=300)
        >>> result = attack.sweep(model, x, [1.0], trials=1, seed=0)
    """


    settings_class = RandomSearchSettings

    def __init__(self, *, objective="max-damage", restarts=1, **options):
        self.objective_name = objective
        self.needs_targets = make_objective(objective).needs_targets
        self.needs_classifier = make_objective(objective).needs_classifier
        super().__init__(restarts=restarts, **options)

    def optimize(self, problem):
        x = problem.x
        shape = (-1, *([1] * (x.dim() - 1)))
        generators = [torch.Generator().manual_seed(int(s)) for s in problem.seeds]
        radius = problem.threat.radii(x)
        settings = self.settings
        delta = problem.random_start() if settings.random_start else torch.zeros_like(x)
        with torch.no_grad():
            best = problem.values(x + delta)
            history = torch.empty(len(x), settings.steps, device=x.device)
            for step in range(settings.steps):
                noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators]).to(x)
                noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
                size = settings.initial_size * (1 - step / settings.steps) * radius
                proposal = problem.threat.project(x, delta + noise * size.view(shape))
                values = problem.values(x + proposal)
                better = problem.objective.stronger(values, best)
                delta = torch.where(better.view(shape), proposal, delta)
                best = torch.where(better, values, best)
                history[:, step] = best
        return OptimizationResult(problem.threat.apply(x, delta), history)
