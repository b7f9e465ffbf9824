"""The prior, the Sec. 3 losses, the FGSM adversary and the Frechet distance against independent math."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats
import torch
from hypothesis import given, settings, strategies as st

from aerobust import losses as L
from aerobust.adapter import wrap
from aerobust.architectures import MLPAutoencoder
from aerobust.errors import AerobustError
from aerobust.fidelity import frechet_distance, frechet_distance_of_features
from aerobust.priors import GMMPrior, gmm_centers
from aerobust.training import train


@pytest.fixture(scope="module")
def tiny_ae(mnist_train_small):
    """A 1024-64-10 AE trained briefly on 1,000 real MNIST images (enough structure for FGSM)."""
    subset = mnist_train_small.subset(torch.randperm(len(mnist_train_small),
                                                     generator=torch.Generator().manual_seed(0))[:1000])
    result = train("ae", MLPAutoencoder(hidden=(64,)), subset, epochs=5, lr=2e-3, device="cpu", quiet=True)
    return wrap(result.model, device="cpu")


def numpy_marginal_cdf(z: np.ndarray, centers: np.ndarray, std: float) -> np.ndarray:
    """F_GMM,d(z) with scipy: mean over modes of the normal CDF, per dimension."""
    return np.mean([scipy.stats.norm.cdf(z, loc=c, scale=std) for c in centers], axis=0)


def numpy_ks(z: np.ndarray, centers: np.ndarray, std: float) -> float:
    n = len(z)
    sorted_z = np.sort(z, axis=0)
    levels = np.arange(1, n + 1)[:, None] / n
    return float(np.mean((numpy_marginal_cdf(sorted_z, centers, std) - levels) ** 2))


def expected_ks_of_exact_samples(n: int) -> float:
    """E[eq. 4] for exact prior samples: F(z_(k)) is the k-th uniform order statistic, Beta(k, n-k+1)."""
    k = np.arange(1, n + 1)
    variance = k * (n - k + 1) / ((n + 1) ** 2 * (n + 2))
    bias = k / n - k / (n + 1)
    return float(np.mean(variance + bias ** 2))


def expected_two_point_ks_of_independent_samples(n: int) -> float:
    k = np.arange(1, n + 1)
    return float(np.mean(2 * k * (n - k + 1) / ((n + 1) ** 2 * (n + 2))))


# -- prior ------------------------------------------------------------------------------------------
def test_onehot_centers_are_the_reference_ones():
    assert torch.equal(gmm_centers(10), 10 * torch.eye(10))
    assert torch.equal(gmm_centers(6, 3, scale=4.0), 4 * torch.eye(6)[:3])


def test_spread_centers_are_separated_like_onehot_and_reproducible():
    centers = gmm_centers(4, 12, scale=10.0)
    distances = torch.pdist(centers.double())
    assert distances.min() == pytest.approx(10 * np.sqrt(2), rel=1e-5)
    assert torch.equal(centers, gmm_centers(4, 12, scale=10.0))
    with pytest.raises(AerobustError, match="spread"):
        gmm_centers(4, 12, layout="onehot")


@settings(max_examples=20, deadline=None)
@given(dim=st.integers(1, 6), modes=st.integers(1, 9), std=st.floats(0.3, 3.0), seed=st.integers(0, 10_000))
def test_marginal_cdf_matches_scipy(dim, modes, std, seed):
    prior = GMMPrior.build(dim, modes, std=std, scale=5.0)
    z = torch.from_numpy(np.random.default_rng(seed).normal(0, 6, size=(17, dim)))
    expected = numpy_marginal_cdf(z.numpy(), prior.centers.double().numpy(), std)
    np.testing.assert_allclose(prior.marginal_cdf(z).numpy(), expected, atol=1e-10)


def test_prior_covariance_closed_form_and_sampled():
    k, scale, std = 10, 10.0, 1.5
    prior = GMMPrior.build(k, k, scale=scale, std=std)
    # one-hot centers s*e_k: between-covariance s^2 (I/K - 11^T/K^2)
    closed = std ** 2 * np.eye(k) + scale ** 2 * (np.eye(k) / k - np.ones((k, k)) / k ** 2)
    np.testing.assert_allclose(prior.covariance().numpy(), closed, atol=1e-5)
    samples, modes = prior.sample(200_000, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(np.cov(samples.numpy().T), closed, atol=0.25)
    np.testing.assert_allclose(np.bincount(modes.numpy(), minlength=k) / len(modes), np.full(k, 0.1), atol=0.01)


# -- eq. 4, 5 -----------------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 60), dim=st.integers(1, 5), modes=st.integers(1, 5), shift=st.floats(-5, 5),
       seed=st.integers(0, 10_000))
def test_ks_loss_matches_scipy(n, dim, modes, shift, seed):
    prior = GMMPrior.build(dim, modes, layout="spread", std=0.8)
    z = np.random.default_rng(seed).normal(shift, 3, size=(n, dim))
    got = float(L.ks_loss(torch.from_numpy(z), prior))
    assert got == pytest.approx(numpy_ks(z, prior.centers.double().numpy(), 0.8), abs=1e-10)


def test_ks_loss_small_for_prior_samples_and_large_for_shifted():
    prior = GMMPrior.build(10)
    z, _ = prior.sample(500, torch.Generator().manual_seed(1))
    on_prior = float(L.ks_loss(z, prior))
    assert on_prior < 3 * expected_ks_of_exact_samples(500)
    assert float(L.ks_loss(z + 3.0, prior)) > 30 * on_prior
    assert float(L.ks_loss(0.3 * z, prior)) > 30 * on_prior


def test_covariance_loss_matches_numpy():
    prior = GMMPrior.build(5, 3, std=0.7)
    z = np.random.default_rng(3).normal(size=(40, 5)) * [1, 2, 3, 4, 5]
    expected = np.mean((np.cov(z.T, bias=True) - prior.covariance().double().numpy()) ** 2)
    assert float(L.covariance_loss(torch.from_numpy(z), prior)) == pytest.approx(expected, rel=1e-9)


# -- eq. 7-10 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_coupled_covariance_target_blocks(alpha):
    prior = GMMPrior.build(4, 4, std=1.0)
    sigma = prior.covariance().numpy()
    target = L.joint_covariance_target(prior, alpha).numpy()
    np.testing.assert_allclose(target[:4, :4], sigma)
    np.testing.assert_allclose(target[4:, 4:], sigma)
    np.testing.assert_allclose(target[:4, 4:], alpha * sigma, atol=1e-7)
    np.testing.assert_allclose(target[4:, :4], alpha * sigma, atol=1e-7)
    eigenvalues = np.linalg.eigvalsh(target.astype(np.float64))
    assert eigenvalues.min() > -1e-5  # a valid joint covariance for |alpha| <= 1
    # E||z - z_adv||^2 under the target = 2 (1 - alpha) tr(Sigma_GMM)
    difference = np.hstack([np.eye(4), -np.eye(4)])
    assert np.trace(difference @ target @ difference.T) == pytest.approx(2 * (1 - alpha) * np.trace(sigma), abs=1e-4)
    if alpha == 1.0:
        assert np.linalg.matrix_rank(target, tol=1e-4) == 4


def test_coupling_out_of_range_is_refused():
    with pytest.raises(AerobustError, match="coupling"):
        L.joint_covariance_target(GMMPrior.build(3), 1.5)


def test_joint_covariance_loss_identities():
    prior = GMMPrior.build(6)
    z = torch.from_numpy(np.random.default_rng(4).normal(size=(50, 6)) * 3)
    single = float(L.covariance_loss(z, prior))
    # z_adv = z with coupling 1: all four blocks equal the single-code problem
    assert float(L.joint_covariance_loss(z, z, prior, 1.0)) == pytest.approx(single, rel=1e-9)
    assert float(L.joint_covariance_loss(z, z, prior, 1.0, "free")) == pytest.approx(single / 2, rel=1e-9)
    # eq. 8 (coupling 0) against numpy
    z_adv = z + torch.from_numpy(np.random.default_rng(5).normal(size=(50, 6)))
    sigma = prior.covariance().double().numpy()
    target = np.block([[sigma, np.zeros_like(sigma)], [np.zeros_like(sigma), sigma]])
    joint = np.cov(np.hstack([z.numpy(), z_adv.numpy()]).T, bias=True)
    assert float(L.joint_covariance_loss(z, z_adv, prior, 0.0)) == pytest.approx(np.mean((joint - target) ** 2))


def test_augmented_and_two_point_ks():
    prior = GMMPrior.build(3, 3)
    rng = np.random.default_rng(6)
    z, z_adv = rng.normal(2, 4, size=(30, 3)), rng.normal(0, 4, size=(30, 3))
    tz, ta = torch.from_numpy(z), torch.from_numpy(z_adv)
    centers = prior.centers.double().numpy()
    assert float(L.augmented_ks_loss(tz, ta, prior, "concat")) == pytest.approx(numpy_ks(np.vstack([z, z_adv]), centers, 1.0))
    assert float(L.augmented_ks_loss(tz, ta, prior, "half")) == pytest.approx(
        0.5 * numpy_ks(z, centers, 1.0) + 0.5 * numpy_ks(z_adv, centers, 1.0))
    expected_pair = np.mean((numpy_marginal_cdf(np.sort(z, 0), centers, 1.0)
                             - numpy_marginal_cdf(np.sort(z_adv, 0), centers, 1.0)) ** 2)
    assert float(L.two_point_ks_loss(tz, ta, prior)) == pytest.approx(expected_pair)
    # the two-point term compares distributions: a permutation of the batch is a perfect match
    assert float(L.two_point_ks_loss(tz, tz[torch.randperm(30)], prior)) == 0.0
    mixed = L.coupled_ks_loss(tz, ta, prior)
    assert float(mixed) == pytest.approx(2 / 3 * numpy_ks(np.vstack([z, z_adv]), centers, 1.0) + expected_pair / 3)


def test_loss_weights_are_inverse_expectations_under_the_prior():
    prior = GMMPrior.build(10)
    n = 100
    terms = {"ks": lambda z, _: L.ks_loss(z, prior),
             "ks_concat": lambda z, za: L.augmented_ks_loss(z, za, prior, "concat"),
             "ks_pair": lambda z, za: L.two_point_ks_loss(z, za, prior),
             "cv": lambda z, _: L.covariance_loss(z, prior)}
    weights = L.estimate_loss_weights(terms, prior, n, 100, torch.Generator().manual_seed(0))
    assert weights["ks"] == pytest.approx(1 / expected_ks_of_exact_samples(n), rel=0.1)
    assert weights["ks_concat"] == pytest.approx(1 / expected_ks_of_exact_samples(2 * n), rel=0.1)
    assert weights["ks_pair"] == pytest.approx(1 / expected_two_point_ks_of_independent_samples(n), rel=0.1)
    # covariance term: independent Monte-Carlo estimate with numpy on fresh prior draws
    rng = np.random.default_rng(1)
    centers, sigma = prior.centers.numpy(), prior.covariance().numpy()
    draws = [centers[rng.integers(10, size=n)] + rng.normal(size=(n, 10)) for _ in range(300)]
    mean_cv = np.mean([np.mean((np.cov(d.T, bias=True) - sigma) ** 2) for d in draws])
    assert weights["cv"] == pytest.approx(1 / mean_cv, rel=0.1)


def numpy_coupled_pairs(rng, centers: np.ndarray, n: int, coupling: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of unit-std GMM draws where the second repeats the first with probability ``coupling``."""
    def draw():
        return centers[rng.integers(len(centers), size=n)] + rng.normal(size=(n, centers.shape[1]))
    z, other = draw(), draw()
    repeat = rng.random(n) < coupling
    other[repeat] = z[repeat]
    return z, other


