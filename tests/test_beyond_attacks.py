"""The field's other attacks: posterior KL (VAEs), the Jacobian direction, universal perturbations."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from aerobust.adapter import wrap
from aerobust.architectures import MLPAutoencoder
from aerobust.attacks.jacobian import top_singular_directions
from aerobust.errors import AerobustError
from aerobust.objectives import gaussian_kl, make_objective
from aerobust.registry import ATTACKS
from aerobust.threat import Threat

FAST = dict(steps=15)


def tiny_vae(seed=0):
    torch.manual_seed(seed)
    return wrap(MLPAutoencoder(input_shape=(1, 8, 8), latent_dim=4, hidden=(16,), variational=True), device="cpu")


def tiny_ae(seed=0):
    torch.manual_seed(seed)
    return wrap(MLPAutoencoder(input_shape=(1, 8, 8), latent_dim=4, hidden=(16,)), device="cpu")


def test_gaussian_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mu_p, mu_q, lv_p, lv_q = (torch.randn(6, 5, generator=generator, dtype=torch.float64) for _ in range(4))
    p = torch.distributions.Normal(mu_p, (0.5 * lv_p).exp())
    q = torch.distributions.Normal(mu_q, (0.5 * lv_q).exp())
    expected = torch.distributions.kl_divergence(p, q).sum(dim=1)
    torch.testing.assert_close(gaussian_kl(mu_p, lv_p, mu_q, lv_q), expected)
    torch.testing.assert_close(gaussian_kl(mu_p, lv_p, mu_p, lv_p), torch.zeros(6, dtype=torch.float64))


def test_kl_objectives_are_the_closed_forms_on_a_vae():
    model, x = tiny_vae(), torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    targets = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    mu_x, lv_x = model.posterior(x)
    mu_t, lv_t = model.posterior(targets)
    with torch.no_grad():
        kl = make_objective("latent-kl").bind(model, x, targets=targets).values(x)
        skl = make_objective("latent-skl").bind(model, x, targets=targets).values(x)
        max_kl = make_objective("max-kl").bind(model, x)
        torch.testing.assert_close(kl, gaussian_kl(mu_x, lv_x, mu_t, lv_t))
        torch.testing.assert_close(skl, gaussian_kl(mu_x, lv_x, mu_t, lv_t) + gaussian_kl(mu_t, lv_t, mu_x, lv_x))
        torch.testing.assert_close(max_kl.values(x), torch.zeros(4), atol=1e-6, rtol=0)
        assert bool((max_kl.values(targets) > 0).all())


@pytest.mark.parametrize("name", ["latent-kl", "latent-skl", "max-kl"])
def test_kl_attacks_run_on_a_vae_and_refuse_a_deterministic_encoder(name):
    attack = ATTACKS.create(name, **FAST)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = torch.rand(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) if attack.needs_targets else None
    result = attack.sweep(tiny_vae(), x, [0.5], 2, seed=0, targets=targets)
    stronger = result.attack_loss > result.clean_loss if attack.objective.maximize else result.attack_loss < result.clean_loss
    assert bool(stronger.all())
    with pytest.raises(AerobustError, match="deterministic"):
        attack.sweep(tiny_ae(), x, [0.5], 1, seed=0, targets=None if targets is None else targets[:1])


class _TinyEncoder(nn.Module):
    input_shape = (1, 3, 3)

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(9, 6), nn.Tanh(), nn.Linear(6, 4))
        self.out = nn.Linear(4, 9)

    def encode(self, x):
        return self.net(x)

    def decode(self, z):
        return torch.sigmoid(self.out(z)).view(-1, 1, 3, 3)


class _TanhWithoutForwardMode(torch.autograd.Function):
    """tanh as a custom function with a backward in torch ops but no jvp rule."""

    @staticmethod
    def forward(ctx, inputs):
        out = torch.tanh(inputs)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * (1 - out * out)


class _CustomFunctionEncoder(_TinyEncoder):
    def encode(self, x):
        flat = self.net[1](self.net[0](x))
        return self.net[3](_TanhWithoutForwardMode.apply(flat))


@pytest.mark.parametrize("encoder", [_TinyEncoder, _CustomFunctionEncoder])
def test_jacobian_direction_is_the_top_right_singular_vector(encoder):
    model = wrap(encoder(), device="cpu")
    x = torch.rand(5, 1, 3, 3, generator=torch.Generator().manual_seed(4))
    directions, singular = top_singular_directions(model.encode, x, 200, torch.arange(5))
    for i in range(5):
        jacobian = torch.autograd.functional.jacobian(lambda image: model.encode(image[None])[0], x[i]).reshape(4, 9)
        _, values, vh = torch.linalg.svd(jacobian)
        cosine = torch.dot(directions[i].flatten(), vh[0]).abs()
        assert float(cosine) == pytest.approx(1.0, abs=1e-4)
        assert float(singular[i]) == pytest.approx(float(values[0]), rel=1e-4)


def test_jacobian_attack_spends_the_budget_and_beats_its_opposite_sign():
    model = wrap(_TinyEncoder(), device="cpu")
    x = torch.full((4, 1, 3, 3), 0.5) + 0.05 * torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(5))
    result = ATTACKS.create("jacobian").sweep(model, x, [0.2], 1, seed=0)
    torch.testing.assert_close(result.delta_norm, torch.full_like(result.delta_norm, 0.2), rtol=1e-4, atol=0)
    damage = make_objective("max-damage").bind(model, x)
    flipped = x - (result.x_adv[0, 0] - x)
    with torch.no_grad():
        assert bool((damage.values(flipped) <= result.attack_loss[0, 0] + 1e-7).all())


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.3, 1.0, 4.0]), st.sampled_from(["l2", "linf"]))
def test_universal_perturbation_respects_every_images_threat(seed, lam, norm):
    generator = torch.Generator().manual_seed(seed)
    # images at the box edges and inside: the shared pattern must be cut to each image's own box
    x = torch.rand(6, 1, 8, 8, generator=generator).round() * torch.rand(6, 1, 1, 1, generator=generator)
    radius = lam if norm == "l2" else lam / 8
    result = ATTACKS.create("universal", steps=5, norm=norm).sweep(tiny_ae(), x, [radius], 2, seed=seed)
    for trial in range(2):
        Threat(radius, norm).check(x, result.x_adv[0, trial])


def test_universal_is_one_pattern_shared_by_all_images():
    x = torch.full((5, 1, 8, 8), 0.5) + 0.01 * torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    result = ATTACKS.create("universal", **FAST).sweep(tiny_ae(), x, [0.5, 1.0], 2, seed=0)
    deltas = result.x_adv - x  # (L, T, N, C, H, W); the box is never reached here
    torch.testing.assert_close(deltas, deltas[:, :, :1].expand_as(deltas), atol=1e-6, rtol=0)
    assert not torch.allclose(deltas[:, 0], deltas[:, 1])  # trials start from different draws
    # per image with the universal attack's own optimizer (PGD, 2 restarts) and steps
    per_image = ATTACKS.create("max-damage", optimizer="pgd", restarts=2, early_stop=None, **FAST).sweep(
        tiny_ae(), x, [0.5, 1.0], 2, seed=0)
    assert float(result.attack_loss.mean()) <= float(per_image.attack_loss.mean()) * 1.05
    # the result does not depend on how the sweep chunks its rows
    chunked = ATTACKS.create("universal", batch_size=3, **FAST).sweep(tiny_ae(), x, [0.5, 1.0], 2, seed=0)
    torch.testing.assert_close(chunked.x_adv, result.x_adv)


def test_universal_refuses_rows_outside_a_sweep():
    attack = ATTACKS.create("universal")
    with pytest.raises(AerobustError, match="sweep"):
        attack.optimize(None)
