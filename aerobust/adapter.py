"""Wrap any encoder/decoder pair as an :class:`Autoencoder` that attacks and reports can use.

Accepted models (see :func:`wrap`):

* a module with ``encode`` and ``decode`` methods;
* a pair ``(encoder, decoder)`` of modules or callables;
* a module with ``encoder`` and ``decoder`` submodules (the usual VAE layout).

The encoder may return a tensor, a ``(mu, logvar)`` pair, a ``torch.distributions.Distribution``
or an output object with a ``latent_dist`` (diffusers' ``AutoencoderKL``); the decoder a tensor or
an object with a ``.sample`` tensor. Codes may have any shape (e.g. ``32 x H/8 x W/8`` for a
latent-diffusion autoencoder): :meth:`Autoencoder.encode` returns them flattened to ``(N, D)`` so
that distances, objectives and latent classifiers are taken on the flat code, and
:meth:`Autoencoder.decode` restores the original shape before calling the user's decoder.

``encode`` is always the deterministic code that attacks differentiate (the mean for a VAE);
``sample_latent`` draws from the posterior of stochastic models.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from .diffusers_models import IMAGE_AUTOENCODERS, DiffusersAutoencoder
from .errors import AerobustError, ShapeError
from .runtime import frozen_modules, resolve_device

_ENCODER_OUTPUTS = "a tensor, a (mu, logvar) pair (or (mu, std) / (mu, var) with posterior=), a torch.distributions.Distribution or an object with latent_dist"


POSTERIOR_SPREADS = ("logvar", "std", "var")


def parse_pixel_range(value) -> tuple[float, float]:
    """``(low, high)`` from a pair or a ``"low,high"`` string; refuses an empty or reversed range."""
    if isinstance(value, str):
        value = value.split(",")
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise AerobustError(f"pixel range {value!r} is not two numbers; give it as low,high (e.g. -1,1)") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise AerobustError(f"pixel range ({low}, {high}) is empty or reversed; give low,high with low < high")
    return low, high


def _gaussian_logvar(dist: torch.distributions.Distribution) -> torch.Tensor | None:
    """Log-variance of a diagonal Gaussian (``Normal`` or ``Independent(Normal)``); None otherwise."""
    while isinstance(dist, torch.distributions.Independent):
        dist = dist.base_dist
    if isinstance(dist, torch.distributions.Normal):
        return 2 * dist.scale.log()
    return None


def _spread_to_logvar(spread: torch.Tensor, reading: str) -> torch.Tensor:
    """The second element of an encoder's ``(mu, spread)`` tuple as a log-variance."""
    if reading == "logvar":
        return spread
    if bool((spread < 0).any()):
        raise AerobustError(f"the encoder's second output has negative values, so it is not a {reading}; "
                            "pass posterior='logvar' (--posterior logvar) if it is a log-variance")
    return spread.log() if reading == "var" else 2 * spread.log()


def _shape_text(shape: Sequence[int]) -> str:
    return "(N, " + ", ".join(str(s) for s in shape) + ")"


