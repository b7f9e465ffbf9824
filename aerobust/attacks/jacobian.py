"""Kuzina et al.'s unsupervised attack: the encoder Jacobian's top singular direction at the full budget.

The direction (power iteration, ``power_iterations`` steps) is scaled to the budget (L2 norm or
L-inf norm lambda), projected onto the threat set, and of its two signs the one doing more
reconstruction damage (the max-damage objective, eq. 13) is kept. One shot, no gradient steps:
beside max-damage it shows whether a single local direction already breaks the model.

Paper: Kuzina, Welling and Tomczak (2021), the encoder-Jacobian (unsupervised) attack.
Distance: L2 ball of radius lambda (budget="linf": the direction scaled to L-inf lambda), inside the box.
Arguments: power_iterations (int, default 20), restarts (int, default 1) and the options of
    :class:`aerobust.attacks.Attack` (no optimizer settings: it runs its own one-shot search).
Shape: x (N, C, H, W) in [0, 1] -> SweepResult.x_adv (L, trials, N, C, H, W).

Examples::
    >>> attack = ATTACKS.create("jacobian", power_iterations=20)
    >>> result = attack.sweep(model, x, [1.0], trials=1, seed=0)
"""
from __future__ import annotations

import dataclasses

import torch

from ..registry import register_attack
from ..threat import seeded_noise
from .base import Attack
from .problem import AttackProblem, OptimizationResult
from .settings import OptimizerSettings, setting, whole_number


def _jacobian_products(encode, x: torch.Tensor):
    """``(J v, J^T u)`` at ``x`` as two functions, from one forward pass of ``encode``.

    ``J v`` is taken in forward mode (``torch.func.jvp``); encoders with operations that have no
    forward-mode rule (e.g. custom autograd functions without ``jvp``) get it from the same graph
    by differentiating the pullback with respect to its cotangent (the double-backward trick).
    """
    inputs = x.detach().requires_grad_(True)
    codes = encode(inputs)
    cotangent = torch.zeros_like(codes, requires_grad=True)
    (pulled,) = torch.autograd.grad(codes, inputs, cotangent, create_graph=True)

    def pullback(u: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(codes, inputs, u, retain_graph=True)[0]

    def backward_mode(v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(pulled, cotangent, v, retain_graph=True)[0]

    def forward_mode(v: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(encode, (x,), (v,))[1]

    try:
        forward_mode(torch.zeros_like(x))
    except (RuntimeError, NotImplementedError):
        return backward_mode, pullback
    return forward_mode, pullback


def top_singular_directions(encode, x: torch.Tensor, iterations: int,
                            seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the top right-singular vector of the encoder Jacobian at ``x`` and its singular value.

    Batched power iteration on ``J^T J`` with Jacobian-vector and vector-Jacobian products
    (:func:`_jacobian_products`); rows are independent because the encoder treats images
    independently. The start of each row is a normal draw from its seed.
    Returns ``(directions (B, C, H, W) of unit L2 norm, singular values (B,))``.
    """
    start, _ = seeded_noise(seeds, x.shape[1:], x.device)
    direction = start.to(x.dtype)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    with torch.enable_grad():
        forward, pullback = _jacobian_products(encode, x)
        for _ in range(int(iterations)):
            image = pullback(forward(direction))
            size = image.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
            # A zero Jacobian (dead units) has no top direction: keep the previous iterate there.
            direction = torch.where(size > 0, image / size.clamp_min(1e-30), direction).detach()
        singular = forward(direction).flatten(1).norm(dim=1).detach()
    return direction, singular


@dataclasses.dataclass(frozen=True)
class JacobianSettings(OptimizerSettings):
    """The power iteration's length: the only setting of the Jacobian attack's search."""

    power_iterations: int = setting(20, whole_number(1))


@register_attack("jacobian")
class JacobianAttack(Attack):
    """Kuzina et al.'s unsupervised attack: the encoder Jacobian's top singular direction at the full budget."""

    objective_name = "max-damage"
    settings_class = JacobianSettings

    def __init__(self, *, restarts: int = 1, **options):
        super().__init__(restarts=restarts, **options)

    def optimize(self, problem: AttackProblem) -> OptimizationResult:
        model = problem.objective.model
        x = problem.x
        direction, _ = top_singular_directions(model.encode, x, self.settings.power_iterations, problem.seeds)
        shape = (-1, *([1] * (x.dim() - 1)))
        if self.norm == "linf":
            direction = direction / direction.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(shape)
        delta = direction * problem.threat.radii(x).view(shape)
        with torch.no_grad():
            plus, minus = problem.threat.apply(x, delta), problem.threat.apply(x, -delta)
            stronger = problem.objective.stronger(problem.values(minus), problem.values(plus))
        return OptimizationResult(torch.where(stronger.view(shape), minus, plus))
