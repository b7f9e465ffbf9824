"""Does the autoencoder's reconstruction loss track the classifier's confidence?

Per image: reconstruction MSE (the autoencoder's mean path) and the classifier's top softmax probability.
Reported as equal-count confidence bins (mean loss, accuracy per bin) and the Spearman rank correlation
between loss and confidence (negative = images the classifier is sure about reconstruct better).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import Autoencoder
from ..classifiers import predict_logits
from ..errors import AerobustError
from .ood import reconstruction_error


def calibration_data(classifier: nn.Module, autoencoder: Autoencoder, images: torch.Tensor,
                     labels: torch.Tensor) -> pd.DataFrame:
    """One row per image: reconstruction error, classifier confidence, predicted label, correctness."""
    probabilities = F.softmax(predict_logits(classifier, images), dim=1).cpu()
    confidence, predicted = probabilities.max(1)
    return pd.DataFrame({
        "reconstruction_error": reconstruction_error(autoencoder, images).numpy(),
        "confidence": confidence.numpy(),
        "predicted": predicted.numpy(),
        "correct": (predicted == labels.cpu()).numpy(),
    })


def calibration_summary(per_image: pd.DataFrame, bins: int = 10) -> tuple[pd.DataFrame, dict]:
    """Equal-count confidence bins (ties broken by image order) and Spearman statistics."""
    from scipy.stats import spearmanr

    if bins < 1 or bins > len(per_image):
        raise AerobustError(f"calibration bins must be between 1 and the number of images ({len(per_image)})")
    order = np.argsort(per_image["confidence"].to_numpy(), kind="stable")
    rows = []
    for index, members in enumerate(np.array_split(order, bins)):
        part = per_image.iloc[members]
        rows.append({
            "bin": index, "n": len(part),
            "confidence_min": float(part["confidence"].min()), "confidence_max": float(part["confidence"].max()),
            "mean_confidence": float(part["confidence"].mean()), "accuracy": float(part["correct"].mean()),
            "mean_reconstruction_error": float(part["reconstruction_error"].mean()),
            "median_reconstruction_error": float(part["reconstruction_error"].median()),
        })
    rho, p_value = spearmanr(per_image["reconstruction_error"], per_image["confidence"])
    correct_rho, correct_p = spearmanr(per_image["reconstruction_error"], per_image["correct"].astype(float))
    stats = {"spearman_rho": float(rho), "spearman_p": float(p_value),
             "spearman_rho_vs_correct": float(correct_rho), "spearman_p_vs_correct": float(correct_p),
             "n": len(per_image)}
    return pd.DataFrame(rows), stats
