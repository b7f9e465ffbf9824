"""diffusers' image autoencoders as aerobust models: ``--model diffusers:CLASS --model-arg pretrained=DIR_OR_ID``.

Every class below works on images in [-1, 1]; :class:`DiffusersAutoencoder` declares
``pixel_range = (-1, 1)`` so that :func:`aerobust.wrap` maps the audit's [0, 1] images into it and
the reconstructions back. The attacked code is the latent a diffusion model sees:
``(z - shift_factor) * scaling_factor`` of the posterior mean (the class's config values; 1 and 0
where the class has none). For ``VQModel`` the code is the encoder's continuous output before
quantization; the decoder quantizes it with diffusers' straight-through estimator, so gradients
reach the continuous code as if quantization were the identity.

Inputs must have sides that are multiples of the class's downsampling factor (8 for the usual
4-block configs); other sizes are refused with one line naming the multiple (use --pad/--resize).
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from .errors import AerobustError

PREFIX = "diffusers:"
IMAGE_AUTOENCODERS = ("AutoencoderKL", "AutoencoderKLFlux2", "AutoencoderTiny", "AutoencoderDC",
                      "AsymmetricAutoencoderKL", "VQModel")
# The config key listing one width per resolution level: the image shrinks by 2 between levels.
_LEVEL_KEYS = ("block_out_channels", "down_block_out_channels", "encoder_block_out_channels")
_LOAD_ARGUMENTS = ("pretrained", "subfolder", "variant", "torch_dtype", "revision")


def is_diffusers_spec(source: str) -> bool:
    return source.startswith(PREFIX)


def _diffusers():
    try:
        return importlib.import_module("diffusers")
    except ImportError:
        raise AerobustError("diffusers models need the diffusers extra: pip install 'aerobust[diffusers]'") from None


def _size_multiple(config) -> int:
    for key in _LEVEL_KEYS:
        levels = config.get(key)
        if levels:
            return 2 ** (len(levels) - 1)
    raise AerobustError(f"cannot tell the downsampling factor of this diffusers config (no {'/'.join(_LEVEL_KEYS)})")


class DiffusersAutoencoder(nn.Module):
    """A diffusers image autoencoder with aerobust's encode/decode contract (see the module docstring)."""

    pixel_range = (-1.0, 1.0)

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        config = model.config
        self.class_name = type(model).__name__
        self.scaling_factor = float(config.get("scaling_factor", None) or 1.0)
        self.shift_factor = float(config.get("shift_factor", None) or 0.0)
        self.size_multiple = _size_multiple(config)
        self.quantized = self.class_name == "VQModel"

    def _check_size(self, x: torch.Tensor):
        height, width = x.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise AerobustError(f"{self.class_name} needs image sides that are multiples of {self.size_multiple}; "
                                f"got {height}x{width}: use --pad or --resize to such a size")

    def encode(self, x: torch.Tensor):
        self._check_size(x)
        out = self.model.encode(x.to(self.model.dtype))
        dist = getattr(out, "latent_dist", None)
        if dist is not None:
            scale = self.scaling_factor
            return torch.distributions.Normal((dist.mean - self.shift_factor) * scale, dist.std * scale)
        code = getattr(out, "latents", None)
        code = getattr(out, "latent", None) if code is None else code
        if not isinstance(code, torch.Tensor):
            raise AerobustError(f"{self.class_name}.encode returned {type(out).__name__} without a latent")
        return (code - self.shift_factor) * self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        latent = (z / self.scaling_factor + self.shift_factor).to(self.model.dtype)
        return self.model.decode(latent).sample.float()

    def describe(self) -> dict:
        return {"class": self.class_name, "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor,
                "size_multiple": self.size_multiple, "pixel_range": list(self.pixel_range),
                "quantization": "straight-through (diffusers VectorQuantizer)" if self.quantized else None}


def load_diffusers_autoencoder(spec: str, arguments: dict) -> DiffusersAutoencoder:
    """``diffusers:CLASS`` with ``pretrained=DIR_OR_ID`` (and optional subfolder, variant, torch_dtype, revision)."""
    name = spec[len(PREFIX):]
    diffusers = _diffusers()
    if name not in IMAGE_AUTOENCODERS:
        if name.startswith("Autoencoder") and hasattr(diffusers, name):
            raise AerobustError(f"{name} is a video or audio autoencoder: not supported yet; "
                                f"image autoencoders: {', '.join(IMAGE_AUTOENCODERS)}")
        raise AerobustError(f"unknown diffusers autoencoder {name!r}; use one of {', '.join(IMAGE_AUTOENCODERS)}")
    if not hasattr(diffusers, name):
        raise AerobustError(f"diffusers {diffusers.__version__} has no {name}; upgrade diffusers to use it")
    unknown = sorted(set(arguments) - set(_LOAD_ARGUMENTS))
    if unknown or "pretrained" not in arguments:
        raise AerobustError(f"{spec} takes --model-arg pretrained=DIR_OR_ID and optionally "
                            f"{', '.join(_LOAD_ARGUMENTS[1:])}; got {', '.join(sorted(arguments)) or 'none'}")
    options = {key: arguments[key] for key in _LOAD_ARGUMENTS[1:] if key in arguments}
    if "torch_dtype" in options:
        dtype = getattr(torch, str(options["torch_dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise AerobustError(f"torch_dtype {options['torch_dtype']!r} is not a torch dtype (e.g. float32, float16)")
        options["torch_dtype"] = dtype
    try:
        model = getattr(diffusers, name).from_pretrained(str(arguments["pretrained"]), **options)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AerobustError(f"cannot load {name} from {arguments['pretrained']}: {first_line}") from None
    return DiffusersAutoencoder(model)
