"""A downstream MLP classifier on an autoencoder's codes (paper Table 3) and its robustness.

``train_latent_classifier`` fits a head on frozen codes (``AutoencoderClassifier(model, head)`` is the
end-to-end image classifier ``head(encode(x))``); ``latent_classifier_accuracy`` gives the clean
accuracy and the accuracy after the latent-space attack (eq. 12) at a radius lambda.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AerobustError, ShapeError


class Standardize(nn.Module):
    """Fixed per-dimension affine map to zero mean and unit variance of the training codes."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone().clamp_min(1e-6))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes - self.mean) / self.std


def make_head(latent_dim: int, num_classes: int, hidden: Sequence[int] = (128,)) -> nn.Sequential:
    widths = [latent_dim, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


def build_latent_head(latent_dim: int, num_classes: int, hidden: Sequence[int] = (128,), *,
                      mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> nn.Sequential:
    """``Standardize -> MLP``; without statistics it is an empty shell for ``load_state_dict``."""
    mean = torch.zeros(latent_dim) if mean is None else mean
    std = torch.ones(latent_dim) if std is None else std
    return nn.Sequential(Standardize(mean, std), make_head(latent_dim, num_classes, hidden))


def latent_codes(model, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Deterministic codes of ``images`` (no gradients, eval mode), on the model's device."""
    with model.frozen(), torch.no_grad():
        return torch.cat([model.encode(chunk.to(model.device)) for chunk in images.split(batch_size)])


def train_latent_classifier(model, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 30,
                            batch_size: int = 128, lr: float = 1e-3, hidden: Sequence[int] = (128,),
                            num_classes: int | None = None, seed: int = 0) -> nn.Sequential:
    """Train an MLP head on the frozen codes of ``images``; returns ``Standardize -> MLP`` in eval mode."""
    labels = torch.as_tensor(labels).long()
    if labels.shape != (images.shape[0],):
        raise ShapeError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if epochs < 1:
        raise AerobustError("epochs must be at least 1")
    codes = latent_codes(model, images)
    labels = labels.to(codes.device)
    num_classes = int(num_classes or int(labels.max()) + 1)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = build_latent_head(codes.shape[1], num_classes, hidden, mean=codes.mean(0), std=codes.std(0))
    head = head.to(codes.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(codes), generator=generator).to(codes.device)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(head(codes[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()


def latent_classifier_accuracy(model, head: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                               lam: float = 1.0, trials: int = 1, seed: int = 0,
                               pool_images: torch.Tensor | None = None, pool_labels: torch.Tensor | None = None,
                               image_ids: torch.Tensor | None = None, **attack_options) -> dict:
    """Clean accuracy and accuracy of ``head`` on the codes after the latent-space attack at ``lam``.

    Targets are images of another class from the pool (default: ``images`` themselves), chosen by
    :func:`aerobust.attacks.choose_targets`; ``attack_options`` go to the ``latent`` attack.
    """
    from ..attacks import choose_targets
    from ..registry import ATTACKS

    labels = torch.as_tensor(labels).long()
    pool_images = images if pool_images is None else pool_images
    pool_labels = labels if pool_labels is None else torch.as_tensor(pool_labels).long()
    index = choose_targets(labels, trials, seed, pool_labels, image_ids=image_ids)
    attack = ATTACKS.create("latent", **attack_options)
    result = attack.sweep(model, images, [lam], trials, seed, targets=pool_images[index], image_ids=image_ids)

    def accuracy(batch: torch.Tensor) -> float:
        predictions = head(latent_codes(model, batch)).argmax(dim=1).cpu()
        return float((predictions == labels.repeat(len(batch) // len(labels))).float().mean())

    with torch.no_grad():
        clean = accuracy(images)
        attacked = accuracy(result.x_adv[0].flatten(0, 1))
    return {"clean_accuracy": clean, "attacked_accuracy": attacked, "lambda": float(lam), "trials": trials,
            "attack": result.config, "flags": result.flags}