def test_coupled_prior_pairs_have_prior_marginals_and_the_eq10_cross_covariance():
    prior = GMMPrior.build(4, 4, std=1.0)
    z, z_other = L.coupled_prior_pairs(prior, 20000, 0.9, torch.Generator().manual_seed(0))
    joint = np.cov(torch.cat([z, z_other], 1).double().numpy().T, bias=True)
    sigma = prior.covariance().double().numpy()
    np.testing.assert_allclose(joint[:4, 4:], 0.9 * sigma, atol=0.25)  # entries of Sigma are up to 10
    np.testing.assert_allclose(joint[4:, 4:], sigma, atol=0.25)
    assert float((z == z_other).all(dim=1).float().mean()) == pytest.approx(0.9, abs=0.01)
    centers = prior.centers.double().numpy()
    for d in range(4):
        cdf = lambda v, c=centers[:, d]: numpy_marginal_cdf(v, c, 1.0)
        assert scipy.stats.kstest(z_other[:, d].double().numpy(), cdf).pvalue > 1e-3
    # coupling 0 is exactly two independent prior batches from the same generator stream
    generator = torch.Generator().manual_seed(1)
    a, _ = prior.sample(50, generator)
    b, _ = prior.sample(50, generator)
    pair = L.coupled_prior_pairs(prior, 50, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(pair[0], a) and torch.equal(pair[1], b)
    with pytest.raises(AerobustError, match="probability"):
        L.coupled_prior_pairs(prior, 5, 1.5)


@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_covariance_weight_on_coupled_pairs(alpha):
    """The eq. 10 weight estimated on coupled pairs matches numpy; independent pairs shrink it."""
    prior = GMMPrior.build(10)
    term = {"cv": lambda z, za: L.joint_covariance_loss(z, za, prior, alpha)}
    coupled = L.estimate_loss_weights(term, prior, 100, 100, torch.Generator().manual_seed(0), coupling=alpha)["cv"]
    independent = L.estimate_loss_weights(term, prior, 100, 100, torch.Generator().manual_seed(0))["cv"]
    rng = np.random.default_rng(2)
    centers = prior.centers.numpy()
    target = L.joint_covariance_target(prior, alpha).double().numpy()
    mean_cv = np.mean([np.mean((np.cov(np.hstack(numpy_coupled_pairs(rng, centers, 100, alpha)).T, bias=True)
                                - target) ** 2) for _ in range(300)])
    assert coupled == pytest.approx(1 / mean_cv, rel=0.1)
    # independent pairs miss the alpha * Sigma cross block: their mean is dominated by that mismatch
    assert coupled > (2 if alpha == 0.5 else 4) * independent


# -- eq. 6 and the reconstruction -----------------------------------------------------------------
def test_fgsm_stays_in_threat_and_moves_codes_more_than_noise(tiny_ae, mnist_test):
    x = mnist_test.images[:64]
    encode = tiny_ae.encode
    with torch.no_grad():
        z = encode(x)
    x_adv = L.fgsm_latent(encode, x, z, eps=0.3, step=0.375, generator=torch.Generator().manual_seed(0))
    assert x_adv.requires_grad is False
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    random = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 0.6 - 0.3)).clamp(0, 1)
    with torch.no_grad():
        adv_shift = (encode(x_adv) - z).norm(dim=1).mean()
        random_shift = (encode(random) - z).norm(dim=1).mean()
    assert adv_shift > 1.5 * random_shift


