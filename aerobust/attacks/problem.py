"""The attack contract: the problem an optimizer solves, what it returns, what a sweep returns, seeds.

Imports no other module of ``aerobust.attacks``: optimizers, the sweep engine, the sanity checks and
plugins all build on it.

Determinism: every random draw of a sample (start point, target class, noise baseline) comes from a
seed derived from ``(seed, trial, image_id, restart)`` (:func:`derive_seed`), never from a shared
generator, so a result does not depend on which other lambdas, trials or images share the call.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..objectives import BoundObjective
from ..threat import Threat


def derive_seed(seed: int, *parts) -> int:
    """A 63-bit seed determined by ``seed`` and ``parts`` alone (stable across runs and platforms)."""
    text = "|".join(str(part) for part in (int(seed), *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def sample_seeds(seed: int, tag: str, *columns: Sequence) -> torch.Tensor:
    """One :func:`derive_seed` per row of ``columns`` (e.g. trials, image ids, restarts), as a (B,) tensor."""
    return torch.tensor([derive_seed(seed, tag, *row) for row in zip(*columns)], dtype=torch.long)


def input_gradient(loss: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """d loss.sum() / d inputs; zero when the loss does not depend on the inputs at all."""
    if not loss.requires_grad:
        return torch.zeros_like(inputs)
    (grad,) = torch.autograd.grad(loss.sum(), inputs, allow_unused=True)
    return torch.zeros_like(inputs) if grad is None else grad


@dataclass
class AttackProblem:
    """One flat batch to attack: images, their threat, the bound objective and per-sample seeds.

    ``model``, ``classifier``, ``labels`` (B,), ``targets`` (B, C, H, W) and ``target_classes`` (B,)
    are the raw inputs of the rows, for custom optimizers that need them (e.g. library attacks on
    the latent classifier); built-in optimizers use only the objective.
    """

    x: torch.Tensor
    threat: Threat
    objective: BoundObjective
    seeds: torch.Tensor
    model: nn.Module | None = None
    classifier: nn.Module | None = None
    labels: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    target_classes: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def select(self, index: torch.Tensor) -> "AttackProblem":
        index = torch.as_tensor(index, dtype=torch.long)
        rows = index.to(self.x.device)
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return AttackProblem(self.x[rows], self.threat.select(index), self.objective.select(rows),
                             self.seeds[index.cpu()], self.model, self.classifier, pick(self.labels),
                             pick(self.targets), pick(self.target_classes))

    def random_start(self) -> torch.Tensor:
        """A feasible random perturbation per sample (uniform in the ball, projected on the box)."""
        return self.threat.random_start(self.x, self.seeds)

    def values(self, x_adv: torch.Tensor) -> torch.Tensor:
        return self.objective.values(x_adv)

    def loss_and_grad(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective values (paper sense) at ``x + delta`` and the gradient of the minimized loss."""
        with torch.enable_grad():
            delta = delta.detach().requires_grad_(True)
            values = self.objective.values(self.x + delta)
            loss = -values if self.objective.maximize else values
            grad = input_gradient(loss, delta)
        return values.detach(), grad


@dataclass
class OptimizationResult:
    """What ``optimize`` returns: adversarial images, optional per-step values, diagnostics.

    ``history`` is (B, S) objective values in the paper's sense; ``zero_gradient``/``nan_gradient``
    are (B,) masks gradient optimizers fill for the sanity flags.
    """

    x_adv: torch.Tensor
    history: torch.Tensor | None = None
    zero_gradient: torch.Tensor | None = None
    nan_gradient: torch.Tensor | None = None


@dataclass
class SweepResult:
    """Per-sample results of one sweep; leading dims are (lambda, trial, image)."""

    x_adv: torch.Tensor            # (L, T, N, C, H, W)
    attack_loss: torch.Tensor      # (L, T, N), paper sense (eq. 12: lower is stronger; eq. 13: higher)
    delta_norm: torch.Tensor       # (L, T, N), ||x_adv - x||_2
    history: torch.Tensor | None   # (L, T, N, steps) objective value at each iterate, or None
    lambdas: list[float]           # in the attack's budget unit
    radii: list[float]             # the absolute radius of each lambda, in the threat's norm
    trials: int
    flags: list[dict]
    config: dict
    clean_loss: torch.Tensor | None = None    # (T, N) objective at x itself (lambda = 0)
    restart: torch.Tensor | None = None       # (L, T, N) index of the restart that was kept
    target_classes: torch.Tensor | None = None  # (T, N) for the targeted latent-classifier attack

    @property
    def maximize(self) -> bool:
        return bool(self.config["objective"]["maximize"])
