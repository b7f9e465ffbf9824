"""The training losses of the paper's Sec. 3 and of the VAE baselines, one function each.

Equation numbers refer to the reference paper. Where the paper is ambiguous the choice is a keyword
with a documented default:

* eq. 7 ``ks_mode``: ``"concat"`` (default, the authors' code) applies eq. 4 to the concatenation
  ``[z; z_adv]``; ``"half"`` averages eq. 4 over ``z`` and ``z_adv``.
* eq. 8 ``cross_block``: ``"penalized"`` (the function default, eq. 8 and eq. 10 as written) pulls the
  clean/adversarial cross-covariance to its target, 0 under eq. 8, which asks adversarial codes to be
  as far from their clean codes as independent prior draws (anti-robust); ``"free"`` leaves it out of
  the penalty. The ``augmented`` defense defaults to ``"free"`` (see aerobust.defenses.gmm).
* eq. 9 read literally compares two empirical CDFs at their own sorted points, which is identically
  zero; :func:`two_point_ks_loss` uses the working form of the authors' code, the GMM marginal CDF
  at the sorted ``z`` versus at the sorted ``z_adv``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .distributed import batch_random
from .errors import AerobustError
from .priors import GMMPrior

KS_MODES = ("concat", "half")
CROSS_BLOCKS = ("penalized", "free")


# -- eq. 4, 5: the GMM-DAE regularizers ------------------------------------------------------------
def empirical_cdf_levels(n: int, like: torch.Tensor) -> torch.Tensor:
    """(n, 1) column ``k/n``, k = 1..n: the empirical CDF at the k-th smallest of n samples."""
    return torch.arange(1, n + 1, device=like.device, dtype=like.dtype).div_(n).unsqueeze(1)


def ks_loss(z: torch.Tensor, prior: GMMPrior) -> torch.Tensor:
    """eq. 4: mean over dimensions of the MSE between empirical and GMM marginal CDFs at the sorted codes."""
    sorted_codes = z.sort(dim=0).values
    return (prior.marginal_cdf(sorted_codes) - empirical_cdf_levels(len(z), z)).pow(2).mean()


def covariance(z: torch.Tensor) -> torch.Tensor:
    """Biased (1/N) empirical covariance of the rows of ``z``."""
    centered = z - z.mean(dim=0)
    return centered.T @ centered / len(z)


def covariance_loss(z: torch.Tensor, prior: GMMPrior) -> torch.Tensor:
    """eq. 5: mean squared difference between the empirical covariance and Sigma_GMM."""
    target = prior.covariance().to(device=z.device, dtype=z.dtype)
    return (covariance(z) - target).pow(2).mean()


# -- eq. 7-10: adversarial extensions ----------------------------------------------------------------
def augmented_ks_loss(z: torch.Tensor, z_adv: torch.Tensor, prior: GMMPrior, ks_mode: str = "concat"
                      ) -> torch.Tensor:
    """eq. 7: clean and adversarial codes both regularized towards the prior marginals."""
    if ks_mode == "concat":
        return ks_loss(torch.cat([z, z_adv]), prior)
    if ks_mode == "half":
        return 0.5 * ks_loss(z, prior) + 0.5 * ks_loss(z_adv, prior)
    raise AerobustError(f"unknown ks_mode '{ks_mode}'; use one of {', '.join(KS_MODES)}")


def two_point_ks_loss(z: torch.Tensor, z_adv: torch.Tensor, prior: GMMPrior) -> torch.Tensor:
    """eq. 9, second term (working form): MSE between F_GMM at the sorted z and at the sorted z_adv."""
    cdf_clean = prior.marginal_cdf(z.sort(dim=0).values)
    cdf_adv = prior.marginal_cdf(z_adv.sort(dim=0).values)
    return (cdf_clean - cdf_adv).pow(2).mean()


def coupled_ks_loss(z: torch.Tensor, z_adv: torch.Tensor, prior: GMMPrior, ks_mode: str = "concat"
                    ) -> torch.Tensor:
    """eq. 9: 2/3 of the augmented KS loss plus 1/3 of the two-point KS loss."""
    return (2 / 3) * augmented_ks_loss(z, z_adv, prior, ks_mode) + (1 / 3) * two_point_ks_loss(z, z_adv, prior)


def joint_covariance_target(prior: GMMPrior, coupling: float) -> torch.Tensor:
    """eq. 10 target ``[[S, a S], [a S, S]]`` for S = Sigma_GMM; coupling 0 gives eq. 8's target."""
    if not -1 <= coupling <= 1:
        raise AerobustError(f"the coupling must lie in [-1, 1]; got {coupling}")
    sigma = prior.covariance()
    return torch.cat([torch.cat([sigma, coupling * sigma], 1), torch.cat([coupling * sigma, sigma], 1)], 0)


def joint_covariance_loss(z: torch.Tensor, z_adv: torch.Tensor, prior: GMMPrior, coupling: float = 0.0,
                          cross_block: str = "penalized") -> torch.Tensor:
    """eq. 8 (``coupling=0``) and eq. 10: covariance of ``[z, z_adv]`` against the 2D x 2D target.

    ``cross_block="free"`` drops the two off-diagonal blocks from the penalty (still divided by 4 D^2,
    so the diagonal blocks weigh the same as under eq. 8).
    """
    if cross_block not in CROSS_BLOCKS:
        raise AerobustError(f"unknown cross_block '{cross_block}'; use one of {', '.join(CROSS_BLOCKS)}")
    target = joint_covariance_target(prior, coupling).to(device=z.device, dtype=z.dtype)
    squared = (covariance(torch.cat([z, z_adv], dim=1)) - target).pow(2)
    if cross_block == "free":
        d = z.shape[1]
        return (squared[:d, :d].sum() + squared[d:, d:].sum()) / squared.numel()
    return squared.mean()


