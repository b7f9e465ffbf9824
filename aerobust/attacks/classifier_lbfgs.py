"""Szegedy et al.'s box-constrained L-BFGS attack on an image classifier (scipy L-BFGS-B).

min c ||d||^2 + CE(f(x + d), t) towards a random other class t (drawn from each sample's seed),
bisecting the per-image weight c for the smallest success; a minimum-norm attack (see
:mod:`aerobust.attacks.classifier`): at radius lambda its result counts only where it fools the
classifier within lambda.

Paper: Szegedy et al., Intriguing properties of neural networks (ICLR 2014).
Distance: L2, minimum norm; thresholded at each lambda.
Arguments: iterations (int, 30), search_steps (int, 4), initial_c (float, 1.0) and the options of
    :class:`aerobust.attacks.Attack`.
Shape: x (N, C, H, W) in [0, 1], labels (N,) -> SweepResult.x_adv (L, trials, N, C, H, W).

Examples::
    >>> attack = ATTACKS.create("classifier-lbfgs", iterations=30)
    >>> result = attack.sweep(cnn, x, [1.0, 2.0], trials=1, seed=0, labels=y)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..classifiers.images import predict_logits
from ..errors import AerobustError
from ..registry import register_attack
from .classifier import MinimumNormAttack, require_positive


def _other_classes(labels: torch.Tensor, num_classes: int, seeds: torch.Tensor) -> torch.Tensor:
    """A uniformly drawn class other than each label, from that sample's own seed."""
    shifts = [1 + int(torch.randint(num_classes - 1, (1,), generator=torch.Generator().manual_seed(int(seed))))
              for seed in seeds.tolist()]
    return (labels + torch.tensor(shifts, device=labels.device)) % num_classes


def _lbfgs_minimize(network, clean, targets, weights, iterations):
    """argmin over x' in [0,1]^d of sum_i c_i ||x'_i - x_i||^2 + CE(f(x'_i), t_i), jointly for the batch.

    The objective is a sum of per-image terms over disjoint variables, so one L-BFGS-B run over the
    concatenated variables minimizes every image's term (the box is handled exactly by the bounds).
    """
    from scipy.optimize import Bounds, minimize

    shape, device = clean.shape, clean.device

    def objective(flat):
        x = torch.from_numpy(flat).to(device=device, dtype=clean.dtype).view(shape).requires_grad_(True)
        distance = ((x - clean).flatten(1) ** 2).sum(1)
        loss = (weights * distance).sum() + F.cross_entropy(network(x), targets, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        return float(loss.detach()), grad.flatten().double().cpu().numpy()

    start = clean.detach().double().cpu().numpy().ravel()
    bounds = Bounds(np.zeros_like(start), np.ones_like(start))
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": iterations})
    return torch.from_numpy(np.clip(result.x, 0.0, 1.0)).to(device=device, dtype=clean.dtype).view(shape)


@register_attack("classifier-lbfgs")
class PenaltyLBFGSAttack(MinimumNormAttack):
    """Szegedy et al.'s box-constrained L-BFGS: min c ||d||^2 + CE(f(x + d), t) towards a random other
    class t (drawn from each sample's seed), bisecting the per-image weight c for the smallest success.

    Options: ``iterations`` (30, L-BFGS-B iterations per bisection step), ``search_steps`` (4),
    ``initial_c`` (1.0).
    """

    def __init__(self, *, iterations: int = 30, search_steps: int = 4, initial_c: float = 1.0, **options):
        super().__init__(**options)
        if min(int(iterations), int(search_steps)) < 1:
            raise AerobustError("iterations and search_steps must be at least 1")
        require_positive(initial_c=initial_c)
        self.iterations, self.search_steps, self.initial_c = int(iterations), int(search_steps), float(initial_c)

    def search(self, problem):
        network, images = problem.model, problem.x
        num_classes = predict_logits(network, images[:1]).shape[1]
        targets = _other_classes(problem.labels, num_classes, problem.seeds)
        weights = torch.full((len(images),), self.initial_c, device=images.device)
        lower = torch.zeros_like(weights)
        upper = torch.full_like(weights, float("inf"))
        best = images.clone()
        best_norm = torch.full_like(weights, float("inf"))
        for _ in range(self.search_steps):
            candidate = _lbfgs_minimize(network, images, targets, weights, self.iterations)
            success = predict_logits(network, candidate).argmax(1) == targets
            norm = problem.threat.distance(images, candidate)
            better = success & (norm < best_norm)
            best[better], best_norm[better] = candidate[better], norm[better]
            # A larger c weights the distance more: on success try a smaller perturbation, else a larger one.
            lower = torch.where(success, weights, lower)
            upper = torch.where(success, upper, weights)
            weights = torch.where(torch.isinf(upper), weights * 10, (lower + upper) / 2)
        return best

    def config(self) -> dict:
        return {**super().config(), "optimizer": "scipy L-BFGS-B (penalty, bisection on c)",
                "iterations": self.iterations, "search_steps": self.search_steps, "initial_c": self.initial_c}
