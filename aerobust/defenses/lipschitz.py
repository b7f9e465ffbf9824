"""LipschitzVAE (Barrett et al., AISTATS 2022): a VAE whose encoder and decoder have bounded Lipschitz
constants, with the certificate those constants give.

Architecture (``mlp-vae-lipschitz-32``): every linear layer is normalised to spectral norm <= 1 (one
power iteration per training step, ``constraint="spectral"``, the default because it is cheap on a
CPU; or ``constraint="bjorck"``, iterative orthonormalisation as in Anil et al.'s GroupSort
networks), the activations are GroupSort with groups of two (MaxMin, 1-Lipschitz and gradient norm
preserving), and the last layer of each path is scaled by the chosen constant. The posterior std is
``sigma_min + (sigma_max - sigma_min) * sigmoid(h)`` with ``h`` a Lipschitz head on the encoder
trunk, so it is bounded and Lipschitz too. The decoder ends in a sigmoid (Lipschitz 1/4).

The constants that certify are *measured*, not assumed: :meth:`LipschitzVAE.lipschitz_constants`
multiplies the exact spectral norms (SVD) of the effective weights, which bounds the Lipschitz
constant of each path whatever the normalisation converged to. The defense records them in the
checkpoint sidecar.

Certificate (:func:`certified_reconstruction_bound`): the attacks differentiate the mean path
``f(mu(x))``; for any ``||d||_2 <= lambda``, ``||f(mu(x + d)) - f(mu(x))||_2 <= M_f M_mu lambda`` and
``||mu(x + d) - mu(x)||_2 <= M_mu lambda``. This is the deterministic, mean-path form of the
paper's Lipschitz margin (its theorem also covers the sampled reconstruction, through the std
network's constant, which is recorded as well); it bounds the maximum-damage attack loss (eq. 13)
that the audit measures, so the two can be put side by side.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AerobustError
from ..registry import register_architecture, register_defense
from .base import Option
from .variational import VAEDefense

CONSTRAINTS = ("spectral", "bjorck")
_BJORCK_ITERATIONS = 15


def group_sort(values: torch.Tensor) -> torch.Tensor:
    """GroupSort with groups of two (MaxMin): each consecutive pair of features is sorted."""
    pairs = values.unflatten(-1, (-1, 2))
    return torch.stack([pairs.max(dim=-1).values, pairs.min(dim=-1).values], dim=-1).flatten(-2)


def _bjorck(weight: torch.Tensor, iterations: int) -> torch.Tensor:
    """Björck-Bowie orthonormalisation, started at spectral norm <= 1 (scaled by sqrt(||W||_1 ||W||_inf),
    an upper bound of the spectral norm that is closer to it than the Frobenius norm).

    Uses the Gram matrix of the smaller side, so the cost is that of a (small x small) product.
    """
    tall = weight.shape[0] > weight.shape[1]
    w = weight.T if tall else weight
    bound = (w.abs().sum(dim=0).max() * w.abs().sum(dim=1).max()).sqrt()
    w = w / bound.clamp_min(1e-12)
    for _ in range(iterations):
        w = 1.5 * w - 0.5 * (w @ w.T) @ w
    return w.T if tall else w


class LipschitzLinear(nn.Linear):
    """A linear layer whose effective weight has spectral norm about ``scale`` (<= scale at convergence)."""

    def __init__(self, in_features: int, out_features: int, *, constraint: str = "spectral", scale: float = 1.0):
        super().__init__(in_features, out_features)
        if constraint not in CONSTRAINTS:
            raise AerobustError(f"unknown Lipschitz constraint '{constraint}'; use one of {', '.join(CONSTRAINTS)}")
        self.constraint = constraint
        self.scale = float(scale)
        # Power-iteration state for the spectral variant (saved with the weights: eval is deterministic).
        self.register_buffer("left_singular", F.normalize(torch.randn(out_features), dim=0))

    def effective_weight(self) -> torch.Tensor:
        """The constrained weight; in training mode one power-iteration step first (the forward pass's)."""
        if self.constraint == "spectral" and self.training:
            with torch.no_grad():
                right = F.normalize(self.weight.T @ self.left_singular, dim=0)
                self.left_singular.copy_(F.normalize(self.weight @ right, dim=0))
        return self._constrained_weight()

    def _constrained_weight(self) -> torch.Tensor:
        """The constrained weight from the current power-iteration state, which it never changes."""
        if self.constraint == "bjorck":
            return self.scale * _bjorck(self.weight, _BJORCK_ITERATIONS)
        sigma = (self.weight.T @ self.left_singular).norm().clamp_min(1e-12)
        return self.scale * self.weight / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def spectral_norm(self) -> float:
        """Exact largest singular value of the effective weight (what the certificate uses).

        Reading it changes nothing: exporting a checkpoint (which records the constants) in the middle
        of training must leave the run exactly where an uninterrupted one is, so a resume is bit-identical.
        """
        with torch.no_grad():
            return float(torch.linalg.matrix_norm(self._constrained_weight().detach().double(), ord=2))


def _lipschitz_stack(widths: Sequence[int], constraint: str, last_scale: float) -> nn.ModuleList:
    layers = [LipschitzLinear(a, b, constraint=constraint) for a, b in zip(widths[:-2], widths[1:-1])]
    layers.append(LipschitzLinear(widths[-2], widths[-1], constraint=constraint, scale=last_scale))
    return nn.ModuleList(layers)


def _run_stack(layers: nn.ModuleList, x: torch.Tensor, activate_last: bool = False) -> torch.Tensor:
    for index, layer in enumerate(layers):
        x = layer(x)
        if index < len(layers) - 1 or activate_last:
            x = group_sort(x)
    return x


def _product(layers: nn.ModuleList) -> float:
    result = 1.0
    for layer in layers:
        result *= layer.spectral_norm()
    return result


class LipschitzVAE(nn.Module):
    """MLP VAE with spectrally bounded layers and GroupSort activations; ``encode`` returns (mu, logvar)."""

    def __init__(self, input_shape: Sequence[int] = (1, 32, 32), latent_dim: int = 10,
                 hidden: Sequence[int] = (200, 200, 200, 200), encoder_lipschitz: float = 1.0,
                 decoder_lipschitz: float = 8.0, sigma_min: float = 0.01, sigma_max: float = 1.0,
                 constraint: str = "spectral"):
        super().__init__()
        if any(int(h) % 2 for h in hidden):
            raise AerobustError(f"GroupSort pairs features: every hidden width must be even; got {list(hidden)}")
        if not (encoder_lipschitz > 0 and decoder_lipschitz > 0 and 0 < sigma_min < sigma_max):
            raise AerobustError("the Lipschitz constants must be positive and 0 < sigma_min < sigma_max")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.latent_dim = int(latent_dim)
        self.variational = True
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        pixels = int(torch.tensor(self.input_shape).prod())
        hidden = [int(h) for h in hidden]
        self.encoder_trunk = _lipschitz_stack([pixels, *hidden], constraint, 1.0)
        self.mean_head = LipschitzLinear(hidden[-1], latent_dim, constraint=constraint, scale=encoder_lipschitz)
        self.std_head = LipschitzLinear(hidden[-1], latent_dim, constraint=constraint)
        self.decoder_layers = _lipschitz_stack([latent_dim, *reversed(hidden), pixels], constraint,
                                               decoder_lipschitz)

    def encode(self, x: torch.Tensor):
        features = _run_stack(self.encoder_trunk, x.flatten(1), activate_last=True)
        mu = self.mean_head(features)
        sigma = self.sigma_min + (self.sigma_max - self.sigma_min) * torch.sigmoid(self.std_head(features))
        return mu, 2 * sigma.log()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(_run_stack(self.decoder_layers, z)).unflatten(1, self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def lipschitz_constants(self) -> dict[str, float]:
        """Upper bounds (L2 -> L2) from the exact spectral norms of the effective weights.

        ``mean``: x -> mu; ``std``: x -> sigma (the sigmoid contributes 1/4 of the sigma range);
        ``decoder``: z -> reconstruction (sigmoid output, 1/4); ``reconstruction``: their product on the
        mean path.
        """
        trunk = _product(self.encoder_trunk)
        mean = trunk * self.mean_head.spectral_norm()
        std = trunk * self.std_head.spectral_norm() * (self.sigma_max - self.sigma_min) / 4
        decoder = _product(self.decoder_layers) / 4
        return {"mean": mean, "std": std, "decoder": decoder, "reconstruction": mean * decoder}


def certified_reconstruction_bound(lam: float | torch.Tensor, mean_lipschitz: float, decoder_lipschitz: float
                                   ) -> float | torch.Tensor:
    """Largest possible ``||f(mu(x + d)) - f(mu(x))||_2`` over ``||d||_2 <= lam``: ``M_f M_mu lam``."""
    if mean_lipschitz < 0 or decoder_lipschitz < 0:
        raise AerobustError("Lipschitz constants are non-negative")
    return decoder_lipschitz * mean_lipschitz * lam


def certified_radius(allowed_change: float, mean_lipschitz: float, decoder_lipschitz: float) -> float:
    """Smallest input perturbation (L2) that can move the mean-path reconstruction by ``allowed_change``."""
    product = mean_lipschitz * decoder_lipschitz
    return float("inf") if product == 0 else allowed_change / product


@register_architecture("mlp-vae-lipschitz-32")
def mlp_lipschitz_vae_32(**kwargs) -> LipschitzVAE:
    """LipschitzVAE MLP (1024-200x4-latent, GroupSort, spectrally bounded layers; Barrett et al.)."""
    return LipschitzVAE(**kwargs)


def lipschitz_module(model) -> LipschitzVAE | None:
    """The LipschitzVAE inside an adapter (or the module itself), else None."""
    return next((m for m in model.modules() if isinstance(m, LipschitzVAE)), None)


@register_defense("lipschitz-vae")
class LipschitzVAEDefense(VAEDefense):
    """LipschitzVAE (Barrett et al.): the VAE objective on a Lipschitz-bounded encoder/decoder."""

    name = "lipschitz-vae"
    architecture = "mlp-vae-lipschitz-32"
    options = {"beta": Option(float, 1.0, "weight of the KL term")}

    def check_model(self, model):
        super().check_model(model)
        if lipschitz_module(model) is None:
            raise AerobustError(f"defense '{self.name}' needs a Lipschitz-bounded architecture: use "
                                f"--arch {self.architecture} (or omit --arch)")

    def setup(self, model, *, dataset_size, batch_size, generator):
        super().setup(model, dataset_size=dataset_size, batch_size=batch_size, generator=generator)
        self.module = lipschitz_module(model)

    def describe(self):
        constants = self.module.lipschitz_constants()
        return {**super().describe(), "lipschitz_constants": constants,
                "certificate": "||f(mu(x+d)) - f(mu(x))||_2 <= lipschitz_constants.reconstruction * ||d||_2 "
                               "(exact spectral norms of the effective weights; GroupSort and the sigmoids "
                               "are 1- and 1/4-Lipschitz)"}
