"""The adaptive PGD optimizer: its schedule, the threat, a convex toy with a known optimum, refusals."""
import pytest
import torch
from torch import nn

from aerobust.adapter import wrap
from aerobust.attacks.optimizers import apgd_checkpoints
from aerobust.errors import AerobustError
from aerobust.registry import ATTACKS
from aerobust.threat import Threat

SHAPE = (1, 8, 8)


class IdentityCode(nn.Module):
    """Its code is the image itself: the latent attack's loss ||x + d - t|| is convex in d."""

    input_shape = SHAPE

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def encode(self, x):
        return x.flatten(1)

    def decode(self, z):
        return z.view(len(z), *SHAPE)


def test_checkpoints_are_the_papers_for_100_steps():
    # Croce & Hein 2020, section 3.2: p = 0, 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert all(0 < step < 10 for step in apgd_checkpoints(10))


@pytest.mark.parametrize("budget, lam", [("l2", 1.5), ("linf", 0.1)])
def test_apgd_reaches_the_known_optimum_of_a_convex_toy_and_pgd_does_not_beat_it(budget, lam):
    generator = torch.Generator().manual_seed(0)
    x, targets = torch.rand(2, 6, *SHAPE, generator=generator)
    model = wrap(IdentityCode(), device="cpu")
    # The minimizer of ||d - (t - x)|| over the threat set is the projection of t - x onto it.
    threat = Threat(lam, budget)
    optimum = (threat.project(x, targets - x) - (targets - x)).flatten(1).norm(dim=1)
    runs = {name: ATTACKS.create("latent", optimizer=name, steps=60, restarts=1, budget=budget)
            .sweep(model, x, [lam], 1, 0, targets=targets[None]).attack_loss[0, 0] for name in ("apgd", "pgd")}
    assert torch.all(runs["apgd"] <= optimum + 1e-3 * (1 + optimum))
    assert torch.all(runs["apgd"] <= runs["pgd"] + 1e-4)


@pytest.mark.parametrize("budget, lam", [("l2", 2.0), ("l2", 0.3), ("linf", 0.05)])
def test_apgd_results_stay_in_the_threat_and_beat_the_clean_loss(small_ae, mnist_test, budget, lam):
    x = mnist_test.images[:6]
    result = ATTACKS.create("max-damage", optimizer="apgd", steps=30, budget=budget).sweep(small_ae, x, [lam], 1, 0)
    assert result.config["optimizer"] == "apgd" and result.config["steps"] == 30 and result.config["restarts"] == 1
    delta = (result.x_adv[0, 0] - x).flatten(1)
    size = delta.norm(dim=1) if budget == "l2" else delta.abs().max(dim=1).values
    assert float(size.max()) <= lam * (1 + 1e-5)
    assert 0 <= float(result.x_adv.min()) and float(result.x_adv.max()) <= 1
    assert torch.all(result.attack_loss[0, 0] > result.clean_loss[0])


@pytest.mark.parametrize("options, message", [
    ({"steps": 2.5}, "steps must be a whole number"), ({"steps": 0}, "steps must be a whole number"),
    ({"steps": "10"}, "steps must be a whole number"), ({"restarts": True}, "restarts must be a whole number"),
    ({"optimizer": "pgd", "step_size": float("inf")}, "step_size must be a finite number > 0"),
    ({"optimizer": "pgd", "step_size": float("nan")}, "step_size must be a finite number > 0"),
    ({"optimizer": "pgd", "early_stop": 0.5}, "early_stop must be a whole number"),
    ({"optimizer": "lbfgs-legacy", "lbfgs_factr": float("inf")}, "lbfgs_factr must be a finite number >= 0"),
    # APGD adapts its step sizes: PGD's step_size is not one of its settings.
    ({"step_size": 0.1}, "^optimizer 'apgd' does not take step_size; its options are steps, random_start$"),
])
def test_optimizer_settings_of_the_wrong_type_are_refused_in_one_line(options, message):
    with pytest.raises(AerobustError, match=message) as error:
        ATTACKS.create("max-damage", **{"optimizer": "apgd", **options})
    assert "\n" not in str(error.value)


def test_apgd_rows_do_not_depend_on_the_batch_size(small_ae, mnist_test):
    """Same rows for batch sizes 3, 7 and automatic: losses within a relative 1e-5, pixels within 1e-3.

    Not bit-exact: BLAS sums a row differently in a different batch, and over the steps (and at a
    checkpoint's discrete halving decision) the 1e-7 rounding differences grow; PGD shows the same.
    """
    x = mnist_test.images[:9]
    runs = {size: ATTACKS.create("max-damage", optimizer="apgd", steps=15, batch_size=size)
            .sweep(small_ae, x, [1.0, 3.0], 2, 4) for size in (3, 7, "auto")}
    for size in (7, "auto"):
        assert torch.allclose(runs[size].attack_loss, runs[3].attack_loss, rtol=1e-5, atol=0)
        assert torch.allclose(runs[size].x_adv, runs[3].x_adv, rtol=0, atol=1e-3)