def test_noisy_reconstruction(tiny_ae, mnist_test):
    x = mnist_test.images[:16]
    with torch.no_grad():
        z = tiny_ae.encode(x)
        clean = L.noisy_reconstruction_loss(tiny_ae.decode, z, x, 0.0)
        assert float(clean) == pytest.approx(float(((tiny_ae.decode(z) - x) ** 2).mean()))
        a = L.noisy_reconstruction_loss(tiny_ae.decode, z, x, 0.5, torch.Generator().manual_seed(3))
        b = L.noisy_reconstruction_loss(tiny_ae.decode, z, x, 0.5, torch.Generator().manual_seed(3))
    assert float(a) == float(b) and float(a) != float(clean)


# -- VAE terms ------------------------------------------------------------------------------------------
def test_gaussian_kl_matches_torch_distributions():
    rng = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(8, 4, generator=rng), torch.randn(8, 4, generator=rng)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    expected = torch.distributions.kl_divergence(q, p).sum(1).mean()
    assert float(L.gaussian_kl(mu, logvar)) == pytest.approx(float(expected), rel=1e-5)


def test_beta_tc_terms_match_scipy():
    rng = np.random.default_rng(2)
    n, d, dataset = 12, 3, 500
    mu, logvar = rng.normal(size=(n, d)), rng.normal(scale=0.3, size=(n, d))
    z = mu + rng.normal(size=(n, d)) * np.exp(0.5 * logvar)
    log_q = scipy.stats.norm.logpdf(z[:, None, :], mu[None], np.exp(0.5 * logvar)[None])  # (i, j, d)
    log_qz = scipy.special.logsumexp(log_q.sum(2), axis=1) - np.log(n * dataset)
    log_marginals = (scipy.special.logsumexp(log_q, axis=1) - np.log(n * dataset)).sum(1)
    log_q_given_x = scipy.stats.norm.logpdf(z, mu, np.exp(0.5 * logvar)).sum(1)
    log_p = scipy.stats.norm.logpdf(z).sum(1)
    parts = L.beta_tc_decomposition(*(torch.from_numpy(a) for a in (z, mu, logvar)), dataset)
    assert float(parts["mutual_information"]) == pytest.approx(np.mean(log_q_given_x - log_qz))
    assert float(parts["total_correlation"]) == pytest.approx(np.mean(log_qz - log_marginals))
    assert float(parts["dimension_kl"]) == pytest.approx(np.mean(log_marginals - log_p))


