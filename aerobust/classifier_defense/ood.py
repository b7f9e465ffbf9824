"""Out-of-distribution detection with an autoencoder: reconstruction error and the code's prior likelihood.

Scores (higher = more out-of-distribution):

* ``reconstruction_error``: per-image mean squared error of ``reconstruct(x)``;
* ``negative_prior_loglik``: ``-log p(encode(x))`` under the model's prior -- the standard normal for a
  VAE, the GMM prior a GMM-regularized model was trained towards (read from its checkpoint; ``auto``
  picks it), or, for a plain AE that has no prior, a full-covariance Gaussian fitted to the codes of
  the training images (``gaussian-fit``).
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import distributions as D

from ..adapter import Autoencoder
from ..datasets import ImageSet, fit_images, load_dataset
from ..errors import AerobustError, DataUnavailableError
from .detect import roc_auc

PRIORS = ("auto", "standard-normal", "gaussian-fit", "gmm")
OOD_SCORES = ("reconstruction_error", "negative_prior_loglik")


@torch.no_grad()
def _batched(function, images: torch.Tensor, device, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([function(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


def reconstruction_error(autoencoder: Autoencoder, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Per-image mean squared reconstruction error (the deterministic / mean path)."""
    return _batched(lambda x: (autoencoder.reconstruct(x) - x).flatten(1).pow(2).mean(1),
                    images, autoencoder.device, batch_size)


def codes(autoencoder: Autoencoder, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return _batched(autoencoder.encode, images, autoencoder.device, batch_size)


def resolve_prior(autoencoder: Autoencoder, prior: str | D.Distribution = "auto",
                  fit_images: torch.Tensor | None = None, *, gmm_scale: float = 10.0,
                  gmm_std: float = 1.0, trained_prior=None) -> tuple[D.Distribution, str]:
    """The latent density used for ``negative_prior_loglik`` and its name (see the module doc).

    ``trained_prior`` is the GMM prior a model was trained towards (from its checkpoint sidecar);
    ``auto`` and ``gmm`` use it when given.
    """
    if isinstance(prior, D.Distribution):
        return prior, "user"
    if prior not in PRIORS:
        raise AerobustError(f"unknown prior '{prior}'; use one of {', '.join(PRIORS)}")
    if prior in ("auto", "gmm") and trained_prior is not None:
        return trained_prior.to("cpu").distribution(), "trained-gmm"
    if prior == "auto":
        prior = "standard-normal" if autoencoder.is_stochastic else "gaussian-fit"
    dim = autoencoder.latent_dim
    if prior == "standard-normal":
        return D.Independent(D.Normal(torch.zeros(dim), torch.ones(dim)), 1), prior
    if prior == "gmm":
        from ..priors import GMMPrior

        return GMMPrior.build(dim, scale=gmm_scale, std=gmm_std).distribution(), prior
    if fit_images is None or len(fit_images) <= dim:
        raise AerobustError(f"the gaussian-fit prior needs more than {dim} training images to fit the codes")
    fitted = codes(autoencoder, fit_images).double()
    covariance = torch.cov(fitted.T) + 1e-6 * torch.eye(dim, dtype=fitted.dtype)
    return D.MultivariateNormal(fitted.mean(0).float(), covariance_matrix=covariance.float()), prior


def ood_scores(autoencoder: Autoencoder, images: torch.Tensor, prior: D.Distribution) -> dict[str, torch.Tensor]:
    return {"reconstruction_error": reconstruction_error(autoencoder, images),
            "negative_prior_loglik": -prior.log_prob(codes(autoencoder, images))}


def ood_sets(reference: ImageSet, *, seed: int = 0, fashion_root=None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Out-of-distribution image sets shaped like ``reference`` and notes on the sets that were skipped.

    uniform noise, inverted and 90-degree rotated reference images, scikit-learn digits resized to the
    reference side, and Fashion-MNIST (padded like the reference) when it is present locally.
    """
    images = reference.images
    channels, height, width = images.shape[1:]
    n = len(images)
    generator = torch.Generator().manual_seed(seed)
    sets = {
        "uniform-noise": torch.rand(images.shape, generator=generator),
        "inverted": 1 - images,
        "rotated-90": torch.rot90(images, 1, dims=(2, 3)),
    }
    notes = []
    digits = load_dataset("digits", "all", resize=height, channels=channels)
    sets["sklearn-digits"] = digits.images[:n]
    try:
        fashion = load_dataset("fashion-mnist", "test", root=fashion_root, limit=n)
        sets["fashion-mnist"] = fit_images(fashion.images, pad_to=height if height >= 28 else None,
                                           resize=None if height >= 28 else height, channels=channels)
    except DataUnavailableError as exc:
        notes.append(f"fashion-mnist skipped: {exc}")
    return sets, notes


def ood_table(autoencoder: Autoencoder, in_distribution: torch.Tensor, ood: dict[str, torch.Tensor],
              prior: D.Distribution) -> tuple[pd.DataFrame, dict[str, dict[str, torch.Tensor]]]:
    """ROC-AUC (in-distribution = 0, OOD = 1) per OOD set and score; also returns all per-image scores."""
    scores = {"in-distribution": ood_scores(autoencoder, in_distribution, prior)}
    rows = []
    for name, images in ood.items():
        scores[name] = ood_scores(autoencoder, images, prior)
        row = {"ood_set": name, "n_in": len(in_distribution), "n_ood": len(images)}
        for score in OOD_SCORES:
            row[f"auc_{score}"] = roc_auc(scores["in-distribution"][score], scores[name][score])
            row[f"ood_mean_{score}"] = float(scores[name][score].mean())
            row[f"in_mean_{score}"] = float(scores["in-distribution"][score].mean())
        rows.append(row)
    return pd.DataFrame(rows), scores

