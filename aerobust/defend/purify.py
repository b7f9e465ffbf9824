"""Purification: classify(reconstruct(x)), evaluated against plain and adaptive attacks.

A plain ("non-adaptive") attack targets the classifier alone and is then purified. The adaptive attack
targets ``PurifiedClassifier`` -- autoencoder and classifier as one differentiable module -- which is what
an attacker who knows the defense does. Only the adaptive number measures robustness.
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
from ..classifiers import predict_logits
from .attacks import AttackOptions, attack_classifier, get_attack, perturbation_norms

# Accuracy differences below this are read as "no difference" in verdicts (a few images out of hundreds).
VERDICT_MARGIN = 0.05


class PurifiedClassifier(nn.Module):
    """logits = classifier(decode(z)) with z the code of x: the mean path, or (``eot_samples`` > 0 on a
    stochastic model) the logits averaged over that many posterior draws from a seeded generator
    (expectation over transformation, so attack gradients see the randomness)."""

    def __init__(self, classifier: nn.Module, autoencoder: Autoencoder, *, eot_samples: int = 0, seed: int = 0):
        super().__init__()
        self.classifier = classifier
        self.autoencoder = autoencoder
        self.eot_samples = eot_samples if autoencoder.is_stochastic else 0
        self.generator = torch.Generator().manual_seed(seed)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.reconstruct(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.eot_samples:
            return self.classifier(self.autoencoder.reconstruct(x))
        draws = [self.classifier(self.autoencoder.decode(self.autoencoder.sample_latent(x, self.generator)))
                 for _ in range(self.eot_samples)]
        return torch.stack(draws).mean(0)


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
        targets["purifier"] = PurifiedClassifier(classifier, autoencoder, eot_samples=eot_samples, seed=seed)
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
                partial = cached.with_name(cached.name + ".tmp")
                torch.save({float(budget): adv.detach().cpu() for budget, adv in found.items()}, partial)
                os.replace(partial, cached)
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
    purifier = PurifiedClassifier(classifier, autoencoder, eot_samples=eot_samples, seed=seed)
    labels = labels.to(images.device)

    def acc(model, x):
        return float((predict_logits(model, x, batch_size).argmax(1) == labels).float().mean())

    clean_accuracy, purified_clean = acc(classifier, images), acc(purifier, images)
    adaptive = {(s.attack, s.budget): s for s in adversarial_sets if s.target == "purifier"}
    rows = []
    for plain in (s for s in adversarial_sets if s.target == "classifier"):
        attacked, purified = acc(classifier, plain.images), acc(purifier, plain.images)
        strong = adaptive.get((plain.attack, plain.budget))
        adaptive_accuracy = None if strong is None else acc(purifier, strong.images)
        rows.append({
            "attack": plain.attack, "norm": plain.norm, "budget": plain.budget, "n": len(images),
            "clean_acc": clean_accuracy, "purified_clean_acc": purified_clean,
            "adversarial_acc": attacked, "purified_acc": purified,
            "adaptive_acc": float("nan") if adaptive_accuracy is None else adaptive_accuracy,
            "mean_perturbation": float(perturbation_norms(images, plain.images, plain.norm).mean()),
            "verdict": purification_verdict(attacked, purified, adaptive_accuracy),
        })
    return pd.DataFrame(rows)
