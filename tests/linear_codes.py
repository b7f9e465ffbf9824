"""A linear code of very unequal scales: the latent attack's loss is an ill-conditioned quadratic whose
minimum over the threat other tools can compute (the optimizer tests)."""
import torch
from torch import nn

SHAPE = (1, 6, 6)
SCALES = torch.logspace(0, 1.5, 36)  # code = SCALES * pixels: the squared distance has condition number 1000


class StretchedCode(nn.Module):
    """A linear code of very unequal scales: the latent attack's loss is an ill-conditioned quadratic."""

    input_shape = SHAPE

    def __init__(self):
        super().__init__()
        self.register_buffer("scales", SCALES.clone())

    def encode(self, x):
        return x.flatten(1) * self.scales

    def decode(self, z):
        return (z / self.scales).view(len(z), *SHAPE)
