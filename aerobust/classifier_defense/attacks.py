"""The classifier attacks of ``aerobust defend``: short names for settings of the attack engine.

Each name builds an engine attack (:mod:`aerobust.attacks.classifier`) on the ``classifier`` objective
(cross-entropy of the attacked module against the true label); its sweep checks every result against
the threat (:class:`aerobust.threat.Threat`, norm ball and pixel box), as for the autoencoder attacks.

| name     | engine attack, optimizer                     | norm | budget meaning                                |
|----------|----------------------------------------------|------|-----------------------------------------------|
| fgsm     | classifier, built-in fgsm (no random start)  | linf | step size = radius                            |
| pgd      | classifier, built-in pgd (random start, ``pgd_steps`` constant steps of 2.5 eps/steps, best iterate kept) | linf | radius |
| cw       | classifier-cw (torchattacks CW, L2)          | l2   | minimum-norm attack: results larger than the budget count as failures |
| lbfgs    | classifier-lbfgs (Szegedy et al., scipy)     | l2   | minimum-norm attack, same thresholding        |
| deepfool | classifier-deepfool (ART DeepFool)           | l2   | minimum-norm attack, same thresholding        |

A minimum-norm attack runs once per input (swept at the largest budget) and is thresholded per budget:
an adversarial example whose perturbation exceeds the budget is replaced by the clean input.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
from torch import nn

from ..attacks import Attack, within_budget
from ..classifiers import model_device
from ..errors import AerobustError, UnknownNameError
from ..registry import ATTACKS
from ..threat import Threat


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


@dataclasses.dataclass(frozen=True)
class ClassifierAttackPreset:
    """A defend attack name: its norm, whether it is minimum-norm, and how to build its engine attack."""

    name: str
    norm: str
    minimum_norm: bool
    source: str
    build: Callable[[AttackOptions, int], Attack]  # (options, batch_size) -> engine attack


def _engine(name: str, **settings) -> Callable[[AttackOptions, int], Attack]:
    """Builder of the engine attack ``name``; a callable setting is read from the AttackOptions."""
    def build(options: AttackOptions, batch_size: int) -> Attack:
        resolved = {key: value(options) if callable(value) else value for key, value in settings.items()}
        # The defend tables report accuracies; the engine's loss-based flags are not read there.
        return ATTACKS.create(name, batch_size=batch_size, sanity_checks=False, **resolved)
    return build


CLASSIFIER_ATTACKS = {preset.name: preset for preset in (
    ClassifierAttackPreset("fgsm", "linf", False, "aerobust (fgsm optimizer)",
                           _engine("classifier", optimizer="fgsm", norm="linf", restarts=1, random_start=False)),
    ClassifierAttackPreset("pgd", "linf", False, "aerobust (pgd optimizer)",
                           _engine("classifier", optimizer="pgd", norm="linf", restarts=1, schedule="constant",
                                   random_start=True, steps=lambda o: o.pgd_steps,
                                   step_size=lambda o: 2.5 / o.pgd_steps)),
    ClassifierAttackPreset("cw", "l2", True, "torchattacks",
                           _engine("classifier-cw", c=lambda o: o.cw_c, lr=lambda o: o.cw_lr,
                                   steps=lambda o: o.cw_steps)),
    ClassifierAttackPreset("lbfgs", "l2", True, "aerobust (scipy L-BFGS-B)",
                           _engine("classifier-lbfgs", iterations=lambda o: o.lbfgs_iterations,
                                   search_steps=lambda o: o.lbfgs_search_steps,
                                   initial_c=lambda o: o.lbfgs_initial_c)),
    ClassifierAttackPreset("deepfool", "l2", True, "ART",
                           _engine("classifier-deepfool", steps=lambda o: o.deepfool_iterations,
                                   overshoot=lambda o: o.deepfool_overshoot)),
)}


def get_attack(name: str) -> ClassifierAttackPreset:
    if name not in CLASSIFIER_ATTACKS:
        raise UnknownNameError(f"unknown classifier attack '{name}'; known: {', '.join(CLASSIFIER_ATTACKS)}")
    return CLASSIFIER_ATTACKS[name]


def attack_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str,
                      budgets: Sequence[float], *, options: AttackOptions = AttackOptions(), seed: int = 0,
                      batch_size: int = 250) -> dict[float, torch.Tensor]:
    """Adversarial versions of ``images`` for each budget (``attack``'s norm), against ``model``'s logits.

    One engine sweep (batched by ``batch_size``, seeded per image, the model frozen in eval mode, every
    result checked against its threat); a minimum-norm attack is swept once at the largest budget and
    thresholded at the others (an image it cannot fool within a budget stays clean there).
    """
    preset = get_attack(attack)
    budgets = [float(b) for b in budgets]
    if any(b < 0 for b in budgets):
        raise AerobustError(f"attack budgets must be >= 0; got {budgets}")
    if not budgets:
        return {}
    engine = preset.build(options, batch_size)
    device = model_device(model)
    images, labels = images.to(device), labels.to(device)
    swept = [max(budgets)] if preset.minimum_norm else budgets
    result = engine.sweep(model, images, swept, 1, seed, labels=labels)
    if not preset.minimum_norm:
        return {budget: result.x_adv[index, 0] for index, budget in enumerate(swept)}
    found = result.x_adv[0, 0]
    out = {}
    for budget in budgets:
        threat = Threat(budget, preset.norm)
        out[budget] = within_budget(model, images, found, labels, threat)
        threat.check(images, out[budget])
    return out
