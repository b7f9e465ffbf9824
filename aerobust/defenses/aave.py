"""The autoencoding VAE (AVAE, "AAVE" in the reference paper; Cemgil et al., NeurIPS 2020).

A nominal VAE need not encode its own decodings back to the codes they came from. AVAE adds
self-consistency: for z ~ q(z|x) and the decoding x~ = f(z), the encoder should place z at high
density, so the loss adds

    consistency_weight * -log q(z | x~)

to the VAE objective. Choices (recorded in the sidecar): x~ is the decoder's mean image, not a
Bernoulli sample, and carries no gradient (in the paper x~ is a sample, through which no gradient
flows either); z is held fixed in the consistency term, so it trains the encoder at x~ rather than
moving z. The paper also applies the term to codes drawn from the prior (weighted by
``prior_consistency_weight``; 0 leaves that path out).
"""
from __future__ import annotations

import torch

from .. import losses as L
from ..distributed import batch_random
from ..errors import AerobustError
from ..registry import register_defense
from .base import Option
from .variational import VAEDefense, reparameterized


def consistency_loss(model, z: torch.Tensor) -> torch.Tensor:
    """-log q(z | f(z)) summed over dimensions, batch mean; the decoding and z carry no gradient."""
    z = z.detach()
    with torch.no_grad():
        decoded = model.decode(z)
    mu, logvar = model.posterior(decoded)
    return L.gaussian_negative_log_density(z, mu, logvar)


@register_defense("aave")
class AutoencodingVAEDefense(VAEDefense):
    """Autoencoding VAE (Cemgil et al. 2020): VAE + -log q(z | f(z)) self-consistency of encoder and decoder."""

    name = "aave"
    options = {
        "beta": Option(float, 1.0, "weight of the KL term"),
        "consistency_weight": Option(float, 1.0, "weight of -log q(z | f(z))"),
        "prior_consistency_weight": Option(float, 1.0, "weight of -log q(z | f(z)) for z drawn from N(0, I)"),
    }

    def validate(self):
        super().validate()
        if self.config["consistency_weight"] < 0 or self.config["prior_consistency_weight"] < 0:
            raise AerobustError("consistency_weight and prior_consistency_weight must be >= 0")

    def losses(self, model, x, generator):
        c = self.config
        mu, logvar = model.posterior(x)
        z = reparameterized(mu, logvar, generator)
        rec = L.bernoulli_reconstruction_loss(model.decode(z), x)
        kl = L.gaussian_kl(mu, logvar)
        # batch_random: under data-parallel training, the same prior codes one process draws for these rows.
        prior_codes = batch_random(torch.randn, z.shape, generator=generator, device=z.device, dtype=z.dtype)
        consistency, consistency_prior = consistency_loss(model, z), consistency_loss(model, prior_codes)
        total = (rec + c["beta"] * kl + c["consistency_weight"] * consistency
                 + c["prior_consistency_weight"] * consistency_prior)
        return {"rec": rec, "kl": kl, "consistency": consistency, "consistency_prior": consistency_prior,
                "total": total}
