"""TAEF2: the tiny autoencoder of the FLUX.2 latent space (madebyollin/taesd, MIT), for audits.

Written from the facts sheet that ships with the weights (layer order and shapes only); the weights
are not bundled: pass the folder holding ``taef2_encoder.pth`` and ``taef2_decoder.pth`` as
``weights_dir`` (``--model-arg weights_dir=DIR``) or set ``AEROBUST_TAEF2_DIR``. Keep the MIT
LICENSE of that repository beside the weights wherever they are copied.

Images are ``3 x H x W`` in [0, 1] with H and W multiples of 8; codes are ``32 x H/8 x W/8``
(roughly in [-3, 3]). This is the encoder that PhotoGuard-style attacks on latent-diffusion models
target: the latent-space attack (eq. 12) on it is their "encoder attack".
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from .errors import AerobustError, CheckpointError, DataUnavailableError, ShapeError
from .registry import register_architecture

WEIGHTS_ENV = "AEROBUST_TAEF2_DIR"
WEIGHT_FILES = ("taef2_encoder.pth", "taef2_decoder.pth")
DOWNSCALE = 8
CODE_CHANNELS = 32
_WIDTH = 64


def _conv(channels_in: int, channels_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=bias)


class _Block(nn.Module):
    """Residual block: relu(conv(x) + x), conv = conv-relu-conv-relu-conv; optionally x += pool(x) first."""

    def __init__(self, midblock_norm: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(_WIDTH, _WIDTH), nn.ReLU(), _conv(_WIDTH, _WIDTH), nn.ReLU(),
                                  _conv(_WIDTH, _WIDTH))
        self.pool = nn.Sequential(
            nn.Conv2d(_WIDTH, 4 * _WIDTH, 1, bias=False), nn.GroupNorm(4, 4 * _WIDTH), nn.ReLU(),
            nn.Conv2d(4 * _WIDTH, _WIDTH, 1, bias=False)) if midblock_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + x)


class _SoftClamp(nn.Module):
    """z -> 3 tanh(z / 3): the decoder's input range."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / 3) * 3


def _encoder() -> nn.Sequential:
    def stage(norm: bool = False):
        return [_conv(_WIDTH, _WIDTH, stride=2, bias=False), *(_Block(norm) for _ in range(3))]

    return nn.Sequential(_conv(3, _WIDTH), _Block(), *stage(), *stage(), *stage(norm=True),
                         _conv(_WIDTH, CODE_CHANNELS))


def _decoder() -> nn.Sequential:
    def stage(blocks: int):
        return [nn.Upsample(scale_factor=2), _conv(_WIDTH, _WIDTH, bias=False), *(_Block() for _ in range(blocks))]

    return nn.Sequential(_SoftClamp(), _conv(CODE_CHANNELS, _WIDTH), nn.ReLU(), *(_Block(True) for _ in range(3)),
                         *stage(3), *stage(3), *stage(1), _conv(_WIDTH, 3))


class TAEF2(nn.Module):
    """``encode``: images (N, 3, H, W) in [0, 1] -> codes (N, 32, H/8, W/8); ``decode``: back, clamped to [0, 1].

    No ``input_shape``: any H, W that are multiples of 8 work, so audits take the data's size.
    """

    def __init__(self):
        super().__init__()
        self.encoder = _encoder()
        self.decoder = _decoder()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % DOWNSCALE or x.shape[3] % DOWNSCALE:
            raise ShapeError(f"TAEF2 takes RGB images whose sides are multiples of {DOWNSCALE}; got "
                             f"{tuple(x.shape)}: use --resize (e.g. 128 or 256) and 3 channels")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def weights_folder(weights_dir: str | os.PathLike | None) -> Path:
    """The folder holding both weight files, or one line saying where they come from."""
    folder = weights_dir if weights_dir is not None else os.environ.get(WEIGHTS_ENV)
    missing = "" if folder is None else ", ".join(f for f in WEIGHT_FILES if not (Path(folder) / f).is_file())
    if folder is None or missing:
        where = "no folder was given" if folder is None else f"{folder} lacks {missing}"
        raise DataUnavailableError(
            f"TAEF2 weights not found ({where}): get {' and '.join(WEIGHT_FILES)} from "
            f"github.com/madebyollin/taesd (MIT, keep its LICENSE beside them) and pass "
            f"--model-arg weights_dir=DIR or set {WEIGHTS_ENV}=DIR")
    return Path(folder)


def _load_part(part: nn.Module, path: Path):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        part.load_state_dict(state)  # the files are float16; load_state_dict casts to float32
    # garbage, an empty file (EOFError, which click would turn into a bare "Aborted!"), a pickled object
    # that is not a tensor dict (refused by weights_only), or a dict of the wrong tensors
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError, KeyError, TypeError,
            AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is not a TAEF2 weights file ({first})") from None


@register_architecture("taef2")
def taef2(weights_dir: str | os.PathLike | None = None) -> TAEF2:
    """Pretrained TAEF2 (FLUX.2 latent autoencoder, 3 x H x W -> 32 x H/8 x W/8); weights from weights_dir
    or $AEROBUST_TAEF2_DIR."""
    if weights_dir is not None and not isinstance(weights_dir, (str, os.PathLike)):
        raise AerobustError(f"taef2: weights_dir must be a folder path, got {weights_dir!r}")
    folder = weights_folder(weights_dir)
    model = TAEF2()
    _load_part(model.encoder, folder / WEIGHT_FILES[0])
    _load_part(model.decoder, folder / WEIGHT_FILES[1])
    return model.eval()
