"""Third-party-style models for the wrap and factory tests (loaded as FILE.py:factory).

None of them is an aerobust architecture: they use the layouts people publish (encode/decode
methods, encoder/decoder submodules, (encoder, decoder) pairs, spatial codes, diffusers-like output
objects) and most have no ``input_shape``: the data decides it.
"""
from types import SimpleNamespace

import torch
from torch import nn

import aerobust

SIDE = 8  # sklearn digits: 1 x 8 x 8


def _decoder(latent: int) -> nn.Module:
    return nn.Sequential(nn.Linear(latent, 8 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (8, 4, 4)),
                         nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Sigmoid())


class EncodeDecode(nn.Module):
    """encode()/decode() methods and an input_shape attribute."""

    def __init__(self, latent: int = 3):
        super().__init__()
        self.input_shape = (1, SIDE, SIDE)
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, latent))
        self.dec = _decoder(latent)

    def encode(self, x):
        return self.enc(x)

    def decode(self, z):
        return self.dec(z)


class GaussianEncoder(nn.Module):
    def __init__(self, latent: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(8 * 4 * 4, 2 * latent))

    def forward(self, x):
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar


class ConvVAE(nn.Module):
    """The usual VAE layout: submodules ``encoder`` -> (mu, logvar) and ``decoder``; no input_shape."""

    def __init__(self, latent: int = 4):
        super().__init__()
        self.encoder = GaussianEncoder(latent)
        self.decoder = _decoder(latent)

    def forward(self, x):
        return self.decoder(self.encoder(x)[0])


def build(latent: int = 4, weights: str | None = None) -> nn.Module:
    """A conv VAE, optionally loading a state dict from ``weights``."""
    model = ConvVAE(latent)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


def encode_decode(latent: int = 3) -> nn.Module:
    return EncodeDecode(latent)


def pair(latent: int = 3) -> nn.Module:
    """A factory that returns a wrap() of an (encoder, decoder) pair."""
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, latent))
    return aerobust.wrap((encoder, _decoder(latent)), input_shape=(1, SIDE, SIDE), device="cpu")


def vae(latent: int = 3) -> nn.Module:
    return ConvVAE(latent)


class SpatialLatent(nn.Module):
    """A latent-diffusion-like autoencoder: 4 x 2 x 2 codes, diffusers-like output objects.

    ``output`` picks what the encoder returns: "tensor", "distribution" (a torch Normal over the
    code map) or "latent_dist" (an object whose latent_dist has mean/logvar, as AutoencoderKL's).
    """

    def __init__(self, output: str = "tensor"):
        super().__init__()
        self.output = output
        self.down = nn.Conv2d(1, 8, 4, stride=4)  # 8 x 8 -> 8 x 2 x 2: mean and logvar maps
        self.up = nn.Sequential(nn.ConvTranspose2d(4, 1, 4, stride=4), nn.Sigmoid())

    def encode(self, x):
        mean, logvar = self.down(x).chunk(2, dim=1)
        if self.output == "tensor":
            return mean
        if self.output == "distribution":
            return torch.distributions.Normal(mean, (0.5 * logvar).exp())
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, logvar=logvar))

    def decode(self, z):
        return SimpleNamespace(sample=self.up(z))


def spatial(output: str = "tensor") -> nn.Module:
    return SpatialLatent(output)


def not_a_module():
    return {"weights": 1}


def broken(latent: int = 3):
    raise ValueError("no such latent size")
