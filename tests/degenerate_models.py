"""Model factories for `aerobust audit --model tests.degenerate_models:FACTORY`: broken on purpose."""
from __future__ import annotations

import torch
from torch import nn

SHAPE = (1, 32, 32)


class _LinearCode(nn.Module):
    input_shape = SHAPE

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(32 * 32, 10)
        self.image = nn.Parameter(torch.rand(SHAPE))

    def encode(self, x):
        return self.encoder(x.flatten(1))


class ConstantDecoder(_LinearCode):
    """Its decoder ignores the code and returns one fixed image: "perfectly robust" and useless."""

    def decode(self, z):
        return self.image.expand(len(z), *SHAPE)


class NaNForBrightImages(_LinearCode):
    """Its code is NaN for images brighter than BRIGHT on average (about half of MNIST), finite otherwise."""

    BRIGHT = 0.1

    def encode(self, x):
        code = super().encode(x)
        bright = x.flatten(1).mean(dim=1, keepdim=True) > self.BRIGHT
        return torch.where(bright, torch.full_like(code, float("nan")), code)

    def decode(self, z):
        return torch.sigmoid(z.sum(dim=1).view(-1, 1, 1, 1) + self.image)


def constant_decoder():
    return ConstantDecoder()


def nan_for_bright_images():
    return NaNForBrightImages()