def _owning_module(part) -> nn.Module | None:
    """The module whose parameters a part uses: itself, or the owner of a bound method."""
    if isinstance(part, nn.Module):
        return part
    owner = getattr(part, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


class Autoencoder(nn.Module):
    """Uniform view of an autoencoder: ``encode``, ``decode``, ``reconstruct``, ``sample_latent``.

    ``wrapped`` holds each user module once: ``{"model": m}`` for a single module, else
    ``{"encoder": e, "decoder": d}`` (only the parts that are modules). The callables themselves are
    kept outside the module tree so that no parameter is registered twice.
    """

    def __init__(self, encoder: Callable, decoder: Callable, input_shape: Sequence[int],
                 device: str | torch.device = "auto", source: nn.Module | None = None,
                 pixel_range: Sequence[float] = (0.0, 1.0), posterior: str = "logvar"):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.pixel_range = parse_pixel_range(pixel_range)
        if posterior not in POSTERIOR_SPREADS:
            raise AerobustError(f"unknown posterior reading {posterior!r}; use one of {', '.join(POSTERIOR_SPREADS)}")
        self.posterior_spread = posterior
        if source is not None:
            parts = {"model": source}
        else:
            owners = {"encoder": _owning_module(encoder), "decoder": _owning_module(decoder)}
            if owners["encoder"] is not None and owners["encoder"] is owners["decoder"]:
                parts = {"model": owners["encoder"]}
            else:
                parts = {name: module for name, module in owners.items() if module is not None}
        # Registering the modules makes .to(), .eval() and state_dict() reach the user's parameters.
        self.wrapped = nn.ModuleDict(parts)
        self._parts = (encoder, decoder)  # a tuple: nn.Module does not register what it holds
        self.device = resolve_device(device)
        self.to(self.device)
        self.eval()
        self.code_shape, self.is_stochastic = self._probe()
        self.latent_dim = math.prod(self.code_shape)

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Every wrapped tensor once: a single module's own keys, else ``encoder.*`` / ``decoder.*``."""
        source = self.wrapped["model"] if "model" in self.wrapped else self.wrapped
        return {k: v.detach().cpu() for k, v in source.state_dict().items()}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`checkpoint_state` (strict: every key must match)."""
        source = self.wrapped["model"] if "model" in self.wrapped else self.wrapped
        source.load_state_dict(state)

    # -- the model's outputs ---------------------------------------------------------------------
    def _posterior(self, x: torch.Tensor):
        """Returns (mean, logvar or None, sampler or None) in the code's own shape.

        ``x`` is in [0, 1] image space; the encoder sees it in the model's own pixel range.
        """
        out = self._parts[0](self._to_model_range(x))
        out = getattr(out, "latent_dist", out)
        latents = getattr(out, "latents", None)
        if not isinstance(out, torch.Tensor) and isinstance(latents, torch.Tensor):
            out = latents  # e.g. diffusers' AutoencoderTinyOutput
        if isinstance(out, torch.distributions.Distribution):
            return out.mean, _gaussian_logvar(out), out
        if isinstance(out, (tuple, list)):
            if len(out) != 2 or not all(isinstance(t, torch.Tensor) for t in out):
                raise AerobustError(f"the encoder returned a tuple that is not (mu, {self.posterior_spread}); "
                                    f"return {_ENCODER_OUTPUTS}")
            return out[0], _spread_to_logvar(out[1], self.posterior_spread), None
        if isinstance(out, torch.Tensor):
            return out, None, None
        mean = getattr(out, "mean", None)
        if isinstance(mean, torch.Tensor):  # e.g. diffusers' DiagonalGaussianDistribution
            logvar = getattr(out, "logvar", None)
            return mean, logvar if isinstance(logvar, torch.Tensor) else None, None
        raise AerobustError(f"the encoder returned {type(out).__name__}; return {_ENCODER_OUTPUTS}")

    def _to_model_range(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.pixel_range
        return x if (low, high) == (0.0, 1.0) else low + (high - low) * x

    def _from_model_range(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.pixel_range
        return x if (low, high) == (0.0, 1.0) else (x - low) / (high - low)

    def _flat(self, code: torch.Tensor) -> torch.Tensor:
        return code.reshape(code.shape[0], -1)

    def _check_input(self, x: torch.Tensor):
        if not isinstance(x, torch.Tensor):
            raise AerobustError(f"expected a tensor of shape {_shape_text(self.input_shape)}, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.input_shape or x.dim() != len(self.input_shape) + 1:
            raise ShapeError(
                f"input of shape {tuple(x.shape)} does not fit the model: expected "
                f"{_shape_text(self.input_shape)}; resize or pad the data (e.g. --pad 32 for MNIST)"
            )

    def _probe(self) -> tuple[tuple[int, ...], bool]:
        x = torch.full((2, *self.input_shape), 0.5, device=self.device)
        with torch.no_grad():
            mean, logvar, sampler = self._posterior(x)
            if not isinstance(mean, torch.Tensor) or mean.dim() < 2 or mean.shape[0] != 2:
                raise ShapeError("the encoder must return codes with the batch as first dimension; got "
                                 f"{tuple(getattr(mean, 'shape', ()))} for a batch of 2")
            code_shape = tuple(mean.shape[1:])
            self._decode_shaped(mean)
        return code_shape, (logvar is not None or sampler is not None)

    def _decode_shaped(self, code: torch.Tensor) -> torch.Tensor:
        out = self._parts[1](code)
        sample = getattr(out, "sample", None)
        if not isinstance(out, torch.Tensor) and isinstance(sample, torch.Tensor):
            out = sample  # e.g. diffusers' DecoderOutput
        if not isinstance(out, torch.Tensor):
            raise AerobustError(f"the decoder returned {type(out).__name__}; it must return a tensor "
                                "or an object with a .sample tensor")
        out = self._from_model_range(out)
        if tuple(out.shape[1:]) != self.input_shape:
            raise ShapeError(
                f"the decoder returned shape {tuple(out.shape)} but the input shape is "
                f"{_shape_text(self.input_shape)}; the reconstruction must match the input"
            )
        return out

    # -- public API -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic code of ``x`` (posterior mean for VAEs), flattened to (N, D); differentiable."""
        self._check_input(x)
        return self._flat(self._posterior(x)[0])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction of flat codes (N, D) (codes in the model's own shape are accepted too)."""
        return self._decode_shaped(z.reshape(z.shape[0], *self.code_shape))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    def posterior(self, x: torch.Tensor):
        """Flat (mu, logvar) for VAEs with a Gaussian head; (mean, None) otherwise."""
        self._check_input(x)
        mean, logvar, _ = self._posterior(x)
        return self._flat(mean), None if logvar is None else self._flat(logvar)

    def sample_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One flat draw from the posterior q(z|x); only for stochastic models."""
        self._check_input(x)
        mean, logvar, sampler = self._posterior(x)
        if sampler is not None:
            return self._flat(sampler.rsample())
        if logvar is None:
            raise AerobustError(
                "this model is deterministic and has no posterior to sample; use latent noise instead"
            )
        noise = torch.randn(mean.shape, generator=generator, device="cpu").to(mean.device)
        return self._flat(mean + noise * (0.5 * logvar).exp())

    def frozen(self):
        """Eval mode with parameter gradients off (attacks need input gradients only); restores both."""
        return frozen_modules(self)

    def extra_repr(self):
        return (f"input_shape={self.input_shape}, code_shape={self.code_shape}, latent_dim={self.latent_dim}, "
                f"stochastic={self.is_stochastic}, pixel_range={self.pixel_range}, "
                f"posterior={self.posterior_spread}, device={self.device}")


def wrap(model, *, input_shape: Sequence[int] | None = None, device: str | torch.device = "auto",
         pixel_range: Sequence[float] | None = None, posterior: str = "logvar") -> Autoencoder:
    """Wrap ``model`` as an Autoencoder; see the module docstring for the accepted forms.

    ``input_shape`` is ``(C, H, W)`` without the batch; it may be omitted when the model (or, for a
    pair, the encoder) has an ``input_shape`` attribute; ``aerobust audit`` and ``train`` pass the
    shape of the data for models without one.

    ``pixel_range`` is the ``(low, high)`` range the model's images live in (``(-1, 1)`` for
    diffusers' autoencoders); it defaults to the model's ``pixel_range`` attribute, else ``(0, 1)``.
    Attacks, budgets and metrics stay in [0, 1]: the wrapper maps inputs into the model's range
    and reconstructions back. ``posterior`` says how an encoder's tuple ``(mu, s)`` is read:
    ``s`` is a log-variance (``"logvar"``, the default), a standard deviation (``"std"``) or a
    variance (``"var"``).
    """
    if isinstance(model, Autoencoder):
        return model
    if type(model).__module__.startswith("diffusers.") and type(model).__name__ in IMAGE_AUTOENCODERS:
        model = DiffusersAutoencoder(model)  # their [-1, 1] range, latent scaling and size rules
    if isinstance(model, (tuple, list)):
        if len(model) != 2 or not all(callable(part) for part in model):
            raise AerobustError("pass an (encoder, decoder) pair of callables, a module with encode/decode, "
                                "or a module with encoder/decoder submodules")
        encoder, decoder = model
        source, shape_source = None, encoder
    elif callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None)):
        encoder, decoder, source, shape_source = model.encode, model.decode, model, model
    elif callable(getattr(model, "encoder", None)) and callable(getattr(model, "decoder", None)):
        encoder, decoder, source, shape_source = model.encoder, model.decoder, model, model
    else:
        raise AerobustError(
            f"cannot wrap {type(model).__name__}: give a module with encode() and decode(), a module with "
            "encoder and decoder submodules, or an (encoder, decoder) pair"
        )
    if source is not None and not isinstance(source, nn.Module):
        raise AerobustError(f"cannot wrap {type(model).__name__}: it is not a torch nn.Module")
    if input_shape is None:
        input_shape = getattr(shape_source, "input_shape", None)
    if input_shape is None:
        raise AerobustError("the model has no input_shape attribute; pass input_shape=(C, H, W) to wrap()")
    if pixel_range is None:
        pixel_range = getattr(shape_source, "pixel_range", (0.0, 1.0))
    return Autoencoder(encoder, decoder, input_shape, device=device, source=source,
                       pixel_range=pixel_range, posterior=posterior)