# -- eq. 6 and the reconstruction -----------------------------------------------------------------
def fgsm_latent(encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, z_clean: torch.Tensor,
                eps: float = 0.3, step: float = 0.375, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """eq. 6: one signed gradient step from a uniform start in the L-inf ball, maximizing ||g(x+d) - g(x)||.

    ``z_clean`` is g(x) (reused from the training pass, treated as a constant). The result lies in
    the eps ball around ``x`` and in [0, 1]; it carries no graph.
    """
    # batch_random: under data-parallel training, the same start as one process draws for this image.
    start = (batch_random(torch.rand, x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    start.requires_grad_(True)
    # The squared norm has the same per-sample gradient sign as the norm and no sqrt singularity at 0.
    distance = (encode(x + start) - z_clean.detach()).pow(2).sum()
    (gradient,) = torch.autograd.grad(distance, start)
    delta = (start.detach() + step * gradient.sign()).clamp_(-eps, eps)
    return (x + delta).clamp_(0, 1)


def noisy_reconstruction_loss(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                              x: torch.Tensor, noise_std: float = 0.1,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between ``x`` and the decoding of ``z + N(0, noise_std^2 I)`` (Sec. 3.2's latent noise)."""
    if noise_std > 0:
        z = z + noise_std * batch_random(torch.randn, z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return (decode(z) - x).pow(2).mean()


# -- loss weights (eq. 11) -----------------------------------------------------------------------------
def coupled_prior_pairs(prior: GMMPrior, n: int, coupling: float = 0.0,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs (z, z_other) whose joint covariance is eq. 10's target and whose marginals are the prior.

    Row by row, ``z_other`` repeats ``z`` with probability ``coupling`` and is an independent prior draw
    otherwise, so Cov(z, z_other) = coupling * Sigma_GMM exactly. ``coupling=0`` draws exactly what two
    independent calls of ``prior.sample`` draw (the same generator stream).
    """
    if not 0 <= coupling <= 1:
        raise AerobustError(f"the pair coupling is a probability in [0, 1]; got {coupling}")
    z, _ = prior.sample(n, generator)
    z_other, _ = prior.sample(n, generator)
    if coupling > 0:
        repeat = torch.rand(n, 1, generator=generator, device=z.device) < coupling
        z_other = torch.where(repeat, z, z_other)
    return z, z_other


def estimate_loss_weights(terms: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
                          prior: GMMPrior, batch_size: int, n_batches: int = 100,
                          generator: torch.Generator | None = None, coupling: float = 0.0) -> dict[str, float]:
    """1 / E[term] for each term, the mean taken over ``n_batches`` pairs of prior batches.

    Each term is called as ``term(z, z_other)`` with two batches of ``batch_size`` codes from
    :func:`coupled_prior_pairs`: independent batches by default (the authors' estimate), or pairs
    coupled like eq. 10's target with ``coupling`` = alpha.
    """
    totals = dict.fromkeys(terms, 0.0)
    with torch.no_grad():
        for _ in range(n_batches):
            z, z_other = coupled_prior_pairs(prior, batch_size, coupling, generator)
            for name, term in terms.items():
                totals[name] += float(term(z, z_other))
    weights = {}
    for name, total in totals.items():
        mean = total / n_batches
        if not math.isfinite(mean) or mean <= 0:
            raise AerobustError(f"cannot weight loss term '{name}': its mean under the prior is {mean}")
        weights[name] = 1.0 / mean
    return weights


# -- VAE family ------------------------------------------------------------------------------------------
def bernoulli_reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed over pixels, mean over the batch (the usual MNIST VAE likelihood)."""
    return torch.nn.functional.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x, reduction="sum") / len(x)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over dimensions, mean over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1).mean()


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def beta_tc_decomposition(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int
                          ) -> dict[str, torch.Tensor]:
    """Chen et al.'s split of the KL term into index-code MI, total correlation and dimension-wise KL.

    q(z) and its marginals use minibatch-weighted sampling over the batch; each term is a batch mean.
    """
    n = len(z)
    pairwise = _log_normal(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # (N, N, D)
    log_norm = math.log(n * dataset_size)
    log_qz = torch.logsumexp(pairwise.sum(dim=2), dim=1) - log_norm
    log_prod_marginals = (torch.logsumexp(pairwise, dim=1) - log_norm).sum(dim=1)
    log_qz_given_x = _log_normal(z, mu, logvar).sum(dim=1)
    log_pz = _log_normal(z, torch.zeros_like(z), torch.zeros_like(z)).sum(dim=1)
    return {
        "mutual_information": (log_qz_given_x - log_qz).mean(),
        "total_correlation": (log_qz - log_prod_marginals).mean(),
        "dimension_kl": (log_prod_marginals - log_pz).mean(),
    }


# -- smooth encoders and the autoencoding VAE ------------------------------------------------------------
def gaussian_w2_squared(mu_a: torch.Tensor, logvar_a: torch.Tensor, mu_b: torch.Tensor, logvar_b: torch.Tensor
                        ) -> torch.Tensor:
    """Per-sample squared 2-Wasserstein distance between diagonal Gaussians: ||mu_a - mu_b||^2 + ||s_a - s_b||^2."""
    std_a, std_b = (0.5 * logvar_a).exp(), (0.5 * logvar_b).exp()
    return (mu_a - mu_b).pow(2).sum(dim=1) + (std_a - std_b).pow(2).sum(dim=1)


def gaussian_negative_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """-log N(z; mu, diag(exp(logvar))) summed over dimensions, mean over the batch."""
    return -_log_normal(z, mu, logvar).sum(dim=1).mean()
