"""Built-in encoder/decoder architectures (all registered in ``ARCHITECTURES``).

Every model exposes ``encode``/``decode``, ``input_shape`` and ``latent_dim``; the variational
versions return ``(mu, logvar)`` from ``encode``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .registry import register_architecture

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh}


def _activation(name: str) -> type[nn.Module]:
    from .errors import AerobustError

    if name not in _ACTIVATIONS:
        raise AerobustError(f"unknown activation '{name}'; choose from {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class _EncoderDecoder(nn.Module):
    """Shared head logic: a trunk producing features, a code head, and a decoder network."""

    def __init__(self, encoder_trunk: nn.Module, feature_dim: int, decoder: nn.Module, latent_dim: int,
                 input_shape: Sequence[int], variational: bool):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        self.variational = variational
        self.encoder_trunk = encoder_trunk
        self.code_head = nn.Linear(feature_dim, 2 * latent_dim if variational else latent_dim)
        self.decoder = decoder

    def encode(self, x: torch.Tensor):
        code = self.code_head(self.encoder_trunk(x))
        if self.variational:
            mu, logvar = code.chunk(2, dim=1)
            return mu, logvar
        return code

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.encode(x)
        return self.decode(code[0] if self.variational else code)


class MLPAutoencoder(_EncoderDecoder):
    """The reference fully connected AE: flatten -> hidden layers -> latent, mirrored, sigmoid output."""

    def __init__(self, input_shape: Sequence[int] = (1, 32, 32), latent_dim: int = 10,
                 hidden: Sequence[int] = (200, 200, 200, 200), activation: str = "relu",
                 variational: bool = False):
        act = _activation(activation)
        pixels = int(torch.tensor(input_shape).prod())
        widths = [pixels, *hidden]
        enc_layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            enc_layers += [nn.Linear(a, b), act()]
        dec_widths = [latent_dim, *reversed(hidden)]
        dec_layers: list[nn.Module] = []
        for a, b in zip(dec_widths[:-1], dec_widths[1:]):
            dec_layers += [nn.Linear(a, b), act()]
        dec_layers += [nn.Linear(dec_widths[-1], pixels), nn.Sigmoid(), nn.Unflatten(1, tuple(input_shape))]
        super().__init__(nn.Sequential(*enc_layers), widths[-1], nn.Sequential(*dec_layers),
                         latent_dim, input_shape, variational)


class ConvAutoencoder(_EncoderDecoder):
    """Strided 4x4 convolutions halving the side each layer down to 4x4, mirrored with transposed ones."""

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), latent_dim: int = 64,
                 channels: Sequence[int] = (32, 64, 128), activation: str = "relu", variational: bool = False):
        from .errors import AerobustError

        act = _activation(activation)
        in_channels, height, width = input_shape
        side_after = height // 2 ** len(channels)
        if height != width or side_after * 2 ** len(channels) != height or side_after < 1:
            raise AerobustError(
                f"ConvAutoencoder needs square images whose side is divisible by 2^{len(channels)}; "
                f"got {height}x{width}"
            )
        widths = [in_channels, *channels]
        enc: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), act()]
        enc.append(nn.Flatten())
        feature_dim = channels[-1] * side_after * side_after
        dec: list[nn.Module] = [nn.Linear(latent_dim, feature_dim), act(),
                                nn.Unflatten(1, (channels[-1], side_after, side_after))]
        rev = [*reversed(channels), in_channels]
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            dec.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
            dec.append(nn.Sigmoid() if i == len(rev) - 2 else act())
        super().__init__(nn.Sequential(*enc), feature_dim, nn.Sequential(*dec), latent_dim, input_shape,
                         variational)


@register_architecture("mlp-ae-32")
def mlp_ae_32(**kwargs) -> MLPAutoencoder:
    """Reference MNIST/Fashion-MNIST AE: 1024-200-200-200-200-latent (latent 10), sigmoid output."""
    return MLPAutoencoder(**kwargs)


@register_architecture("mlp-vae-32")
def mlp_vae_32(**kwargs) -> MLPAutoencoder:
    """The reference MLP with a (mu, logvar) head."""
    return MLPAutoencoder(variational=True, **kwargs)


@register_architecture("conv-ae-32x3")
def conv_ae_32x3(**kwargs) -> ConvAutoencoder:
    """SVHN-like 32x32 RGB convolutional AE."""
    kwargs.setdefault("input_shape", (3, 32, 32))
    return ConvAutoencoder(**kwargs)


@register_architecture("conv-vae-32x3")
def conv_vae_32x3(**kwargs) -> ConvAutoencoder:
    kwargs.setdefault("input_shape", (3, 32, 32))
    return ConvAutoencoder(variational=True, **kwargs)


@register_architecture("conv-ae-64x3")
def conv_ae_64x3(**kwargs) -> ConvAutoencoder:
    """CelebA-like 64x64 RGB convolutional AE (four stride-2 layers)."""
    kwargs.setdefault("input_shape", (3, 64, 64))
    kwargs.setdefault("channels", (32, 64, 128, 256))
    kwargs.setdefault("latent_dim", 128)
    return ConvAutoencoder(**kwargs)


@register_architecture("conv-vae-64x3")
def conv_vae_64x3(**kwargs) -> ConvAutoencoder:
    kwargs.setdefault("input_shape", (3, 64, 64))
    kwargs.setdefault("channels", (32, 64, 128, 256))
    kwargs.setdefault("latent_dim", 128)
    return ConvAutoencoder(variational=True, **kwargs)


# The pretrained latent autoencoder lives in its own module; importing it registers "taef2".
from . import taef2 as _taef2  # noqa: E402,F401