# -- Frechet distance -----------------------------------------------------------------------------------
def scipy_frechet(mu1, c1, mu2, c2):
    cross = scipy.linalg.sqrtm(c1 @ c2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * cross))


@settings(max_examples=15, deadline=None)
@given(dim=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_frechet_distance_matches_scipy_sqrtm(dim, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    c1, c2 = a @ a.T + 0.1 * np.eye(dim), b @ b.T + 0.1 * np.eye(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    got = frechet_distance(*(torch.from_numpy(v) for v in (mu1, c1, mu2, c2)))
    assert got == pytest.approx(scipy_frechet(mu1, c1, mu2, c2), rel=1e-6, abs=1e-8)


def test_frechet_distance_closed_form_and_features():
    # diagonal Gaussians: sum (m1 - m2)^2 + sum (s1 - s2)^2 with s the standard deviations
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    got = frechet_distance(torch.tensor(m1), torch.diag(torch.tensor(s1 ** 2)), torch.tensor(m2),
                           torch.diag(torch.tensor(s2 ** 2)))
    assert got == pytest.approx(np.sum((m1 - m2) ** 2) + np.sum((s1 - s2) ** 2))
    features = torch.randn(400, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert frechet_distance_of_features(features, features) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance_of_features(features, features + 2) == pytest.approx(5 * 4, rel=1e-6)
