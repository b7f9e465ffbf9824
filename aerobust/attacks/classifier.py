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

This module holds ``classifier`` and :class:`MinimumNormAttack`; each minimum-norm attack has its own
module (``classifier_cw``, ``classifier_lbfgs``, ``classifier_deepfool``).

A minimum-norm attack searches the smallest fooling perturbation without a budget; at radius lambda its
result counts only where it fools the classifier within lambda, else the sample stays clean (the attack
failed at that radius). So its results lie in the threat like every other attack's, and the sweep checks
them the same way.
"""
from __future__ import annotations

import torch
from torch import nn

from ..classifiers.images import predict_logits
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


def require_positive(**values) -> None:
    """Refuse, in one line, the first of the named settings that is not > 0."""
    for key, value in values.items():
        if not value > 0:
            raise AerobustError(f"{key} must be > 0, got {value}")
