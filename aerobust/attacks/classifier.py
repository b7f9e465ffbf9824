"""Attacks on image classifiers, on the same engine (sweep, seeds, threat check) as the autoencoder attacks.

The attacked module maps images in [0, 1] to logits: a plain classifier, or an autoencoder and a
classifier as one :class:`~aerobust.classifiers.AutoencoderClassifier` (the adaptive attack on a
purifier). The objective is that module's cross-entropy against the true label (``classifier``);
``attack.sweep(network, x, lambdas, trials, seed, labels=y)`` runs any of them.

| attack                | optimizer                                         | norm       |
|-----------------------|---------------------------------------------------|------------|
| `classifier`          | the built-in ``pgd``, ``fgsm`` (all Attack options) | l2 or linf |
| `classifier-cw`       | torchattacks CW (Carlini & Wagner L2)             | l2, minimum norm |
| `classifier-lbfgs`    | box-constrained L-BFGS (Szegedy et al.), scipy    | l2, minimum norm |
| `classifier-deepfool` | ART DeepFool                                      | l2, minimum norm |

A minimum-norm attack searches the smallest fooling perturbation without a budget; at radius lambda its
result counts only where it fools the classifier within lambda, else the sample stays clean (the attack
failed at that radius). So its results lie in the threat like every other attack's, and the sweep checks
them the same way.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..classifiers.images import model_device, predict_logits
from ..errors import AerobustError
from ..registry import register_attack
from ..threat import Threat
from .base import Attack
from .problem import AttackProblem, OptimizationResult


def require_torchattacks():
    """Import torchattacks lazily; it is installed without its (pinned, unused) dependencies."""
    try:
        import torchattacks
    except ImportError:
        raise AerobustError("torchattacks is not installed; run `pip install --no-deps torchattacks`") from None
    return torchattacks


@register_attack("classifier")
class ClassifierAttack(Attack):
    """Cross-entropy of an image classifier (the attacked module) against the true label, maximized.

    Every :class:`Attack` option applies (optimizer, steps, step_size, schedule, norm, ...).
    Example: ``ATTACKS.create("classifier", optimizer="fgsm", norm="linf", random_start=False)
    .sweep(cnn, x, [0.1], 1, 0, labels=y)``.
    """

    objective_name = "classifier"
    minimum_norm = False


def within_budget(network: nn.Module, x: torch.Tensor, found: torch.Tensor, labels: torch.Tensor,
                  threat: Threat) -> torch.Tensor:
    """``found`` where it fools ``network`` (prediction != label) inside ``threat``, else the clean ``x``."""
    fooled = predict_logits(network, found).argmax(1) != labels
    inside = threat.distance(x, found) <= threat.radii(x)
    return torch.where((fooled & inside).view(-1, *[1] * (x.dim() - 1)), found, x)


class MinimumNormAttack(ClassifierAttack):
    """Base of the minimum-norm attacks: ``search(problem)`` returns unbounded adversarial images."""

    minimum_norm = True

    def __init__(self, **options):
        super().__init__(**{"restarts": 1, "norm": "l2", **options})
        if self.norm != "l2":
            raise AerobustError(f"attack '{self.name}' is an L2 minimum-norm attack; use norm='l2'")

    def search(self, problem: AttackProblem) -> torch.Tensor:
        raise NotImplementedError

    def optimize(self, problem: AttackProblem) -> OptimizationResult:
        with torch.no_grad():
            problem.objective.select(torch.arange(1, device=problem.x.device)).values(problem.x[:1])  # logits check
        found = self.search(problem).detach()
        return OptimizationResult(within_budget(problem.model, problem.x, found, problem.labels, problem.threat))


def _require_positive(**values) -> None:
    for key, value in values.items():
        if not value > 0:
            raise AerobustError(f"{key} must be > 0, got {value}")


@register_attack("classifier-cw")
class CarliniWagnerAttack(MinimumNormAttack):
    """Carlini & Wagner's L2 attack (torchattacks ``CW``): Adam on ||d||^2 + c * margin in tanh space.

    Options: ``c`` (10.0), ``lr`` (0.01), ``steps`` (100).
    """


    def __init__(self, *, c: float = 10.0, lr: float = 0.01, steps: int = 100, **options):
        super().__init__(steps=steps, **options)
        _require_positive(c=c, lr=lr)
        self.c, self.lr = float(c), float(lr)

    def search(self, problem):
        attack = require_torchattacks().CW(problem.model, c=self.c, steps=self.settings.steps, lr=self.lr)
        return attack(problem.x, problem.labels)

    def config(self) -> dict:
        return {**super().config(), "optimizer": "torchattacks.CW", "c": self.c, "lr": self.lr}


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
        _require_positive(initial_c=initial_c)
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


@register_attack("classifier-deepfool")
class DeepFoolAttack(MinimumNormAttack):
    """Moosavi-Dezfooli et al.'s DeepFool (ART): steps to the linearized nearest decision boundary.

    Options: ``steps`` (50), ``overshoot`` (0.02).
    """


    def __init__(self, *, steps: int = 50, overshoot: float = 0.02, **options):
        super().__init__(steps=steps, **options)
        if not overshoot >= 0:
            raise AerobustError(f"overshoot must be >= 0, got {overshoot}")
        self.overshoot = float(overshoot)

    def search(self, problem):
        from art.attacks.evasion import DeepFool
        from art.estimators.classification import PyTorchClassifier

        network, images = problem.model, problem.x
        num_classes = predict_logits(network, images[:1]).shape[1]
        device = model_device(network)
        estimator = PyTorchClassifier(model=network, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]),
                                      nb_classes=num_classes, clip_values=(0.0, 1.0),
                                      device_type="gpu" if device.type == "cuda" else "cpu")
        attack = DeepFool(estimator, max_iter=self.settings.steps, epsilon=self.overshoot, nb_grads=num_classes,
                          batch_size=len(images), verbose=False)
        adversarial = attack.generate(images.detach().cpu().numpy())
        return torch.from_numpy(adversarial).to(images.device, images.dtype).clamp_(0, 1)

    def config(self) -> dict:
        return {**super().config(), "optimizer": "art.DeepFool", "overshoot": self.overshoot}
