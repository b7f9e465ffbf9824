"""A downstream MLP classifier on an autoencoder's codes (paper Table 3) and its robustness.

``train_latent_classifier`` fits a head on frozen codes (``AutoencoderClassifier(model, head)`` is the
end-to-end image classifier ``head(encode(x))``). Its accuracy under attack is the audit's
``classifier_correct`` column (the latent-classifier attack, aerobust/attacks).
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
