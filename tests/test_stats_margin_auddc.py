"""Statistics (cluster bootstrap, paired tests), the r-robustness margin and AUDDC."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from aerobust.adapter import wrap
from aerobust.distortion import auddc, auddc_table, distortion_curves
from aerobust.errors import AerobustError
from aerobust.registry import ATTACKS, METRICS
from aerobust.robustness_margin import robustness_margins
from aerobust.stats import (cluster_bootstrap, holm, interval_table, paired_comparisons, sign_flip_test,
                            universal_share)


def test_cluster_bootstrap_covers_the_true_mean_at_about_the_nominal_rate():
    """Images carry a random effect shared by their trials; intervals must resample images, not rows."""
    rng = np.random.default_rng(0)
    images, trials, repeats, true_mean = 40, 5, 600, 2.0
    covered = 0
    for repeat in range(repeats):
        effect = rng.normal(0, 1.0, size=(images, 1))
        values = true_mean + effect + rng.normal(0, 1.0, size=(images, trials))
        clusters = np.repeat(np.arange(images), trials)
        interval = cluster_bootstrap(values.ravel(), clusters, resamples=500, seed=repeat)
        covered += interval.low <= true_mean <= interval.high
    # binomial sd at 0.95 over 600 repeats is 0.009; percentile intervals run slightly narrow at n = 40 (about 0.93)
    assert 0.90 <= covered / repeats <= 0.985


def test_row_bootstrap_would_undercover_so_clusters_matter():
    rng = np.random.default_rng(1)
    values = 2.0 + rng.normal(0, 1.0, size=(30, 1)) + rng.normal(0, 0.2, size=(30, 10))
    by_image = cluster_bootstrap(values.ravel(), np.repeat(np.arange(30), 10), seed=0)
    by_row = cluster_bootstrap(values.ravel(), np.arange(300), seed=0)
    assert (by_image.high - by_image.low) > 2 * (by_row.high - by_row.low)
    assert (by_image.images, by_image.rows, by_row.images) == (30, 300, 300)


def test_nan_rows_are_counted_not_hidden():
    interval = cluster_bootstrap([1.0, np.nan, 3.0, 5.0], [0, 0, 1, 2], resamples=50)
    assert (interval.rows, interval.nan_rows, interval.images) == (3, 1, 3)
    assert interval.mean == pytest.approx(3.0)


def test_sign_flip_test_matches_the_exact_permutation_distribution():
    differences = np.array([0.9, 1.3, -0.2, 0.7, 1.1, 0.4, -0.5, 0.8])
    observed = abs(differences.mean())
    flips = np.array(list(itertools.product([-1, 1], repeat=len(differences))))
    exact = float((np.abs((flips * differences).mean(axis=1)) >= observed - 1e-12).mean())
    assert sign_flip_test(differences, permutations=20000, seed=0) == pytest.approx(exact, abs=0.01)


def test_holm_against_hand_computed_values():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])


def _results(shift_b: float, images=20, trials=3, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.5, 0.1, size=(trials, images))
    rows = []
    for model, shift in (("A", 0.0), ("B", shift_b)):
        noise = rng.normal(0, 0.01, size=(trials, images))
        for t in range(trials):
            for i in range(images):
                rows.append({"model": model, "attack": "max-damage", "lambda": 1.0, "trial": t, "image_id": i,
                             "target_id": -1, "score": base[t, i] + shift + noise[t, i]})
    return pd.DataFrame(rows)


def test_paired_comparisons_find_a_real_difference_and_not_a_null_one():
    real = paired_comparisons(_results(0.05), ["score"], permutations=2000)
    null = paired_comparisons(_results(0.0), ["score"], permutations=2000)
    assert bool(real["holds"].iloc[0]) and real["ci_low"].iloc[0] > 0 and real["images"].iloc[0] == 20
    assert not bool(null["holds"].iloc[0]) and null["ci_low"].iloc[0] < 0 < null["ci_high"].iloc[0]
    unpaired = _results(0.05)
    unpaired.loc[unpaired["model"] == "B", "image_id"] += 100
    table = paired_comparisons(unpaired, ["score"])
    assert not bool(table["paired"].iloc[0]) and math.isnan(table["p_value"].iloc[0]) and not table["holds"].iloc[0]


def test_interval_table_and_universal_share_columns():
    results = _results(0.0)
    table = interval_table(results, ["score"], resamples=200)
    assert list(table["model"]) == ["A", "B"] and (table["images"] == 20).all() and (table["trials"] == 3).all()
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()
    damage = results[results["model"] == "A"].assign(l2_recon_advrecon=lambda f: f["score"])
    both = pd.concat([damage, damage.assign(attack="universal", l2_recon_advrecon=lambda f: f["score"] / 2)])
    share = universal_share(both, resamples=200)
    assert share["share"].iloc[0] == pytest.approx(0.5) and share["images"].iloc[0] == 20


class _Linear(nn.Module):
    """f(g(x)) = B A x with known singular values of A and orthonormal columns of B."""

    input_shape = (1, 4, 4)

    def __init__(self, singular=(3.0, 1.0, 0.5)):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        u, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator))
        v, _ = torch.linalg.qr(torch.randn(16, 3, generator=generator))
        self.register_buffer("A", u @ torch.diag(torch.tensor(singular)) @ v.T)
        self.register_buffer("B", torch.linalg.qr(torch.randn(16, 3, generator=generator))[0])
        self.logvar = None

    def encode(self, x):
        mu = x.flatten(1) @ self.A.T
        return mu if self.logvar is None else (mu, torch.full_like(mu, self.logvar))

    def decode(self, z):
        return (z @ self.B.T).view(-1, 1, 4, 4)


def test_margin_bisection_finds_r_over_the_top_singular_value():
    model = wrap(_Linear(), device="cpu")
    x = torch.full((3, 1, 4, 4), 0.5)  # lambda_max < 0.5: the pixel box never binds
    result = robustness_margins(model, x, 0.6, lambda_max=0.45, iterations=12,
                                attack=ATTACKS.create("max-damage", steps=40, restarts=1))
    torch.testing.assert_close(result.margins, torch.full((3,), 0.6 / 3.0, dtype=torch.float64), atol=3e-4, rtol=0)
    assert result.summary()["broken"] == 3 and result.censored == 0
    beyond = robustness_margins(model, x, 3.0, lambda_max=0.45, iterations=4,
                                attack=ATTACKS.create("max-damage", steps=20, restarts=1))
    assert beyond.censored == 3 and math.isnan(beyond.summary()["median"])


def test_margin_reads_lambda_in_the_budget_unit_and_runs_every_restart():
    model = wrap(_Linear(), device="cpu")
    x = torch.full((3, 1, 4, 4), 0.5)
    # per-pixel RMS: an L2 radius of lambda * sqrt(16) = 4 lambda, so the L2 margin 0.2 is lambda = 0.05
    attack = ATTACKS.create("max-damage", steps=40, restarts=3, budget="rms")
    batches = []
    optimize = attack.optimize
    attack.optimize = lambda problem: batches.append(len(problem.x)) or optimize(problem)
    result = robustness_margins(model, x, 0.6, lambda_max=0.11, iterations=12, attack=attack)
    torch.testing.assert_close(result.margins, torch.full((3,), 0.6 / 3.0 / 4.0, dtype=torch.float64), atol=1e-4,
                               rtol=0)
    assert batches[0] == 3 * 3 and result.config["restarts"] == 3 and result.config["budget"] == "rms"


def test_margin_probability_criterion_for_vaes():
    tight, noisy = _Linear(), _Linear()
    tight.logvar, noisy.logvar = -20.0, 2.0  # negligible and overwhelming posterior noise
    x = torch.full((2, 1, 4, 4), 0.5)
    attack = ATTACKS.create("max-damage", steps=40, restarts=1)
    tight_margin = robustness_margins(wrap(tight, device="cpu"), x, 0.6, lambda_max=0.45, iterations=10, attack=attack)
    torch.testing.assert_close(tight_margin.margins, torch.full((2,), 0.2, dtype=torch.float64), atol=1e-3, rtol=0)
    noisy_margin = robustness_margins(wrap(noisy, device="cpu"), x, 0.6, lambda_max=0.45, iterations=3, attack=attack)
    assert (noisy_margin.margins == 0).all() and "posterior" in noisy_margin.criterion


def test_margin_refuses_bad_settings():
    with pytest.raises(AerobustError, match="r > 0"):
        robustness_margins(wrap(_Linear(), device="cpu"), torch.zeros(1, 1, 4, 4), 0.0, lambda_max=1.0)
    with pytest.raises(AerobustError, match="maximum-damage"):
        robustness_margins(wrap(_Linear(), device="cpu"), torch.zeros(1, 1, 4, 4), 1.0, lambda_max=1.0,
                           attack=ATTACKS.create("latent"))
    with pytest.raises(AerobustError, match="'universal' attack fits one pattern"):
        robustness_margins(wrap(_Linear(), device="cpu"), torch.zeros(1, 1, 4, 4), 1.0, lambda_max=1.0,
                           attack=ATTACKS.create("universal"))


def test_auddc_against_a_hand_computed_area():
    assert METRICS.get("auddc") is auddc
    # relative outputs 1, 0.5, 0.25 at budget fractions 0, 0.5, 1: trapezoids 0.375 + 0.1875
    assert auddc([2.0, 0.0, 1.0], [1.0, 4.0, 2.0]) == pytest.approx(0.5625)
    assert auddc([0.0, 1.0], [3.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(AerobustError, match="lambda = 0"):
        auddc([1.0, 2.0], [1.0, 0.5])


def test_distortion_curves_from_a_results_table():
    rows = []
    for model, outputs in (("robust", (2.0, 1.8, 1.6)), ("fragile", (2.0, 0.5, 0.1))):
        for lam, output in zip((0.0, 1.0, 2.0), outputs):
            for image in range(4):
                rows.append({"model": model, "attack": "latent", "lambda": lam, "trial": 0, "image_id": image,
                             "l2_delta": lam, "l2_target_advrecon": output})
    results = pd.DataFrame(rows)
    curves = distortion_curves(results)
    assert list(curves["rows"]) == [4] * 6
    table = auddc_table(results).set_index("model")
    assert table.loc["robust", "auddc"] > table.loc["fragile", "auddc"]
    assert table.loc["fragile", "auddc"] == pytest.approx(0.5 * (1 + 0.25) / 2 + 0.5 * (0.25 + 0.05) / 2)
    assert auddc_table(results[results["lambda"] > 0]).empty
