"""The robust VAE baselines (LipschitzVAE, smooth encoders, AVAE): losses against independent
computations, the Lipschitz certificate against measured damage, and train-then-audit from the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from click.testing import CliRunner

from aerobust import losses as L
from aerobust.adapter import wrap
from aerobust.architectures import MLPAutoencoder
from aerobust.attacks.optimizers import REFERENCE_CODE_LBFGS
from aerobust.cli import main
from aerobust.defenses.aave import consistency_loss
from aerobust.defenses.lipschitz import (LipschitzLinear, LipschitzVAE, certified_radius,
                                         certified_reconstruction_bound, group_sort)
from aerobust.defenses.smooth_encoder import select_smoothness_points
from aerobust.errors import AerobustError
from aerobust.registry import ATTACKS, DEFENSES
from aerobust.report.reproduction import robustness_table, write_reproduction
from aerobust.reproduce import DAMAGE_RECON, ordering_verdicts, per_image_values, per_seed_statistics
from aerobust.stats import hierarchical_interval, hierarchical_paired_difference
from aerobust.training import train

BASELINES = ("lipschitz-vae", "smooth-encoder", "aave")


@pytest.fixture(scope="module")
def digits(mnist_train_small):
    order = torch.randperm(len(mnist_train_small), generator=torch.Generator().manual_seed(1))[:200]
    return mnist_train_small.subset(order)


def test_baselines_are_registered_and_listed():
    assert set(BASELINES) <= set(DEFENSES.list())
    output = CliRunner().invoke(main, ["list", "defenses"]).output
    assert all(name in output for name in BASELINES)


# -- LipschitzVAE ----------------------------------------------------------------------------------------
def test_group_sort_sorts_pairs_and_is_one_lipschitz():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 8, generator=generator), torch.randn(50, 8, generator=generator)
    expected = a.view(50, 4, 2).sort(dim=2, descending=True).values.view(50, 8)
    assert torch.equal(group_sort(a), expected)
    assert bool(((group_sort(a) - group_sort(b)).norm(dim=1) <= (a - b).norm(dim=1) + 1e-6).all())


@pytest.mark.parametrize("constraint", ["spectral", "bjorck"])
def test_lipschitz_linear_reaches_its_scale(constraint):
    torch.manual_seed(0)
    layer = LipschitzLinear(60, 30, constraint=constraint, scale=2.5).train()
    for _ in range(60):  # power iterations run in training forwards
        layer(torch.zeros(1, 60))
    singular = torch.linalg.svdvals(layer.effective_weight().detach().double())
    assert layer.spectral_norm() == pytest.approx(2.5, rel=1e-3)
    assert float(singular.max()) == pytest.approx(layer.spectral_norm(), rel=1e-9)
    if constraint == "bjorck":  # orthonormalised: every singular value at the scale, not only the largest
        assert float(singular.min()) == pytest.approx(2.5, rel=1e-2)


def test_lipschitz_constants_bound_the_measured_ratios():
    torch.manual_seed(0)
    module = LipschitzVAE(input_shape=(1, 8, 8), latent_dim=4, hidden=(16, 16), decoder_lipschitz=6.0).eval()
    constants = module.lipschitz_constants()
    x, y = torch.rand(400, 1, 8, 8), torch.rand(400, 1, 8, 8)
    # Close pairs probe the local slopes, far pairs the global ones.
    y[:200] = (x[:200] + 1e-3 * torch.randn(200, 1, 8, 8))
    step = (x - y).flatten(1).norm(dim=1)
    (mu_x, logvar_x), (mu_y, logvar_y) = module.encode(x), module.encode(y)
    with torch.no_grad():
        ratios = {
            "mean": (mu_x - mu_y).norm(dim=1) / step,
            "std": ((0.5 * logvar_x).exp() - (0.5 * logvar_y).exp()).norm(dim=1) / step,
            "reconstruction": (module.decode(mu_x) - module.decode(mu_y)).flatten(1).norm(dim=1) / step,
        }
    for name, ratio in ratios.items():
        assert float(ratio.max()) <= constants[name] * (1 + 1e-5), name
    assert constants["reconstruction"] == pytest.approx(constants["mean"] * constants["decoder"])


def test_certified_bound_formulas():
    assert certified_reconstruction_bound(3.0, 0.5, 4.0) == pytest.approx(6.0)
    assert certified_radius(6.0, 0.5, 4.0) == pytest.approx(3.0)
    assert certified_radius(1.0, 0.0, 4.0) == math.inf
    with pytest.raises(AerobustError):
        certified_reconstruction_bound(1.0, -1.0, 1.0)


def test_max_damage_attack_stays_under_the_certificate(digits):
    result = train("lipschitz-vae", "mlp-vae-lipschitz-32", digits, epochs=1, batch_size=50, lr=1e-3, quiet=True,
                   arch_kwargs={"hidden": [32, 32]})
    model = wrap(result.model, device="cpu")
    constants = result.defense.describe()["lipschitz_constants"]
    attack = ATTACKS.create("max-damage", steps=10, restarts=1, sanity_checks=False)
    sweep = attack.sweep(model, digits.images[:8], [1.0, 3.0], trials=1, seed=0)
    bounds = torch.tensor([certified_reconstruction_bound(lam, constants["mean"], constants["decoder"])
                           for lam in (1.0, 3.0)])
    assert bool((sweep.attack_loss.cpu() <= bounds.view(2, 1, 1) * (1 + 1e-5)).all())
    assert float(sweep.attack_loss.max()) > 0  # the attack did move the reconstruction


def test_lipschitz_defense_refuses_other_architectures(digits):
    with pytest.raises(AerobustError, match="mlp-vae-lipschitz-32"):
        train("lipschitz-vae", MLPAutoencoder(hidden=(16,), variational=True), digits, epochs=1, quiet=True)
    with pytest.raises(AerobustError, match="even"):
        LipschitzVAE(hidden=(15,))


# -- smooth encoders -------------------------------------------------------------------------------------
def test_gaussian_w2_matches_the_general_formula():
    generator = torch.Generator().manual_seed(0)
    mu_a, mu_b, logvar_a, logvar_b = (torch.randn(3, 4, generator=generator, dtype=torch.float64) for _ in range(4))
    ours = L.gaussian_w2_squared(mu_a, logvar_a, mu_b, logvar_b)
    for i in range(3):
        cov_a, cov_b = np.diag(logvar_a[i].exp().numpy()), np.diag(logvar_b[i].exp().numpy())
        root_b = scipy.linalg.sqrtm(cov_b)
        cross = scipy.linalg.sqrtm(root_b @ cov_a @ root_b)
        expected = float(((mu_a[i] - mu_b[i]) ** 2).sum()) + np.trace(cov_a + cov_b - 2 * cross.real)
        assert float(ours[i]) == pytest.approx(expected, rel=1e-9)


def test_smoothness_selection_stays_in_the_ball_and_beats_its_start(digits):
    torch.manual_seed(0)
    model = wrap(MLPAutoencoder(hidden=(32,), variational=True), device="cpu")
    x = digits.images[:6]
    mu, logvar = model.posterior(x)
    selected = select_smoothness_points(model, x, mu, logvar, radius=1.0, steps=10, step_size=0.25, norm="l2",
                                        generator=torch.Generator().manual_seed(0))
    assert bool(((selected - x).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all())
    assert 0 <= float(selected.min()) and float(selected.max()) <= 1
    w2 = lambda points: L.gaussian_w2_squared(*model.posterior(points), mu, logvar)  # noqa: E731
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    random_point = (x + noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    assert bool((w2(selected) > w2(random_point)).all())


def test_smooth_encoder_loss_is_its_weighted_terms(digits):
    torch.manual_seed(0)
    model = wrap(MLPAutoencoder(hidden=(32,), variational=True), device="cpu")
    defense = DEFENSES.create("smooth-encoder", smoothness_weight=3.0, beta=2.0)
    defense.setup(model, dataset_size=200, batch_size=20, generator=torch.Generator().manual_seed(0))
    x = digits.images[:20]
    terms = {k: float(v.detach()) for k, v in defense.losses(model, x, torch.Generator().manual_seed(0)).items()}
    with torch.no_grad():
        mu, logvar = model.posterior(x)
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                               torch.distributions.Normal(0.0, 1.0)).sum(dim=1).mean()
    assert terms["kl"] == pytest.approx(float(kl), rel=1e-5)
    expected = terms["rec"] + 2.0 * (terms["kl"] + terms["kl_selected"]) + 3.0 * terms["w2_selected"]
    assert terms["total"] == pytest.approx(expected, rel=1e-6)
    assert terms["w2_selected"] > 0


# -- AVAE ------------------------------------------------------------------------------------------------
def test_consistency_loss_matches_normal_log_density_and_spares_the_decoder(digits):
    torch.manual_seed(0)
    module = MLPAutoencoder(hidden=(32,), variational=True)
    model = wrap(module, device="cpu")
    z = torch.randn(16, model.latent_dim, generator=torch.Generator().manual_seed(0))
    loss = consistency_loss(model, z)
    with torch.no_grad():
        mu, logvar = module.encode(module.decode(z))
        expected = -torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(dim=1).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in module.decoder.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.encoder_trunk.parameters())


def test_aave_loss_is_its_weighted_terms(digits):
    torch.manual_seed(0)
    model = wrap(MLPAutoencoder(hidden=(32,), variational=True), device="cpu")
    defense = DEFENSES.create("aave", consistency_weight=0.5, prior_consistency_weight=0.25)
    defense.setup(model, dataset_size=200, batch_size=20, generator=torch.Generator().manual_seed(0))
    terms = {k: float(v.detach()) for k, v in
             defense.losses(model, digits.images[:20], torch.Generator().manual_seed(0)).items()}
    expected = terms["rec"] + terms["kl"] + 0.5 * terms["consistency"] + 0.25 * terms["consistency_prior"]
    assert terms["total"] == pytest.approx(expected, rel=1e-6)


# -- the legacy protocol preset --------------------------------------------------------------------------
def test_reference_code_lbfgs_preset_builds_the_reference_settings():
    config = ATTACKS.create("max-damage", **REFERENCE_CODE_LBFGS).config()
    assert (config["optimizer"], config["lbfgs_memory"], config["lbfgs_pgtol"]) == ("lbfgs-legacy", 100, 1e-20)


# -- train one epoch from the CLI, then audit the checkpoint ---------------------------------------------
@pytest.mark.parametrize("defense, arch, hidden", [("lipschitz-vae", "mlp-vae-lipschitz-32", "16,16"),
                                                   ("smooth-encoder", "mlp-vae-32", "16,16"),
                                                   ("aave", "mlp-vae-32", "16,16")])
def test_cli_trains_one_epoch_and_the_checkpoint_audits(defense, arch, hidden, tmp_path):
    runner = CliRunner()
    out = tmp_path / defense
    trained = runner.invoke(main, ["--threads", "1", "train", "--defense", defense, "--arch", arch, "--pad", "32",
                                   "--limit", "200", "--epochs", "1", "--batch-size", "50", "--arch-option",
                                   f"hidden={hidden}", "--out", str(out), "--quiet"])
    assert trained.exit_code == 0, trained.output
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["defense_config"]["name"] == defense
    if defense == "lipschitz-vae":
        assert set(sidecar["defense_config"]["lipschitz_constants"]) == {"mean", "std", "decoder", "reconstruction"}
    audited = runner.invoke(main, ["--threads", "1", "audit", "--checkpoint", str(out / "model.pt"), "--pad", "32",
                                   "--attacks", "max-damage", "--lambdas", "1", "--images", "3", "--trials", "1",
                                   "--attack-option", "max-damage.steps=5", "--out", str(tmp_path / "audit"),
                                   "--no-report", "--quiet"])
    assert audited.exit_code == 0, audited.output
    results = (tmp_path / "audit" / "results.csv").read_text().splitlines()
    assert len(results) == 1 + 3


# -- the reproduction's bookkeeping ------------------------------------------------------------------------
def _per_image_frame(values: dict[str, np.ndarray], metric="msssim_recon_advrecon", attack="max-damage"):
    """values[model]: (seeds x images) array of per-image means."""
    rows = [{"seed": seed, "model": model, "attack": attack, "lambda": 1.0, "image_id": image, metric: v}
            for model, matrix in values.items() for seed, row in enumerate(matrix) for image, v in enumerate(row)]
    return pd.DataFrame(rows)


def test_per_image_values_average_trials_and_per_seed_counts_images():
    results = pd.DataFrame({"model": ["A"] * 4 + ["B"] * 2, "attack": ["latent"] * 6, "lambda": [1.0] * 6,
                            "image_id": [1, 1, 2, 3, 1, 2], "attack_loss": [1.0, 3.0, np.nan, 4.0, 5.0, 7.0]})
    for column in ("msssim_target_advrecon", "msssim_input_adv", "msssim_recon_advrecon", "classifier_correct",
                   "clean_classifier_correct"):
        results[column] = np.nan
    per_image = per_image_values(results, seed=4)
    assert per_image.set_index(["model", "image_id"]).loc[("A", 1), "attack_loss"] == pytest.approx(2.0)
    stats = per_seed_statistics(per_image).set_index(["model", "metric"])
    assert stats.loc[("A", "attack_loss"), "value"] == pytest.approx(3.0)  # images 1 and 3; image 2 has no value
    assert stats.loc[("A", "attack_loss"), "images"] == 2
    assert set(stats["seed"]) == {4} and len(stats) == 2


def test_ordering_verdicts_follow_the_hierarchical_paired_bootstrap():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.3, 0.7, size=40)

    def claim_verdict(shift: float, seed_spread: float = 0.01):
        ours = images + shift + rng.normal(0, seed_spread, size=(5, 1))
        augmented = images + rng.normal(0, seed_spread, size=(5, 1))
        table = ordering_verdicts(_per_image_frame({"Ours": ours, "Augmented-free": augmented}), resamples=4000)
        row = table[(table["better"] == "Ours") & (table["worse"] == "Augmented-free")
                    & (table["attack"] == "max-damage") & (table["lambda"] == 1.0)]
        return row.iloc[0]

    holds = claim_verdict(0.1)  # higher MS-SSIM(x̃, x̃_a) is more robust here
    assert holds["verdict"] == "holds" and holds["ci_low"] > 0 and holds["p_holm"] < 0.05
    assert claim_verdict(-0.1)["verdict"] == "reversed"
    # a shift smaller than the spread between training runs is not a verdict, however many images agree
    assert claim_verdict(0.01, seed_spread=0.05)["verdict"] == "not established"


def test_robustness_cells_give_the_hierarchical_interval_and_the_paper_value():
    matrix = np.array([[0.9, 0.8], [1.0, 0.9], [0.8, 0.9]])
    per_image = _per_image_frame({"Ours": matrix})
    fidelity = pd.DataFrame({"model": ["Ours"] * 3, "reconstruction_msssim": [0.5, 0.6, 0.7],
                             "frechet_distance_small_classifier": [1.0, 2.0, 3.0]})
    paper = {"Ours": ([0.92, 0.82, 0.69], 39.37)}
    table = robustness_table(per_image, fidelity, ["Ours"], [DAMAGE_RECON], paper)
    interval = hierarchical_interval(matrix)
    assert table.iloc[0, 0] == f"0.88 [{interval.low:.2f}, {interval.high:.2f}] (paper 0.92)"
    assert table.iloc[0, 1] == "n/a"  # lambda 3 was not measured: said, not blank or zero
    assert table.loc["Ours", "clean MS-SSIM(x, x̃)"] == "0.600 (seeds 0.500-0.700, n = 3)"


def test_hierarchical_difference_covers_a_null_difference_at_about_the_nominal_rate_with_five_seeds():
    """Two models share the images' effects (the pairing) but not their training runs: expected difference 0."""
    hits = 0
    for repeat in range(150):
        rng = np.random.default_rng(100 + repeat)
        images = rng.normal(0, 1, 30)
        first, second = (images + rng.normal(0, 0.5, (5, 1)) + rng.normal(0, 0.2, (5, 30)) for _ in range(2))
        difference = hierarchical_paired_difference(first, second, resamples=1000)
        hits += difference.low <= 0 <= difference.high
    # measured 0.91 over 200 repeats at 2000 resamples; 5 seeds per model is a small top level
    assert 0.84 <= hits / 150 <= 0.99


