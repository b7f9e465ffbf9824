"""Adversarial detection by reconstruction consistency.

Each input is reconstructed K times from perturbed codes -- posterior draws for a stochastic model
(``Autoencoder.sample_latent``), or the code plus Gaussian noise of ``latent_noise`` times the
per-dimension spread of clean codes for a deterministic one -- and classified. Inputs near the data
manifold get the same label every time; the scores are the number of distinct labels, the entropy of
the label votes, and the entropy of the mean softmax. Higher means "more suspicious".
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import Autoencoder
from ..classifiers import predict_logits
from ..errors import AerobustError
from .purify import AdversarialSet, purifier

DETECTION_SCORES = ("distinct_labels", "label_entropy", "softmax_entropy")


def roc_auc(negative: torch.Tensor, positive: torch.Tensor) -> float:
    """ROC-AUC of scores separating ``positive`` (label 1) from ``negative`` (label 0); NaN if a side is empty."""
    from sklearn.metrics import roc_auc_score

    if len(negative) == 0 or len(positive) == 0:
        return float("nan")
    truth = np.concatenate([np.zeros(len(negative)), np.ones(len(positive))])
    scores = torch.cat([negative.flatten(), positive.flatten()]).double().cpu().numpy()
    return float(roc_auc_score(truth, scores))


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row, with 0 log 0 = 0."""
    return -torch.special.xlogy(probabilities, probabilities).sum(-1)


@torch.no_grad()
def code_spread(autoencoder: Autoencoder, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Per-dimension standard deviation of the codes of ``images`` (the unit of deterministic latent noise)."""
    codes = torch.cat([autoencoder.encode(images[i:i + batch_size].to(autoencoder.device))
                       for i in range(0, len(images), batch_size)])
    return codes.std(0)


@torch.no_grad()
def consistency_scores(classifier: nn.Module, autoencoder: Autoencoder, images: torch.Tensor, *,
                       samples: int = 10, latent_noise: float = 0.25, spread: torch.Tensor | None = None,
                       seed: int = 0, batch_size: int = 250) -> dict[str, torch.Tensor]:
    """Detector scores of each image from ``samples`` stochastic reconstructions (see the module doc).

    ``spread`` (per-dimension code scale; default: that of ``images``) matters only for deterministic models;
    pass the spread of clean data so clean and suspicious inputs get the same noise.
    """
    if len(images) == 0:
        return {name: torch.empty(0) for name in DETECTION_SCORES}
    if samples < 2:
        raise AerobustError("reconstruction consistency needs at least 2 samples per input")
    if not autoencoder.is_stochastic:
        if latent_noise <= 0:
            raise AerobustError("a deterministic autoencoder needs --latent-noise > 0 for consistency detection")
        spread = code_spread(autoencoder, images) if spread is None else spread
    generator = torch.Generator().manual_seed(seed)
    scores: dict[str, list[torch.Tensor]] = {name: [] for name in DETECTION_SCORES}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(autoencoder.device)
        probabilities = []
        for _ in range(samples):
            if autoencoder.is_stochastic:
                code = autoencoder.sample_latent(batch, generator)
            else:
                code = autoencoder.encode(batch)
                noise = torch.randn(code.shape, generator=generator).to(code.device)
                code = code + latent_noise * spread.to(code.device) * noise
            probabilities.append(F.softmax(predict_logits(classifier, autoencoder.decode(code)), dim=1))
        probabilities = torch.stack(probabilities, dim=1)  # (batch, samples, classes)
        votes = F.one_hot(probabilities.argmax(2), probabilities.shape[2]).sum(1)
        scores["distinct_labels"].append((votes > 0).sum(1).float())
        scores["label_entropy"].append(entropy(votes.float() / samples))
        scores["softmax_entropy"].append(entropy(probabilities.mean(1)))
    return {name: torch.cat(parts).cpu() for name, parts in scores.items()}


def detection_table(classifier: nn.Module, autoencoder: Autoencoder, images: torch.Tensor, labels: torch.Tensor,
                    adversarial_sets: Sequence[AdversarialSet], *, samples: int = 10, latent_noise: float = 0.25,
                    eot_samples: int = 0, seed: int = 0) -> pd.DataFrame:
    """ROC-AUC of each score, all clean images vs the adversarial images that fooled their target model.

    An adversarial image counts when its target model (the classifier for plain attacks, the purifier for
    adaptive ones) classifies the clean image correctly and the adversarial one wrongly.
    """
    spread = None if autoencoder.is_stochastic else code_spread(autoencoder, images)
    options = dict(samples=samples, latent_noise=latent_noise, spread=spread, seed=seed)
    clean = consistency_scores(classifier, autoencoder, images, **options)
    fooled_models = {"classifier": classifier,
                     "purifier": purifier(classifier, autoencoder, eot_samples=eot_samples, seed=seed)}
    labels = labels.to(images.device)
    rows = []
    for adversarial in adversarial_sets:
        if adversarial.budget == 0:
            continue
        target_model = fooled_models[adversarial.target]
        fooled = ((predict_logits(target_model, adversarial.images).argmax(1) != labels)
                  & (predict_logits(target_model, images).argmax(1) == labels)).cpu()
        attacked = consistency_scores(classifier, autoencoder, adversarial.images[fooled.to(images.device)],
                                      **options)
        row = {"attack": adversarial.attack, "norm": adversarial.norm, "budget": adversarial.budget,
               "attack_target": adversarial.target, "n_clean": len(images), "n_adversarial": int(fooled.sum())}
        for name in DETECTION_SCORES:
            row[f"auc_{name}"] = roc_auc(clean[name], attacked[name])
            row[f"clean_mean_{name}"] = float(clean[name].mean())
            row[f"adv_mean_{name}"] = float(attacked[name].mean()) if len(attacked[name]) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
