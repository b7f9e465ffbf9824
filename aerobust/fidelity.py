"""Generation fidelity: samples from the prior and Frechet distances (their grid figure: ``report.fidelity``).

The default fidelity number is ``frechet_distance_small_classifier``: the Frechet distance between
Gaussians fitted to penultimate-layer features of a small CNN that aerobust trains on the same data.
It is *not* FID and is not comparable with published FIDs. An Inception-based Frechet distance is
computed only from a local torchvision ``inception_v3`` state-dict file the user supplies; it uses
torchvision's architecture, so it is close to but not the pytorch-fid/TF FID either, and is named
``frechet_distance_inception_v3``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import AerobustError, CheckpointError, ShapeError
from .priors import GMMPrior
from .registry import register_metric


# -- the Frechet distance -------------------------------------------------------------------------
def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2) between two Gaussians (float64, eigh-based).

    The symmetric form has the same trace as tr((C1 C2)^1/2) and needs only symmetric eigensolves.
    """
    mu1, mu2, cov1, cov2 = (t.detach().to(torch.float64).cpu() for t in (mu1, mu2, cov1, cov2))
    root1 = _sqrtm_psd(cov1)
    middle = root1 @ cov2 @ root1
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross)


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of the rows of ``features`` (float64)."""
    if features.dim() != 2 or len(features) < 2:
        raise ShapeError(f"need a (N >= 2, F) feature matrix; got {tuple(features.shape)}")
    features = features.detach().to(torch.float64)
    return features.mean(0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])


def frechet_distance_of_features(real: torch.Tensor, generated: torch.Tensor) -> float:
    return frechet_distance(*gaussian_statistics(real), *gaussian_statistics(generated))


# -- feature extractors -----------------------------------------------------------------------------
@torch.no_grad()
def _batched(function: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device, batch_size: int
             ) -> torch.Tensor:
    return torch.cat([function(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


class SmallClassifierFeatures:
    """Penultimate-layer features of aerobust's small CNN, trained (seeded) on labelled images."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 3, seed: int = 0,
                 device: str | torch.device = "cpu"):
        from .classifiers import build_classifier, train_classifier

        if labels is None:
            raise AerobustError("the small-classifier Frechet distance needs labelled training images")
        torch.manual_seed(seed)
        classifier = build_classifier("cnn", tuple(images.shape[1:]), int(labels.max()) + 1).to(device)
        self.classifier = train_classifier(classifier, images, labels, epochs=epochs, seed=seed)
        self.trunk = nn.Sequential(*list(self.classifier.net)[:-1]).eval()
        self.device = device

    def __call__(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        return _batched(self.trunk, images, self.device, batch_size)


def frechet_distance_small_classifier(real: torch.Tensor, generated: torch.Tensor,
                                      features: SmallClassifierFeatures) -> float:
    """Frechet distance between small-CNN features of real and generated images (not FID)."""
    return frechet_distance_of_features(features(real), features(generated))


def inception_features(weights_path: str | os.PathLike | None, device: str | torch.device = "cpu"
                       ) -> Callable[[torch.Tensor], torch.Tensor]:
    """2048-d pool features of torchvision's inception_v3 loaded from a local state-dict file."""
    if weights_path is None or not Path(weights_path).is_file():
        raise AerobustError("the Inception Frechet distance needs a local torchvision inception_v3 state-dict "
                            f"file (got {weights_path}); download inception_v3 weights once and pass their path, "
                            "or use frechet_distance_small_classifier")
    import torchvision

    network = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:
        raise CheckpointError(f"{weights_path} is not a torchvision inception_v3 state dict "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    network.fc = nn.Identity()
    network.eval().to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def extract(images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        images = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        return network((images - mean) / std)

    return lambda images, batch_size=50: _batched(extract, images, device, batch_size)


def frechet_distance_inception_v3(real: torch.Tensor, generated: torch.Tensor, weights_path,
                                  device: str | torch.device = "cpu") -> float:
    """Frechet distance between torchvision inception_v3 pool features of two image sets (close to, not, FID)."""
    extract = inception_features(weights_path, device)
    return frechet_distance_of_features(extract(real), extract(generated))


# Set-level metrics: two image sets -> one number, never a results column (those are per row).
register_metric("frechet-small-classifier", frechet_distance_small_classifier)
register_metric("frechet-inception-v3", frechet_distance_inception_v3)


# -- sampling from the trained model -----------------------------------------------------------------
def prior_from_defense_config(defense_config: dict) -> GMMPrior | None:
    """The GMM prior recorded in a checkpoint sidecar's ``defense_config``; None for other defenses."""
    prior = (defense_config or {}).get("prior")
    return None if prior is None else GMMPrior.from_description(prior)


@torch.no_grad()
def fitted_gaussian_codes(model, images: torch.Tensor, n: int, generator: torch.Generator | None = None,
                          batch_size: int = 500) -> torch.Tensor:
    """Codes from a Gaussian fitted to the model's codes of ``images`` (for AEs without a prior)."""
    codes = _batched(model.encode, images, model.device, batch_size).to(torch.float64)
    mean, cov = codes.mean(0), torch.cov(codes.T) + 1e-6 * torch.eye(codes.shape[1], dtype=torch.float64)
    noise = torch.randn(n, codes.shape[1], generator=generator, dtype=torch.float64)
    return (mean + noise @ torch.linalg.cholesky(cov).T).float()


@torch.no_grad()
def decode_codes(model, codes: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Images decoded from ``codes`` by a wrapped model, in eval mode, on the CPU."""
    with model.frozen():
        return _batched(model.decode, codes, model.device, batch_size)


def per_mode_samples(model, prior: GMMPrior, per_mode: int, generator: torch.Generator | None = None
                     ) -> list[torch.Tensor]:
    """``per_mode`` decoded samples from each mode of ``prior``."""
    return [decode_codes(model, prior.sample_mode(k, per_mode, generator)) for k in range(prior.n_modes)]