def test_reproduce_cli_refuses_bad_input_in_one_line(tmp_path):
    runner = CliRunner()
    bad_seeds = runner.invoke(main, ["reproduce", "--seeds", "a,b", "--out", str(tmp_path / "o")])
    assert bad_seeds.exit_code == 2 and "--seeds takes integers" in bad_seeds.output
    nested = runner.invoke(main, ["reproduce", "--out", str(tmp_path / "o"), "--runs", str(tmp_path / "o" / "runs")])
    assert nested.exit_code == 2 and "outside --out" in nested.output and "Traceback" not in nested.output


def test_reproduce_end_to_end_on_two_rows_resumes(tmp_path, monkeypatch):
    import aerobust.reproduce as reproduction

    monkeypatch.setattr(reproduction, "ROWS", (reproduction.Row("VAE", "vae", "mlp-vae-32"),
                                               reproduction.Row("Ours", "coupled-ks", "mlp-ae-32")))
    config = reproduction.ReproductionConfig(
        seeds=(0, 1), epochs=1, train_images=200, images=2, trials=1, steps=2, classifier_epochs=1,
        classifier_images=200, generated_samples=50, fidelity_images=50, legacy_images=1, legacy_maxiter=3)
    written = write_reproduction(reproduction.reproduce(tmp_path / "out", tmp_path / "runs", config, device="cpu",
                                                        quiet=True))
    per_seed = pd.read_csv(written["per_seed"])
    assert set(per_seed["seed"]) == {0, 1} and set(per_seed["model"]) == {"VAE", "Ours"}
    assert (per_seed["images"] == 2).all()  # 2 images behind every per-seed mean
    assert "msssim_target_advrecon_normalised" in set(per_seed["metric"])
    table1 = (tmp_path / "out" / "table1_mnist.md").read_text()
    assert "(paper 0.38)" in table1 and "n/a" in table1  # the paper's value beside ours; untrained rows say so
    table3 = pd.read_csv(tmp_path / "out" / "table3_classifier.csv", index_col=0)
    assert any("1000 test images" in column for column in table3.columns)  # clean accuracy on every test image
    orderings = pd.read_csv(written["orderings"])
    tested = orderings[orderings["verdict"] != "no data"]
    assert len(tested) and set(tested["verdict"]) <= {"holds", "reversed", "not established"}
    assert (tested["p_holm"] >= tested["p_value"]).all() and (tested["ci_low"] <= tested["ci_high"]).all()
    # every trained row's robustness beside its fidelity, both attacks at every lambda, with intervals
    points = pd.read_csv(written["robustness_fidelity"])
    assert set(points["model"]) == {"VAE", "Ours"} and len(points) == 2 * 2 * 3
    assert ((points["low"] <= points["robustness"]) & (points["robustness"] <= points["high"])).all()
    assert ((points["fidelity_min"] <= points["fidelity"]) & (points["fidelity"] <= points["fidelity_max"])).all()
    assert (points["seeds"] == 2).all() and written["fig_robustness_fidelity"].is_file()
    findings = written["findings"].read_text()
    assert "Holm-corrected over ALL claims" in findings and "blurriness" in findings and "Scope" in findings
    assert "every seed" not in findings
    # the default ensemble: per sample the worst of the attack and 2 more restarts, its wins counted per row
    wins = pd.read_csv(written["ensemble_wins"])
    assert set(wins["model"]) == {"VAE", "Ours"} and (wins["rows"] == 2 * 2).all()  # 2 seeds x 2 images, 1 trial
    assert (wins["default wins"] + wins["extra-restarts wins"] == wins["rows"]).all()
    assert "2 more random restart(s)" in findings and "reference-lbfgs wins" not in wins.columns
    pooled = pd.read_csv(written["ensemble_wins_pooled"])
    assert len(pooled) == 2 * 3 and (pooled["rows"] == 2 * 2 * 2).all()  # summed over the two models
    assert pooled["extra-restarts wins"].sum() == wins["extra-restarts wins"].sum()
    from tests.latex import check_tables, require_pdflatex

    require_pdflatex()
    assert check_tables(sorted((tmp_path / "out").glob("*.tex")), tmp_path / "latex") == []
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["threads"] == torch.get_num_threads() and manifest["config"]["seeds"] == [0, 1]
    history = (tmp_path / "runs" / "seed0" / "Ours" / "history.jsonl").read_text()
    reproduction.reproduce(tmp_path / "out", tmp_path / "runs", config, device="cpu", quiet=True)
    assert (tmp_path / "runs" / "seed0" / "Ours" / "history.jsonl").read_text() == history  # resumed, not retrained


def test_reproduce_runs_the_length_study_on_the_first_seeds(tmp_path):
    from aerobust.reproduce import ReproductionConfig

    with pytest.raises(AerobustError, match="first --length-seeds of --seeds"):
        ReproductionConfig(seeds=(3,), training_lengths=(30,), length_seeds=2).validate()
    ReproductionConfig(seeds=(3,), length_seeds=2).validate()  # no study: nothing to refuse
    with pytest.raises(AerobustError, match="--ensemble-restarts must be 0"):
        ReproductionConfig(ensemble_restarts=-1).validate()
