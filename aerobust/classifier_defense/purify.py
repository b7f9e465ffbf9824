"""Purification: classify(reconstruct(x)), evaluated against plain and adaptive attacks.

A plain ("non-adaptive") attack targets the classifier alone and is then purified. The adaptive attack
targets the purifier ``AutoencoderClassifier(autoencoder, classifier, through="reconstruction")`` --
autoencoder and classifier as one differentiable module -- which is what an attacker who knows the
defense does. Only the adaptive number measures robustness.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..adapter import Autoencoder
from ..classifiers import AutoencoderClassifier, predict_logits
from ..runtime import atomic_write
from ..threat import Threat
from .attacks import AttackOptions, attack_classifier, get_attack

# Accuracy differences below this are read as "no difference" in verdicts (a few images out of hundreds).
VERDICT_MARGIN = 0.05


def purifier(classifier: nn.Module, autoencoder: Autoencoder, *, eot_samples: int = 0,
             seed: int = 0) -> AutoencoderClassifier:
    """classify(reconstruct(x)) as one module (EOT over ``eot_samples`` posterior draws on stochastic models)."""
    return AutoencoderClassifier(autoencoder, classifier, through="reconstruction", eot_samples=eot_samples, seed=seed)


@dataclasses.dataclass
class AdversarialSet:
    """Adversarial images for one (attack, budget); ``target`` says which model the attack saw."""

    attack: str
    norm: str
    budget: float
    target: str  # "classifier" (plain attack) or "purifier" (adaptive attack)
    images: torch.Tensor


def generate_adversarials(classifier: nn.Module, autoencoder: Autoencoder, images: torch.Tensor,
                          labels: torch.Tensor, *, attacks: Sequence[str], budgets: dict[str, Sequence[float]],
                          adaptive: bool = True, eot_samples: int = 0, options: AttackOptions = AttackOptions(),
                          seed: int = 0, batch_size: int = 250, quiet: bool = True,
                          cache_dir: str | os.PathLike | None = None) -> list[AdversarialSet]:
    """Plain and (if ``adaptive``) adaptive adversarial sets for every attack and budget of its norm.

    ``budgets`` maps a norm (``linf``, ``l2``) to its budget list. With ``cache_dir`` each attack's
    images are saved as soon as they exist and reused by a rerun, so an interrupted run resumes; the
    caller keys the folder to everything that decides the images (see ``aerobust defend``).
    """
    specs = [get_attack(name) for name in attacks]
    targets = {"classifier": classifier}
    if adaptive:
        targets["purifier"] = purifier(classifier, autoencoder, eot_samples=eot_samples, seed=seed)
    jobs = [(spec, name, model) for spec in specs for name, model in targets.items()]
    sets = []
    for spec, target, model in tqdm(jobs, desc="attacks", disable=quiet, leave=False):
        cached = None if cache_dir is None else Path(cache_dir) / f"{spec.name}__{target}.pt"
        if cached is not None and cached.is_file():
            found = {budget: adv.to(images.device)
                     for budget, adv in torch.load(cached, map_location="cpu", weights_only=True).items()}
        else:
            found = attack_classifier(model, images, labels, spec.name, budgets[spec.norm], options=options,
                                      seed=seed, batch_size=batch_size)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                saved = {float(budget): adv.detach().cpu() for budget, adv in found.items()}
                atomic_write(cached, lambda tmp: torch.save(saved, tmp))
        sets += [AdversarialSet(spec.name, spec.norm, budget, target, adv) for budget, adv in found.items()]
    return sets


def purification_verdict(adversarial: float, purified: float, adaptive: float | None) -> str:
    if purified <= adversarial + VERDICT_MARGIN:
        return "no help"
    if adaptive is None:
        return "helps against the plain attack; adaptive attack not run"
    if adaptive <= adversarial + VERDICT_MARGIN:
        return "helps only against non-adaptive attacks"
    return "helps, also against this adaptive attack (stronger adaptive attacks may still break it)"


def purification_table(classifier: nn.Module, autoencoder: Autoencoder, images: torch.Tensor,
                       labels: torch.Tensor, adversarial_sets: Sequence[AdversarialSet], *, eot_samples: int = 0,
                       seed: int = 0, batch_size: int = 500) -> pd.DataFrame:
    """One row per (attack, budget): accuracy clean / attacked / purified / under the adaptive attack."""
    purified_model = purifier(classifier, autoencoder, eot_samples=eot_samples, seed=seed)
    labels = labels.to(images.device)

    def acc(model, x):
        return float((predict_logits(model, x, batch_size).argmax(1) == labels).float().mean())

    clean_accuracy, purified_clean = acc(classifier, images), acc(purified_model, images)
    adaptive = {(s.attack, s.budget): s for s in adversarial_sets if s.target == "purifier"}
    rows = []
    for plain in (s for s in adversarial_sets if s.target == "classifier"):
        attacked, purified = acc(classifier, plain.images), acc(purified_model, plain.images)
        strong = adaptive.get((plain.attack, plain.budget))
        adaptive_accuracy = None if strong is None else acc(purified_model, strong.images)
        rows.append({
            "attack": plain.attack, "norm": plain.norm, "budget": plain.budget, "n": len(images),
            "clean_acc": clean_accuracy, "purified_clean_acc": purified_clean,
            "adversarial_acc": attacked, "purified_acc": purified,
            "adaptive_acc": float("nan") if adaptive_accuracy is None else adaptive_accuracy,
            "mean_perturbation": float(Threat(plain.budget, plain.norm).distance(images, plain.images).mean()),
            "verdict": purification_verdict(attacked, purified, adaptive_accuracy),
        })
    return pd.DataFrame(rows)
