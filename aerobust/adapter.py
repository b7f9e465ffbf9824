"""Wrap any encoder/decoder pair as an :class:`Autoencoder` that attacks and reports can use.

Accepted shapes:

* a module with ``encode`` and ``decode`` methods;
* a pair ``(encoder, decoder)`` of callables/modules;
* a VAE, i.e. either of the above whose encoder returns ``(mu, logvar)`` or a
  ``torch.distributions.Distribution``.

``encode`` is always the deterministic code that attacks differentiate (the mean for a VAE);
``sample_latent`` draws from the posterior of stochastic models.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .errors import AerobustError, ShapeError
from .runtime import frozen_modules, resolve_device


def _shape_text(shape: Sequence[int]) -> str:
    return "(N, " + ", ".join(str(s) for s in shape) + ")"


class Autoencoder(nn.Module):
    """Uniform view of an autoencoder: ``encode``, ``decode``, ``reconstruct``, ``sample_latent``."""

    def __init__(self, encoder: Callable, decoder: Callable, input_shape: Sequence[int],
                 device: str | torch.device = "auto", source: nn.Module | None = None):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        # Registering the modules makes .to(), .eval() and state_dict() reach the user's parameters.
        self.modules_wrapped = nn.ModuleList(
            m for m in ([source] if source is not None else [encoder, decoder]) if isinstance(m, nn.Module)
        )
        self._encoder = encoder
        self._decoder = decoder
        self.device = resolve_device(device)
        self.to(self.device)
        self.eval()
        self.latent_dim, self.is_stochastic = self._probe()

    # -- the three model shapes -------------------------------------------------------------
    def _posterior(self, x: torch.Tensor):
        """Returns (mean, logvar or None, distribution or None) for a checked input batch."""
        out = self._encoder(x)
        if isinstance(out, torch.distributions.Distribution):
            return out.mean, None, out
        if isinstance(out, (tuple, list)):
            if len(out) != 2 or not all(isinstance(t, torch.Tensor) for t in out):
                raise AerobustError(
                    "the encoder returned a tuple that is not (mu, logvar); return a tensor, "
                    "a (mu, logvar) pair or a torch.distributions.Distribution"
                )
            return out[0], out[1], None
        if not isinstance(out, torch.Tensor):
            raise AerobustError(
                f"the encoder returned {type(out).__name__}; return a tensor, a (mu, logvar) pair "
                "or a torch.distributions.Distribution"
            )
        return out, None, None

    def _check_input(self, x: torch.Tensor):
        if not isinstance(x, torch.Tensor):
            raise AerobustError(f"expected a tensor of shape {_shape_text(self.input_shape)}, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.input_shape or x.dim() != len(self.input_shape) + 1:
            raise ShapeError(
                f"input of shape {tuple(x.shape)} does not fit the model: expected "
                f"{_shape_text(self.input_shape)}; resize or pad the data (e.g. --pad 32 for MNIST)"
            )

    def _probe(self):
        x = torch.full((2, *self.input_shape), 0.5, device=self.device)
        with torch.no_grad():
            mean, logvar, dist = self._posterior(x)
            if mean.dim() != 2 or mean.shape[0] != 2:
                raise ShapeError(
                    f"the encoder must return codes of shape (N, latent_dim); got {tuple(mean.shape)}"
                )
            self.decode(mean)
        return int(mean.shape[1]), (logvar is not None or dist is not None)

    # -- public API -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic code of ``x`` (posterior mean for VAEs); differentiable."""
        self._check_input(x)
        return self._posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self._decoder(z)
        if not isinstance(out, torch.Tensor):
            raise AerobustError(f"the decoder returned {type(out).__name__}; it must return a tensor")
        if tuple(out.shape[1:]) != self.input_shape:
            raise ShapeError(
                f"the decoder returned shape {tuple(out.shape)} but the input shape is "
                f"{_shape_text(self.input_shape)}; the reconstruction must match the input"
            )
        return out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    def posterior(self, x: torch.Tensor):
        """(mu, logvar) for VAEs with a Gaussian head; (mean, None) otherwise."""
        self._check_input(x)
        mean, logvar, dist = self._posterior(x)
        if dist is not None and isinstance(dist, torch.distributions.Normal):
            logvar = 2 * dist.stddev.log()
        return mean, logvar

    def sample_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw from the posterior q(z|x); only for stochastic models."""
        self._check_input(x)
        mean, logvar, dist = self._posterior(x)
        if dist is not None:
            return dist.rsample()
        if logvar is None:
            raise AerobustError(
                "this model is deterministic and has no posterior to sample; use latent noise instead"
            )
        noise = torch.randn(mean.shape, generator=generator, device="cpu").to(mean.device)
        return mean + noise * (0.5 * logvar).exp()

    def frozen(self):
        """Eval mode with parameter gradients off (attacks need input gradients only); restores both."""
        return frozen_modules(self)

    def extra_repr(self):
        return (f"input_shape={self.input_shape}, latent_dim={self.latent_dim}, "
                f"stochastic={self.is_stochastic}, device={self.device}")


def wrap(model, *, input_shape: Sequence[int] | None = None, device: str | torch.device = "auto") -> Autoencoder:
    """Wrap ``model`` (module with encode/decode, ``(encoder, decoder)`` pair, or VAE) as an Autoencoder.

    ``input_shape`` is ``(C, H, W)`` without the batch; it may be omitted when the model has an
    ``input_shape`` attribute (all built-in architectures do).
    """
    if isinstance(model, Autoencoder):
        return model
    if isinstance(model, (tuple, list)):
        if len(model) != 2:
            raise AerobustError("pass an (encoder, decoder) pair, a module with encode/decode, or a VAE")
        encoder, decoder = model
        source = None
        shape_source = encoder
    elif hasattr(model, "encode") and hasattr(model, "decode"):
        encoder, decoder, source, shape_source = model.encode, model.decode, model, model
    else:
        raise AerobustError(
            f"cannot wrap {type(model).__name__}: give a module with encode() and decode(), "
            "or an (encoder, decoder) pair"
        )
    if input_shape is None:
        input_shape = getattr(shape_source, "input_shape", None)
    if input_shape is None:
        raise AerobustError("the model has no input_shape attribute; pass input_shape=(C, H, W) to wrap()")
    return Autoencoder(encoder, decoder, input_shape, device=device, source=source)
