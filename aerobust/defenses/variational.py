"""Variational baselines: VAE, beta-VAE and beta-TCVAE with a Bernoulli likelihood and an N(0, I) prior."""
from __future__ import annotations

import torch

from .. import losses as L
from ..distributed import batch_random, gather_rows
from ..errors import AerobustError
from ..registry import register_defense
from .base import Defense, Option


def reparameterized(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # batch_random: under data-parallel training, the noise one process draws for these rows.
    noise = batch_random(torch.randn, mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + noise * (0.5 * logvar).exp()


@register_defense("vae")
class VAEDefense(Defense):
    """VAE: Bernoulli reconstruction (BCE summed over pixels) + beta * KL to N(0, I), beta = 1."""

    name = "vae"
    variational = True
    architecture = "mlp-vae-32"
    options = {"beta": Option(float, 1.0, "weight of the KL term")}

    def validate(self):
        if self.config["beta"] < 0:
            raise AerobustError(f"beta must be >= 0; got {self.config['beta']}")

    def losses(self, model, x, generator):
        mu, logvar = model.posterior(x)
        rec = L.bernoulli_reconstruction_loss(model.decode(reparameterized(mu, logvar, generator)), x)
        kl = L.gaussian_kl(mu, logvar)
        return {"rec": rec, "kl": kl, "total": rec + self.config["beta"] * kl}

    def sample_codes(self, n, generator=None):
        device = generator.device if generator is not None else "cpu"
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def setup(self, model, *, dataset_size, batch_size, generator):
        super().setup(model, dataset_size=dataset_size, batch_size=batch_size, generator=generator)
        self.latent_dim = model.latent_dim


@register_defense("beta-vae")
class BetaVAEDefense(VAEDefense):
    """beta-VAE (Higgins et al.): the VAE objective with the KL term weighted by beta = 4."""

    name = "beta-vae"
    options = {"beta": Option(float, 4.0, "weight of the KL term")}


@register_defense("beta-tcvae")
class BetaTCVAEDefense(VAEDefense):
    """beta-TCVAE (Chen et al.): KL split into MI + beta * total correlation + dimension-wise KL, beta = 6."""

    name = "beta-tcvae"
    options = {"beta": Option(float, 6.0, "weight of the total-correlation term"),
               "mi_weight": Option(float, 1.0, "weight of the index-code mutual information"),
               "dim_kl_weight": Option(float, 1.0, "weight of the dimension-wise KL")}

    def setup(self, model, *, dataset_size, batch_size, generator):
        super().setup(model, dataset_size=dataset_size, batch_size=batch_size, generator=generator)
        self.dataset_size = dataset_size

    def losses(self, model, x, generator):
        mu, logvar = model.posterior(x)
        z = reparameterized(mu, logvar, generator)
        rec = L.bernoulli_reconstruction_loss(model.decode(z), x)
        # Minibatch estimates of q(z) over the whole global batch under data-parallel training.
        parts = L.beta_tc_decomposition(gather_rows(z), gather_rows(mu), gather_rows(logvar), self.dataset_size)
        c = self.config
        total = (rec + c["mi_weight"] * parts["mutual_information"] + c["beta"] * parts["total_correlation"]
                 + c["dim_kl_weight"] * parts["dimension_kl"])
        return {"rec": rec, **parts, "total": total}
