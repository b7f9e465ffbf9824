"""Evasion attacks on classifiers (any ``nn.Module`` mapping images in [0, 1] to logits).

| name     | source                       | norm | budget meaning                                          |
|----------|------------------------------|------|---------------------------------------------------------|
| fgsm     | torchattacks FGSM            | linf | step size = radius                                      |
| pgd      | torchattacks PGD             | linf | radius (random start, ``pgd_steps`` steps of 2.5 eps/steps) |
| cw       | torchattacks CW (L2)         | l2   | minimum-norm attack: results larger than the budget count as failures |
| lbfgs    | box-constrained L-BFGS (own) | l2   | minimum-norm attack (Szegedy et al.), same thresholding |
| deepfool | ART DeepFool                 | l2   | minimum-norm attack, same thresholding                  |

Minimum-norm attacks run once per input and are thresholded per budget: an adversarial example whose
perturbation exceeds the budget is replaced by the clean input (the attack failed at that budget).
Every returned batch is checked against its threat (norm ball and pixel box).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..classifiers import model_device, predict_logits
from ..runtime import frozen_modules
from ..errors import AerobustError, ThreatViolation, UnknownNameError

_NORM_TOLERANCE = 1e-4
_BOX_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class AttackOptions:
    """Iteration settings of the classifier attacks (recorded in every manifest)."""

    pgd_steps: int = 20
    cw_steps: int = 100
    cw_c: float = 10.0
    cw_lr: float = 0.01
    lbfgs_iterations: int = 30
    lbfgs_search_steps: int = 4
    lbfgs_initial_c: float = 1.0
    deepfool_iterations: int = 50
    deepfool_overshoot: float = 0.02


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise AerobustError("this attack needs torchattacks: pip install --no-deps torchattacks") from None
    return torchattacks


def perturbation_norms(clean: torch.Tensor, adversarial: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (adversarial - clean).flatten(1)
    return delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)


def check_threat(clean: torch.Tensor, adversarial: torch.Tensor, budget: float, norm: str) -> None:
    """Raise ThreatViolation (a bug, not user error) if ``adversarial`` left the ball or the pixel box."""
    if adversarial.min() < -_BOX_TOLERANCE or adversarial.max() > 1 + _BOX_TOLERANCE:
        raise ThreatViolation(f"attack output leaves the pixel box [0, 1] "
                              f"(range {float(adversarial.min()):.6f}..{float(adversarial.max()):.6f})")
    largest = float(perturbation_norms(clean, adversarial, norm).max()) if len(clean) else 0.0
    if largest > budget * (1 + _NORM_TOLERANCE) + _BOX_TOLERANCE:
        raise ThreatViolation(f"attack output has {norm} perturbation {largest:.6f} > budget {budget}")


# -- the attacks: (model, images, labels, budget or None, options, generator) -> adversarial images --------
def _fgsm(model, images, labels, budget, options, generator):
    return _torchattacks().FGSM(model, eps=budget)(images, labels)


def _pgd(model, images, labels, budget, options, generator):
    steps = options.pgd_steps
    return _torchattacks().PGD(model, eps=budget, alpha=2.5 * budget / steps, steps=steps, random_start=True)(
        images, labels)


def _cw(model, images, labels, budget, options, generator):
    return _torchattacks().CW(model, c=options.cw_c, steps=options.cw_steps, lr=options.cw_lr)(images, labels)


def random_other_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly drawn class different from each label (the Szegedy-style attack is targeted)."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


def _lbfgs_minimize(model, clean, targets, weights, iterations):
    """argmin over x' in [0,1]^d of sum_i c_i ||x'_i - x_i||^2 + CE(f(x'_i), t_i), jointly for the batch.

    The objective is a sum of per-image terms over disjoint variables, so one L-BFGS-B run over the
    concatenated variables minimizes every image's term (the box is handled exactly by the bounds).
    """
    from scipy.optimize import Bounds, minimize

    shape, device = clean.shape, clean.device

    def objective(flat):
        x = torch.from_numpy(flat).to(device=device, dtype=clean.dtype).view(shape).requires_grad_(True)
        distance = ((x - clean).flatten(1) ** 2).sum(1)
        loss = (weights * distance).sum() + F.cross_entropy(model(x), targets, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        return float(loss.detach()), grad.flatten().double().cpu().numpy()

    start = clean.detach().double().cpu().numpy().ravel()
    bounds = Bounds(np.zeros_like(start), np.ones_like(start))
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": iterations})
    return torch.from_numpy(np.clip(result.x, 0.0, 1.0)).to(device=device, dtype=clean.dtype).view(shape)


def _lbfgs(model, images, labels, budget, options, generator):
    """Szegedy et al.'s box-constrained L-BFGS: bisect the per-image weight c for the smallest success."""
    num_classes = predict_logits(model, images[:1]).shape[1]
    targets = random_other_labels(labels, num_classes, generator)
    weights = torch.full((len(images),), options.lbfgs_initial_c, device=images.device)
    lower = torch.zeros_like(weights)
    upper = torch.full_like(weights, float("inf"))
    best = images.clone()
    best_norm = torch.full_like(weights, float("inf"))
    for _ in range(options.lbfgs_search_steps):
        candidate = _lbfgs_minimize(model, images, targets, weights, options.lbfgs_iterations)
        success = predict_logits(model, candidate).argmax(1) == targets
        norm = perturbation_norms(images, candidate, "l2")
        better = success & (norm < best_norm)
        best[better], best_norm[better] = candidate[better], norm[better]
        # A larger c weights the distance more: on success try a smaller perturbation, else a larger one.
        lower = torch.where(success, weights, lower)
        upper = torch.where(success, upper, weights)
        weights = torch.where(torch.isinf(upper), weights * 10, (lower + upper) / 2)
    return best


def _deepfool(model, images, labels, budget, options, generator):
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    num_classes = predict_logits(model, images[:1]).shape[1]
    device = model_device(model)
    estimator = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]),
                                  nb_classes=num_classes, clip_values=(0.0, 1.0),
                                  device_type="gpu" if device.type == "cuda" else "cpu")
    attack = DeepFool(estimator, max_iter=options.deepfool_iterations, epsilon=options.deepfool_overshoot,
                      nb_grads=num_classes, batch_size=len(images), verbose=False)
    adversarial = attack.generate(images.detach().cpu().numpy())
    return torch.from_numpy(adversarial).to(images.device, images.dtype).clamp_(0, 1)


