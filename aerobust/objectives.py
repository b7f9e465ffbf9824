"""Per-sample attack objectives, reported as the paper's "attack loss".

* ``latent`` (eq. 12): ``||g(x + d) - g(x_t)||_2`` to a target code; smaller is a stronger attack.
* ``max-damage`` (eq. 13): ``||f(g(x + d)) - f(g(x))||_2``; larger is a stronger attack.
* ``latent-classifier``: cross-entropy of a classifier head on the code ``g(x + d)``; untargeted
  (true label, larger is stronger) or targeted (target class, smaller is stronger).
* ``latent-kl`` / ``latent-skl`` (VAEs, Gondim-Ribeiro et al. 2018; Kuzina et al.): the KL divergence
  ``KL(q(z|x + d) || q(z|x_t))`` to a target image's posterior, or its symmetric form
  ``KL(q_a || q_t) + KL(q_t || q_a)``; smaller is stronger.
* ``max-kl`` (VAEs, untargeted): ``KL(q(z|x + d) || q(z|x))``; larger is stronger.
* ``classifier``: cross-entropy of the attacked module itself, an image classifier (a plain one, or an
  autoencoder and a classifier as one ``AutoencoderClassifier``), against the true label.

An objective is *bound* to one batch (its references: target codes, clean reconstructions, labels)
and then maps ``x_adv (B, C, H, W) -> values (B,)``. Every sample's value depends on that sample
only, so a bound objective can be restricted to any subset of rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .composite import AutoencoderClassifier
from .errors import AerobustError, ShapeError
from .registry import OBJECTIVES, register_objective


@dataclass(frozen=True)
class BoundObjective:
    """An objective tied to a batch: ``values(x_adv)`` in the paper's sense, one per sample."""

    name: str
    maximize: bool
    model: nn.Module
    evaluate: Callable[[nn.Module, torch.Tensor, dict], torch.Tensor]
    references: dict = field(default_factory=dict)
    # The values are Euclidean distances (>= 0, a cone at 0): their square orders points alike and is
    # smooth where the distance is not, which a quasi-Newton optimizer's curvature model needs.
    distance: bool = False

    def values(self, x_adv: torch.Tensor) -> torch.Tensor:
        return self.evaluate(self.model, x_adv, self.references)

    def loss(self, x_adv: torch.Tensor) -> torch.Tensor:
        """The per-sample quantity every optimizer minimizes."""
        values = self.values(x_adv)
        return -values if self.maximize else values

    def stronger(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mask: value ``a`` is a strictly stronger attack than value ``b``."""
        return a > b if self.maximize else a < b

    def select(self, index: torch.Tensor) -> "BoundObjective":
        return replace(self, references={k: v[index] for k, v in self.references.items()})


def _latent_distance(model, x_adv, refs):
    return (model.encode(x_adv) - refs["target_codes"]).norm(dim=1)


def _reconstruction_damage(model, x_adv, refs):
    return (model.decode(model.encode(x_adv)) - refs["clean_reconstructions"]).flatten(1).norm(dim=1)


def _cross_entropy(network, x_adv, refs):
    logits = network(x_adv)
    if logits.dim() != 2:
        raise ShapeError(f"a classifier objective needs logits of shape (N, classes), got {tuple(logits.shape)}; "
                         "attack an image classifier (or use latent-classifier with a head on the codes)")
    return F.cross_entropy(logits, refs["classes"], reduction="none")


class Objective:
    """Base: ``bind`` computes the references of a batch once, without gradients."""

    name = "objective"
    maximize = True
    needs_targets = False
    needs_classifier = False

    def bind(self, model, x: torch.Tensor, *, targets: torch.Tensor | None = None,
             labels: torch.Tensor | None = None, classifier: nn.Module | None = None,
             target_classes: torch.Tensor | None = None) -> BoundObjective:
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name, "maximize": self.maximize}


class LatentObjective(Objective):
    """eq. 12: distance of the adversarial code to the code of a target image."""

    name = "latent"
    maximize = False
    needs_targets = True
    target_reachable = True  # x_t itself lies in the box, so an unbounded attack can reach g(x_t)

    def bind(self, model, x, *, targets=None, labels=None, classifier=None, target_classes=None):
        if targets is None:
            raise AerobustError("the latent-space attack needs target images; pass targets=")
        if targets.shape != x.shape:
            raise ShapeError(f"targets must have the shape of the images {tuple(x.shape)}, got {tuple(targets.shape)}")
        with torch.no_grad():
            codes = model.encode(targets)
        return BoundObjective(self.name, self.maximize, model, _latent_distance, {"target_codes": codes},
                              distance=True)


class MaxDamageObjective(Objective):
    """eq. 13: distance of the adversarial reconstruction to the clean reconstruction."""

    name = "max-damage"
    maximize = True

    def bind(self, model, x, *, targets=None, labels=None, classifier=None, target_classes=None):
        with torch.no_grad():
            clean = model.decode(model.encode(x))
        return BoundObjective(self.name, self.maximize, model, _reconstruction_damage,
                              {"clean_reconstructions": clean}, distance=True)


class ClassifierObjective(Objective):
    """Cross-entropy of a head on the codes: away from the label, or towards a target class."""

    name = "latent-classifier"
    needs_classifier = True

    def __init__(self, targeted: bool = False):
        self.targeted = targeted
        self.maximize = not targeted

    def bind(self, model, x, *, targets=None, labels=None, classifier=None, target_classes=None):
        if classifier is None:
            raise AerobustError("the latent-classifier attack needs a classifier head on the codes; pass classifier=")
        classes = target_classes if self.targeted else labels
        if classes is None:
            what = "target classes" if self.targeted else "labels"
            raise AerobustError(f"the latent-classifier attack needs {what} for every image")
        classifier.eval()
        network = AutoencoderClassifier(model, classifier, through="code")
        return BoundObjective(self.name, self.maximize, network, _cross_entropy,
                              {"classes": classes.to(x.device).long()})

    def config(self) -> dict:
        return {**super().config(), "targeted": self.targeted}


def gaussian_kl(mu_p: torch.Tensor, logvar_p: torch.Tensor, mu_q: torch.Tensor,
                logvar_q: torch.Tensor) -> torch.Tensor:
    """Closed-form ``KL(N(mu_p, diag e^logvar_p) || N(mu_q, diag e^logvar_q))`` per row: (B, D) -> (B,)."""
    ratio = (logvar_p - logvar_q).exp()
    return 0.5 * (ratio + (mu_p - mu_q).pow(2) / logvar_q.exp() - 1 - (logvar_p - logvar_q)).sum(dim=1)


def gaussian_posterior(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of a VAE's diagonal Gaussian posterior; refuses deterministic encoders."""
    posterior = getattr(model, "posterior", None)
    mean, logvar = posterior(x) if posterior is not None else (None, None)
    if logvar is None:
        raise AerobustError("the KL attacks (latent-kl, latent-skl, max-kl) need a VAE whose encoder returns "
                            "(mu, logvar) or a Normal distribution; this encoder is deterministic (or its posterior "
                            "is not a diagonal Normal), use the latent or max-damage attack instead")
    return mean, logvar


def _kl_to_target(model, x_adv, refs):
    mu, logvar = gaussian_posterior(model, x_adv)
    return gaussian_kl(mu, logvar, refs["target_mu"], refs["target_logvar"])


def _symmetric_kl_to_target(model, x_adv, refs):
    mu, logvar = gaussian_posterior(model, x_adv)
    return (gaussian_kl(mu, logvar, refs["target_mu"], refs["target_logvar"])
            + gaussian_kl(refs["target_mu"], refs["target_logvar"], mu, logvar))


def _kl_from_clean(model, x_adv, refs):
    mu, logvar = gaussian_posterior(model, x_adv)
    return gaussian_kl(mu, logvar, refs["clean_mu"], refs["clean_logvar"])


class PosteriorKLObjective(Objective):
    """VAEs, targeted: KL (symmetric=True: symmetric KL) of the adversarial posterior to the target's."""

    name = "latent-kl"
    maximize = False
    needs_targets = True
    target_reachable = True  # x_t lies in the box, and at x_t both divergences are 0

    def __init__(self, symmetric: bool = False):
        self.symmetric = symmetric
        self.name = "latent-skl" if symmetric else "latent-kl"

    def bind(self, model, x, *, targets=None, labels=None, classifier=None, target_classes=None):
        if targets is None:
            raise AerobustError(f"the {self.name} attack needs target images; pass targets=")
        if targets.shape != x.shape:
            raise ShapeError(f"targets must have the shape of the images {tuple(x.shape)}, got {tuple(targets.shape)}")
        with torch.no_grad():
            mu, logvar = gaussian_posterior(model, targets)
        evaluate = _symmetric_kl_to_target if self.symmetric else _kl_to_target
        return BoundObjective(self.name, self.maximize, model, evaluate, {"target_mu": mu, "target_logvar": logvar})

    def config(self) -> dict:
        return {**super().config(), "symmetric": self.symmetric}


class MaxKLObjective(Objective):
    """Untargeted: KL of the adversarial posterior to the clean posterior of x."""

    name = "max-kl"
    maximize = True

    def bind(self, model, x, *, targets=None, labels=None, classifier=None, target_classes=None):
        with torch.no_grad():
            mu, logvar = gaussian_posterior(model, x)
        return BoundObjective(self.name, self.maximize, model, _kl_from_clean, {"clean_mu": mu, "clean_logvar": logvar})


class ImageClassifierObjective(Objective):
    """Cross-entropy of the attacked module's logits against the true label (larger is stronger).

    The module is an image classifier: a plain one, or ``AutoencoderClassifier`` (classify the
    reconstruction, the adaptive attack on a purifier). The ``classifier`` argument is not used.
    """

    name = "classifier"

    def bind(self, model, x, *, targets=None, labels=None, classifier=None, target_classes=None):
        if labels is None:
            raise AerobustError("the classifier attack needs the true label of every image; pass labels=")
        return BoundObjective(self.name, self.maximize, model, _cross_entropy, {"classes": labels.to(x.device).long()})


def _symmetric_posterior_kl() -> PosteriorKLObjective:
    """VAEs: symmetric KL between the adversarial posterior and a target image's posterior (smaller is stronger)."""
    return PosteriorKLObjective(symmetric=True)


register_objective("latent", LatentObjective)
register_objective("max-damage", MaxDamageObjective)
register_objective("latent-classifier", ClassifierObjective)
register_objective("latent-kl", PosteriorKLObjective)
register_objective("latent-skl", _symmetric_posterior_kl)
register_objective("max-kl", MaxKLObjective)
register_objective("classifier", ImageClassifierObjective)


def make_objective(name: str, **options) -> Objective:
    """The registered objective ``name`` (``aerobust list objectives``) built with ``options``."""
    return OBJECTIVES.create(name, **options)
