"""The K-mode Gaussian mixture prior of the GMM-regularized deterministic autoencoders.

All modes have equal weight and the isotropic standard deviation ``std``. Centers:

* ``onehot`` (the reference, needs K <= latent_dim): ``scale * e_k``, pairwise distance ``scale * sqrt(2)``;
* ``spread`` (any K): fixed quasi-random directions on the sphere, scaled until the closest pair of
  centers is ``scale * sqrt(2)`` apart, i.e. as separated as the one-hot layout (evenly spaced
  points with that spacing when the latent space is one-dimensional).

eq. 3 of the paper writes the covariance entry where the standard deviation belongs; the code here
uses the standard deviation (the two agree for the reference std of 1).
"""
from __future__ import annotations

import math

import torch

from .errors import AerobustError

CENTER_LAYOUTS = ("auto", "onehot", "spread")
_SPREAD_SEED = 7  # fixed: the same K, D always give the same centers, so checkpoints stay reproducible


def _spread_directions(n_modes: int, latent_dim: int) -> torch.Tensor:
    engine = torch.quasirandom.SobolEngine(latent_dim, scramble=True, seed=_SPREAD_SEED)
    uniform = engine.draw(n_modes, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    directions = math.sqrt(2.0) * torch.erfinv(2 * uniform - 1)  # uniform -> standard normal
    return directions / directions.norm(dim=1, keepdim=True)


def gmm_centers(latent_dim: int, n_modes: int | None = None, *, scale: float = 10.0,
                layout: str = "auto") -> torch.Tensor:
    """``(K, D)`` float32 centers; ``auto`` is ``onehot`` when K <= D and ``spread`` otherwise."""
    n_modes = latent_dim if n_modes is None else int(n_modes)
    if latent_dim < 1 or n_modes < 1:
        raise AerobustError(f"the prior needs latent_dim >= 1 and at least one mode; got {latent_dim}, {n_modes}")
    if scale <= 0:
        raise AerobustError(f"the prior's center scale must be positive; got {scale}")
    if layout not in CENTER_LAYOUTS:
        raise AerobustError(f"unknown center layout '{layout}'; use one of {', '.join(CENTER_LAYOUTS)}")
    if layout == "auto":
        layout = "onehot" if n_modes <= latent_dim else "spread"
    if layout == "onehot":
        if n_modes > latent_dim:
            raise AerobustError(f"one-hot centers need n_modes <= latent_dim ({n_modes} > {latent_dim}); "
                                "use the spread layout")
        return scale * torch.eye(latent_dim)[:n_modes]
    if n_modes == 1:
        return torch.zeros(1, latent_dim)
    if latent_dim == 1:  # a line has only two directions: space the centers evenly instead
        return (scale * math.sqrt(2.0) * (torch.arange(n_modes) - (n_modes - 1) / 2)).unsqueeze(1)
    directions = _spread_directions(n_modes, latent_dim)
    closest = torch.pdist(directions).min()
    if closest < 1e-6:
        raise AerobustError(f"cannot place {n_modes} distinct centers in {latent_dim} dimensions")
    return (directions * (scale * math.sqrt(2.0) / closest)).float()


class GMMPrior:
    """Equal-weight isotropic Gaussian mixture: sampling, marginal CDF, covariance."""

    def __init__(self, centers: torch.Tensor, std: float = 1.0):
        if centers.dim() != 2:
            raise AerobustError(f"GMM centers must be a (K, D) matrix; got shape {tuple(centers.shape)}")
        if std <= 0:
            raise AerobustError(f"the prior's standard deviation must be positive; got {std}")
        self.centers = centers
        self.std = float(std)

    @classmethod
    def build(cls, latent_dim: int, n_modes: int | None = None, *, scale: float = 10.0, std: float = 1.0,
              layout: str = "auto") -> "GMMPrior":
        return cls(gmm_centers(latent_dim, n_modes, scale=scale, layout=layout), std)

    @property
    def n_modes(self) -> int:
        return self.centers.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.centers.shape[1]

    def to(self, device: torch.device | str) -> "GMMPrior":
        return GMMPrior(self.centers.to(device), self.std)

    def describe(self) -> dict:
        return {"n_modes": self.n_modes, "latent_dim": self.latent_dim, "std": self.std,
                "centers": self.centers.cpu().tolist()}

    @classmethod
    def from_description(cls, description: dict) -> "GMMPrior":
        """Inverse of :meth:`describe` (as stored in checkpoint sidecars)."""
        return cls(torch.tensor(description["centers"], dtype=torch.float32), description["std"])

    def distribution(self) -> torch.distributions.Distribution:
        """The mixture as a torch distribution (for ``log_prob``), on the centers' device."""
        components = torch.distributions.Independent(
            torch.distributions.Normal(self.centers, torch.full_like(self.centers, self.std)), 1)
        mixture = torch.distributions.Categorical(logits=torch.zeros(self.n_modes, device=self.centers.device))
        return torch.distributions.MixtureSameFamily(mixture, components)

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` codes and their mode indices; drawn on the generator's device (the centers' if none)."""
        device = generator.device if generator is not None else self.centers.device
        modes = torch.randint(self.n_modes, (n,), generator=generator, device=device)
        noise = torch.randn(n, self.latent_dim, generator=generator, device=device)
        centers = self.centers.to(device)
        return centers[modes] + self.std * noise, modes

    def sample_mode(self, mode: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = generator.device if generator is not None else self.centers.device
        noise = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.centers[mode].to(device) + self.std * noise

    # -- distribution functions ------------------------------------------------------------
    def marginal_cdf(self, z: torch.Tensor) -> torch.Tensor:
        """eq. 3: per-dimension CDF of the mixture, the mean over modes of the normal CDF; ``(N, D)``."""
        centers = self.centers.to(device=z.device, dtype=z.dtype)
        standardized = (z.unsqueeze(1) - centers) / self.std  # (N, K, D)
        return (0.5 * (1 + torch.erf(standardized * (1 / math.sqrt(2.0))))).mean(dim=1)

    def within_covariance(self) -> torch.Tensor:
        return self.std ** 2 * torch.eye(self.latent_dim, device=self.centers.device)

    def between_covariance(self) -> torch.Tensor:
        centered = self.centers - self.centers.mean(dim=0)
        return centered.T @ centered / self.n_modes

    def covariance(self) -> torch.Tensor:
        """Sigma_GMM of eq. 5: within-component plus between-centers covariance (law of total variance)."""
        return self.within_covariance() + self.between_covariance()

    def mean(self) -> torch.Tensor:
        return self.centers.mean(dim=0)