@dataclasses.dataclass(frozen=True)
class ClassifierAttack:
    name: str
    norm: str
    minimum_norm: bool
    source: str
    run: Callable


CLASSIFIER_ATTACKS = {a.name: a for a in (
    ClassifierAttack("fgsm", "linf", False, "torchattacks", _fgsm),
    ClassifierAttack("pgd", "linf", False, "torchattacks", _pgd),
    ClassifierAttack("cw", "l2", True, "torchattacks", _cw),
    ClassifierAttack("lbfgs", "l2", True, "aerobust (scipy L-BFGS-B)", _lbfgs),
    ClassifierAttack("deepfool", "l2", True, "ART", _deepfool),
)}


def get_attack(name: str) -> ClassifierAttack:
    if name not in CLASSIFIER_ATTACKS:
        raise UnknownNameError(f"unknown classifier attack '{name}'; known: {', '.join(CLASSIFIER_ATTACKS)}")
    return CLASSIFIER_ATTACKS[name]


def attack_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str,
                      budgets: Sequence[float], *, options: AttackOptions = AttackOptions(), seed: int = 0,
                      batch_size: int = 250) -> dict[float, torch.Tensor]:
    """Adversarial versions of ``images`` for each budget (``attack``'s norm), against ``model``'s logits.

    Batched; seeded (PGD's random start, L-BFGS targets); the model is frozen in eval mode meanwhile.
    A minimum-norm attack that misses its goal within a budget leaves that image clean.
    """
    spec = get_attack(attack)
    if any(b < 0 for b in budgets):
        raise AerobustError(f"attack budgets must be >= 0; got {list(budgets)}")
    device = model_device(model)
    images, labels = images.to(device), labels.to(device)
    generator = torch.Generator().manual_seed(seed)
    results: dict[float, list[torch.Tensor]] = {float(b): [] for b in budgets}
    with frozen_modules(model):
        for start in range(0, len(images), batch_size):
            clean, truth = images[start:start + batch_size], labels[start:start + batch_size]
            torch.manual_seed(seed + start)  # torchattacks draws its random starts from the global RNG
            if spec.minimum_norm:
                found = spec.run(model, clean, truth, None, options, generator).detach()
                fooled = predict_logits(model, found).argmax(1) != truth
                norms = perturbation_norms(clean, found, spec.norm)
                for budget in results:
                    keep = (fooled & (norms <= budget)).view(-1, *[1] * (clean.dim() - 1))
                    results[budget].append(torch.where(keep, found, clean))
            else:
                for budget in results:
                    found = clean if budget == 0 else spec.run(model, clean, truth, budget, options, generator)
                    results[budget].append(found.detach())
    out = {budget: torch.cat(parts) for budget, parts in results.items()}
    for budget, adversarial in out.items():
        check_threat(images, adversarial, budget, spec.norm)
    return out
