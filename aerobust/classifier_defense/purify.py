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

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..adapter import Autoencoder
from ..classifiers import AutoencoderClassifier, predict_logits
from ..runtime import atomic_write
from ..stats import PERMUTATIONS, cluster_bootstrap, holm, sign_flip_test
from ..threat import Threat
from ..verdicts import Verdict, verdict
from .attacks import AttackOptions, attack_classifier, get_attack

# An adaptive attack whose accuracy does not move when its budget grows (the same accuracy at a larger
# budget as at the next smaller one) has stopped working there: the flag that withholds the "helps"
# verdict at that budget, like the audit's sanity flags.
STALLED_FLAG = "adaptive-attack-stalled"


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


def _accuracy_gain(gained: np.ndarray, images: np.ndarray, permutations: int) -> dict:
    """Mean paired accuracy gain per image (0/1 correctness differences) with its interval and raw p-value."""
    interval = cluster_bootstrap(gained, images)
    p_value = sign_flip_test(gained, permutations=permutations) if np.any(gained) else 1.0
    return {"difference": interval.mean, "low": interval.low, "high": interval.high, "p": p_value,
            "identical": not np.any(gained)}


def purification_verdict(plain: Verdict, adaptive: Verdict | None, stalled: bool) -> str:
    """Helps only where the paired test establishes a gain; a stalled adaptive attack gets no verdict."""
    if plain.winner != "purified":
        return f"no help established: {plain.evidence()}"
    if adaptive is None:
        return f"helps against the plain attack ({plain.evidence()}); adaptive attack not run"
    if stalled:
        return (f"helps against the plain attack ({plain.evidence()}); no verdict against the adaptive attack: it "
                f"stalled ({STALLED_FLAG}: the same accuracy at every budget)")
    if adaptive.winner != "purified":
        return f"helps only against non-adaptive attacks (adaptive: {adaptive.evidence()})"
    return (f"helps, also against this adaptive attack ({adaptive.evidence()}); stronger adaptive attacks may "
            "still break it")


def purification_table(classifier: nn.Module, autoencoder: Autoencoder, images: torch.Tensor,
                       labels: torch.Tensor, adversarial_sets: Sequence[AdversarialSet], *, eot_samples: int = 0,
                       seed: int = 0, batch_size: int = 500) -> pd.DataFrame:
    """One row per (attack, budget): accuracy clean / attacked / purified / under the adaptive attack."""
    purified_model = purifier(classifier, autoencoder, eot_samples=eot_samples, seed=seed)
    labels = labels.to(images.device)

    def correct(model, x) -> np.ndarray:
        return (predict_logits(model, x, batch_size).argmax(1) == labels).float().cpu().numpy()

    clean_accuracy, purified_clean = correct(classifier, images).mean(), correct(purified_model, images).mean()
    adaptive = {(s.attack, s.budget): s for s in adversarial_sets if s.target == "purifier"}
    plains = [s for s in adversarial_sets if s.target == "classifier"]
    ids = np.arange(len(images))
    # Every gain the table tests is one paired comparison of the Holm family (2 per row at most).
    permutations = max(PERMUTATIONS, 40 * 2 * len(plains))
    rows, gains = [], []
    for plain in plains:
        attacked, purified = correct(classifier, plain.images), correct(purified_model, plain.images)
        strong = adaptive.get((plain.attack, plain.budget))
        adaptive_correct = None if strong is None else correct(purified_model, strong.images)
        gains.append((_accuracy_gain(purified - attacked, ids, permutations),
                      None if adaptive_correct is None else _accuracy_gain(adaptive_correct - attacked, ids,
                                                                            permutations)))
        rows.append({
            "attack": plain.attack, "norm": plain.norm, "budget": plain.budget, "n": len(images),
            "clean_acc": float(clean_accuracy), "purified_clean_acc": float(purified_clean),
            "adversarial_acc": float(attacked.mean()), "purified_acc": float(purified.mean()),
            "adaptive_acc": float("nan") if adaptive_correct is None else float(adaptive_correct.mean()),
            "mean_perturbation": float(Threat(plain.budget, plain.norm).distance(images, plain.images).mean()),
        })
    tested = [g for pair in gains for g in pair if g is not None]
    for gain, adjusted in zip(tested, holm([g["p"] for g in tested]) if tested else []):
        gain["p_holm"] = float(adjusted)
    table = pd.DataFrame(rows)
    if table.empty:
        return table.assign(verdict=pd.Series(dtype=str))
    stalled_settings = _stalled(table)
    verdicts, flags = [], []
    for row, (plain_gain, adaptive_gain) in zip(rows, gains):
        plain = _gain_verdict(plain_gain, "plain", len(images))
        strong = None if adaptive_gain is None else _gain_verdict(adaptive_gain, "adaptive", len(images))
        stalled = (row["attack"], row["norm"], row["budget"]) in stalled_settings
        verdicts.append(purification_verdict(plain, strong, stalled))
        flags.append(STALLED_FLAG if stalled else "")
        for name, gain in (("purify_gain", plain_gain), ("adaptive_gain", adaptive_gain)):
            row.update({name: np.nan, f"{name}_low": np.nan, f"{name}_high": np.nan, f"{name}_p_holm": np.nan}
                       if gain is None else {name: gain["difference"], f"{name}_low": gain["low"],
                                             f"{name}_high": gain["high"], f"{name}_p_holm": gain["p_holm"]})
    return pd.DataFrame(rows).assign(flags=flags, verdict=verdicts)


def _gain_verdict(gain: dict, kind: str, images: int) -> Verdict:
    return verdict("purified", "attacked", f"accuracy under the {kind} attack", difference=gain["difference"],
                   low=gain["low"], high=gain["high"], p_holm=gain["p_holm"], units=f"{images} images",
                   identical=gain["identical"])


def _stalled(table: pd.DataFrame) -> set:
    """(attack, norm, budget) whose adaptive accuracy equals the one at the next smaller budget (and that
    smaller budget too): more budget bought the attack nothing, so neither number measures robustness."""
    stalled = set()
    for (attack, norm), group in table.dropna(subset=["adaptive_acc"]).groupby(["attack", "norm"]):
        accuracy = group.groupby("budget")["adaptive_acc"].first().sort_index()
        for smaller, larger in zip(accuracy.index[:-1], accuracy.index[1:]):
            if accuracy[smaller] == accuracy[larger]:
                stalled.update({(attack, norm, smaller), (attack, norm, larger)})
    return stalled
