"""Autoencoders as a classifier defense: attacks, purification, detection, OOD, calibration, CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from aerobust.adapter import wrap
from aerobust.architectures import MLPAutoencoder
from aerobust.checkpoints import save_checkpoint
from aerobust.classifiers import (MLPClassifier, SmallCNN, accuracy, load_classifier, predict_logits,
                                  save_classifier, train_classifier)
from aerobust.cli import main
from aerobust.classifier_defense import (attack_classifier, calibration_data, calibration_summary,
                                         consistency_scores, entropy, generate_adversarials, get_attack, ood_sets,
                                         ood_table, prepare_classifier, purification_table, purifier, resolve_prior,
                                         roc_auc)
from aerobust.classifier_defense.attacks import AttackOptions
from aerobust.classifier_defense.detect import detection_table
from aerobust.attacks import within_budget
from aerobust.datasets import ImageSet
from aerobust.errors import AerobustError, CheckpointError, ShapeError, ThreatViolation, UnknownNameError
from aerobust.registry import ATTACKS
from aerobust.threat import NORM_RTOL, PIXEL_ATOL, Threat
from aerobust.training import train

from .conftest import MNIST_TEST_SPEC, train_small_ae


FAST = AttackOptions(pgd_steps=10, cw_steps=30, lbfgs_iterations=15, lbfgs_search_steps=3)


def make_tiny_classifier():
    """Factory used through ``--classifier tests.test_defend:make_tiny_classifier``."""
    return MLPClassifier((1, 32, 32), 10, hidden=(64,))


@pytest.fixture(scope="module")
def classifier(mnist_train_small):
    torch.manual_seed(0)
    return train_classifier(make_tiny_classifier(), mnist_train_small.images, mnist_train_small.labels,
                            epochs=3, seed=0)


@pytest.fixture(scope="module")
def tiny_vae(mnist_train_small):
    torch.manual_seed(0)
    module = MLPAutoencoder((1, 32, 32), latent_dim=8, hidden=(64,), variational=True)
    result = train("vae", module, mnist_train_small, epochs=1, batch_size=100, lr=3e-3, seed=0, device="cpu",
                   quiet=True)
    return wrap(result.model, device="cpu")


@pytest.fixture(scope="module")
def eval_images(mnist_test):
    return mnist_test.images[:60], mnist_test.labels[:60]


# -- math against independent computations ---------------------------------------------------------
def test_roc_auc_matches_hand_counted_pairs():
    negative, positive = torch.tensor([0.1, 0.4, 0.35]), torch.tensor([0.8, 0.4, 0.2])
    # pairs (pos > neg) + 0.5 * ties over 9 pairs: 0.8 beats all 3; 0.4 beats 0.1, 0.35 and ties 0.4; 0.2 beats 0.1
    assert roc_auc(negative, positive) == pytest.approx((3 + 2.5 + 1) / 9)
    assert np.isnan(roc_auc(negative, torch.tensor([])))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=12), st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_roc_auc_equals_mann_whitney_u(negative, positive):
    u = stats.mannwhitneyu(positive, negative, alternative="two-sided").statistic
    assert roc_auc(torch.tensor(negative, dtype=torch.float), torch.tensor(positive, dtype=torch.float)) == \
        pytest.approx(u / (len(negative) * len(positive)))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=2, max_size=10).filter(lambda v: sum(v) > 1e-3))
def test_entropy_equals_scipy(weights):
    p = torch.tensor(weights, dtype=torch.float64)
    p = p / p.sum()
    assert float(entropy(p)) == pytest.approx(stats.entropy(p.numpy()), abs=1e-9)


# -- classifiers ------------------------------------------------------------------------------------------
def test_classifier_training_is_seeded_and_learns(mnist_train_small, mnist_test, classifier):
    subset = mnist_train_small.subset(range(300))
    models = []
    for _ in range(2):
        torch.manual_seed(0)  # initialization is the caller's; train_classifier seeds the shuffle and steps
        models.append(train_classifier(make_tiny_classifier(), subset.images, subset.labels, epochs=1, seed=3))
    first, second = models
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    assert accuracy(classifier, mnist_test.images, mnist_test.labels) > 0.8
    cnn = SmallCNN((3, 28, 28))
    assert cnn(torch.zeros(2, 3, 28, 28)).shape == (2, 10)


def test_prepare_classifier_seeds_the_initial_weights(mnist_train_small):
    def weights(spec, seed, **kwargs):
        network, info = prepare_classifier(spec, input_shape=(1, 32, 32), num_classes=10, seed=seed, **kwargs)
        return torch.cat([p.detach().flatten() for p in network.parameters()]), info

    first, info = weights("tests.test_defend:make_tiny_classifier", 3)
    torch.manual_seed(99)  # the global generator's state before the call does not matter
    again, _ = weights("tests.test_defend:make_tiny_classifier", 3)
    other, _ = weights("tests.test_defend:make_tiny_classifier", 4)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert info["trained_here"] is False  # a factory classifier is the user's: never trained here
    subset = ImageSet(mnist_train_small.images[:64], mnist_train_small.labels[:64], mnist_train_small.ids[:64],
                      "subset")
    _, trained = weights("mlp", 3, train_set=subset, epochs=1)
    assert trained["trained_here"] is True and trained["epochs"] == 1
    with pytest.raises(AerobustError, match="no training data"):
        weights("mlp", 3)


def test_load_classifier_roundtrip_and_bad_files(tmp_path, classifier, eval_images):
    images, _ = eval_images
    path = save_classifier(tmp_path / "clf.pt", classifier)
    loaded = load_classifier("tests.test_defend:make_tiny_classifier", input_shape=(1, 32, 32), weights=path)
    assert torch.equal(predict_logits(loaded, images), predict_logits(classifier, images))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_classifier("mlp", input_shape=(1, 32, 32), weights=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_classifier("mlp", input_shape=(1, 32, 32), weights=tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_classifier("cnn", input_shape=(1, 32, 32), weights=path)
    with pytest.raises(ShapeError, match="logits"):
        load_classifier("tests.test_defend:make_tiny_classifier", input_shape=(1, 32, 32), num_classes=3)
    with pytest.raises(UnknownNameError, match="mlp, cnn"):
        load_classifier("resnet", input_shape=(1, 32, 32))


# -- attacks ------------------------------------------------------------------------------------------------
def test_attacks_stay_in_threat_and_hurt_accuracy(classifier, eval_images):
    images, labels = eval_images
    clean = accuracy(classifier, images, labels)
    linf = attack_classifier(classifier, images, labels, "pgd", [0.0, 0.1, 0.2], options=FAST)
    assert torch.equal(linf[0.0], images)
    assert accuracy(classifier, linf[0.2], labels) < clean - 0.5
    l2 = attack_classifier(classifier, images, labels, "lbfgs", [0.5, 3.0], options=FAST)
    fooled_small = predict_logits(classifier, l2[0.5]).argmax(1) != labels
    fooled_large = predict_logits(classifier, l2[3.0]).argmax(1) != labels
    assert fooled_large.sum() > fooled_small.sum()  # thresholding a minimum-norm attack is monotone
    assert (fooled_small & ~fooled_large).sum() == 0
    cw = attack_classifier(classifier, images, labels, "cw", [3.0], options=FAST)
    assert accuracy(classifier, cw[3.0], labels) < clean


def test_attack_errors_and_threat_check(classifier, eval_images):
    images, labels = eval_images
    with pytest.raises(UnknownNameError, match="fgsm, pgd, cw, lbfgs, deepfool"):
        attack_classifier(classifier, images, labels, "jsma", [0.1])
    with pytest.raises(AerobustError, match=">= 0"):
        attack_classifier(classifier, images, labels, "fgsm", [-0.1])
    with pytest.raises(ThreatViolation):
        Threat(0.1, "linf").check(images, (images + 0.3).clamp(0, 1))
    with pytest.raises(ThreatViolation):
        Threat(100.0, "l2").check(images, images + 2.0)


def test_defend_attacks_run_on_the_audit_engine(classifier, small_ae, eval_images, monkeypatch):
    """defend's attacks use the audit attacks' optimizers and their threat check (threat.py), nothing of their own."""
    from aerobust.registry import OPTIMIZERS

    calls = []
    exact_check = Threat.check

    def recorded_check(threat, x, x_adv):
        calls.append(f"check-{threat.norm}")
        return exact_check(threat, x, x_adv)

    monkeypatch.setattr(Threat, "check", recorded_check)
    for name in ("pgd", "fgsm"):
        original = OPTIMIZERS.get(name)

        def recorded(settings, problem, run=original, name=name):
            calls.append(name)
            return run(settings, problem)

        recorded.settings_class = original.settings_class
        monkeypatch.setitem(OPTIMIZERS._entries, name, recorded)  # restored after the test
    images, labels = eval_images[0][:6], eval_images[1][:6]
    attack_classifier(classifier, images, labels, "pgd", [0.1], options=FAST)
    attack_classifier(classifier, images, labels, "fgsm", [0.1], options=FAST)
    assert calls == ["pgd", "check-linf", "fgsm", "check-linf"]
    calls.clear()
    # A minimum-norm attack: checked once in its sweep (largest budget), then at each thresholded budget.
    attack_classifier(classifier, images, labels, "lbfgs", [0.5, 3.0], options=FAST)
    assert calls == ["check-l2"] * 3
    calls.clear()
    ATTACKS.create("max-damage", optimizer="pgd", steps=2, restarts=1).sweep(small_ae, images, [1.0], 1, 0)
    assert calls == ["pgd", "check-l2"]


@settings(max_examples=8, deadline=None)
@given(st.sampled_from(["fgsm", "pgd", "cw"]), st.lists(st.floats(0, 3), min_size=1, max_size=3))
def test_every_defend_attack_output_lies_in_its_threat(classifier, eval_images, attack, budgets):
    images, labels = eval_images[0][:4], eval_images[1][:4]
    norm = get_attack(attack).norm
    budgets = [b / 10 for b in budgets] if norm == "linf" else budgets
    found = attack_classifier(classifier, images, labels, attack, budgets, options=FAST)
    assert sorted(found) == sorted(set(budgets))
    for budget, adversarial in found.items():
        delta = (adversarial - images).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        # the same slack as Threat.check: relative, plus float32 spacing of the pixels near 1
        pixels = 1 if norm == "linf" else delta.shape[1]
        assert bool((size <= budget * (1 + NORM_RTOL) + PIXEL_ATOL * pixels ** 0.5).all())
        assert float(adversarial.min()) >= 0 and float(adversarial.max()) <= 1


def test_minimum_norm_results_outside_the_budget_stay_clean(classifier, eval_images):
    images, labels = eval_images[0][:6], eval_images[1][:6]
    far = (1 - images)  # fools nobody's threat at a small radius: every pixel moved
    kept = within_budget(classifier, images, far, labels, Threat(1.0, "l2"))
    assert torch.equal(kept, images)
    fooled = predict_logits(classifier, far).argmax(1) != labels
    unbounded = within_budget(classifier, images, far, labels, Threat(1e6, "l2"))
    assert torch.equal(unbounded[fooled], far[fooled]) and torch.equal(unbounded[~fooled], images[~fooled])


# -- purification ---------------------------------------------------------------------------------------------
def test_purification_adaptive_attack_is_stronger(classifier, small_ae, eval_images):
    images, labels = eval_images
    sets = generate_adversarials(classifier, small_ae, images, labels, attacks=["pgd"],
                                 budgets={"linf": [0.15], "l2": []}, options=FAST)
    assert [(s.target, s.budget) for s in sets] == [("classifier", 0.15), ("purifier", 0.15)]
    row = purification_table(classifier, small_ae, images, labels, sets).iloc[0]
    with torch.no_grad():
        independent = (classifier(small_ae.decode(small_ae.encode(images))).argmax(1) == labels).float().mean()
    assert row["purified_clean_acc"] == pytest.approx(float(independent))
    assert row["adaptive_acc"] <= row["purified_acc"]
    assert row["purified_acc"] > row["adversarial_acc"]  # plain PGD does not transfer through the AE


def test_purifier_eot_averages_seeded_posterior_draws(classifier, tiny_vae, eval_images):
    images = eval_images[0][:8]
    purified = purifier(classifier, tiny_vae, eot_samples=3, seed=5)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        expected = torch.stack([classifier(tiny_vae.decode(tiny_vae.sample_latent(images, generator)))
                                for _ in range(3)]).mean(0)
        assert torch.allclose(purified(images), expected)
        mean_path = purifier(classifier, tiny_vae)(images)
        assert torch.allclose(mean_path, classifier(tiny_vae.reconstruct(images)))


def test_evaluation_restores_each_submodule_mode(small_ae, eval_images):
    batchnorm_classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 10), torch.nn.BatchNorm1d(10))
    batchnorm_classifier.train()
    purified = purifier(batchnorm_classifier, small_ae)
    statistics = batchnorm_classifier[2].running_mean.clone()
    predict_logits(purified, eval_images[0][:8])
    attack_classifier(purified, eval_images[0][:8], eval_images[1][:8], "fgsm", [0.1])
    assert torch.equal(statistics, batchnorm_classifier[2].running_mean)  # evaluated in eval mode
    assert batchnorm_classifier.training and not small_ae.training  # each part keeps its own mode


# -- detection ----------------------------------------------------------------------------------------------------
def test_consistency_scores_agree_with_votes(classifier, small_ae, tiny_vae, eval_images):
    images = eval_images[0][:30]
    for model in (small_ae, tiny_vae):
        scores = consistency_scores(classifier, model, images, samples=6, seed=1)
        again = consistency_scores(classifier, model, images, samples=6, seed=1)
        assert all(torch.equal(scores[k], again[k]) for k in scores)
        distinct, label_entropy = scores["distinct_labels"], scores["label_entropy"]
        assert ((distinct >= 1) & (distinct <= 6)).all()
        assert torch.equal(label_entropy == 0, distinct == 1)
        assert (label_entropy <= torch.log(distinct) + 1e-6).all()  # entropy of k outcomes is at most log k
        assert (scores["softmax_entropy"] <= np.log(10) + 1e-6).all()
    # One vote pattern checked by hand: re-draw the same noise and count the labels.
    generator = torch.Generator().manual_seed(1)
    spread = small_ae.encode(images).std(0)
    votes = []
    with torch.no_grad():
        for _ in range(6):
            code = small_ae.encode(images) + 0.25 * spread * torch.randn(len(images), small_ae.latent_dim,
                                                                          generator=generator)
            votes.append(classifier(small_ae.decode(code)).argmax(1))
    votes = torch.stack(votes, 1)
    scores = consistency_scores(classifier, small_ae, images, samples=6, seed=1)
    for i in range(len(images)):
        counts = np.bincount(votes[i].numpy(), minlength=10)
        assert scores["distinct_labels"][i] == (counts > 0).sum()
        assert float(scores["label_entropy"][i]) == pytest.approx(stats.entropy(counts), abs=1e-6)
    with pytest.raises(AerobustError, match="latent-noise"):
        consistency_scores(classifier, small_ae, images, latent_noise=0.0)


def test_detection_table_counts_only_successful_adversarials(classifier, tiny_vae, eval_images):
    images, labels = eval_images
    sets = generate_adversarials(classifier, tiny_vae, images, labels, attacks=["fgsm"],
                                 budgets={"linf": [0.2], "l2": []}, adaptive=False, options=FAST)
    table = detection_table(classifier, tiny_vae, images, labels, sets, samples=5)
    fooled = ((predict_logits(classifier, sets[0].images).argmax(1) != labels)
              & (predict_logits(classifier, images).argmax(1) == labels)).sum()
    assert table.loc[0, "n_adversarial"] == int(fooled) > 0
    assert 0 <= table.loc[0, "auc_softmax_entropy"] <= 1


# -- out-of-distribution -------------------------------------------------------------------------------------------
def test_ood_scores_and_priors(small_ae, tiny_vae, mnist_test, mnist_train_small):
    reference = mnist_test.subset(range(200))
    sets, notes = ood_sets(reference, seed=0)
    assert set(sets) >= {"uniform-noise", "inverted", "rotated-90", "sklearn-digits"}
    assert all(v.shape == reference.images.shape for v in sets.values())
    assert "fashion-mnist" in sets or any("fashion-mnist skipped" in n for n in notes)
    prior, name = resolve_prior(small_ae, "auto", mnist_train_small.images[:1000])
    assert name == "gaussian-fit"
    table, scores = ood_table(small_ae, reference.images, sets, prior)
    noise = table.set_index("ood_set").loc["uniform-noise"]
    assert noise["auc_reconstruction_error"] > 0.95
    # Fitted Gaussian log-density against scipy on the same codes.
    with torch.no_grad():
        fit_codes = small_ae.encode(mnist_train_small.images[:1000]).double().numpy()
        codes = small_ae.encode(reference.images[:20]).double().numpy()
    expected = stats.multivariate_normal(fit_codes.mean(0), np.cov(fit_codes.T)).logpdf(codes)
    assert np.allclose(-scores["in-distribution"]["negative_prior_loglik"][:20].numpy(), expected, rtol=1e-3)
    # The VAE's prior is N(0, I): closed form.
    vae_prior, vae_name = resolve_prior(tiny_vae)
    with torch.no_grad():
        z = tiny_vae.encode(reference.images[:20])
    closed = -0.5 * (z ** 2).sum(1) - 0.5 * z.shape[1] * np.log(2 * np.pi)
    assert vae_name == "standard-normal" and torch.allclose(vae_prior.log_prob(z), closed, atol=1e-4)
    gmm, _ = resolve_prior(tiny_vae, "gmm")
    centers = 10 * torch.eye(8)
    by_hand = torch.logsumexp(torch.distributions.Normal(centers, 1.0).log_prob(z[:, None]).sum(-1), 1) - np.log(8)
    assert torch.allclose(gmm.log_prob(z), by_hand, atol=1e-4)
    # A GMM-regularized model's own prior (from its sidecar) wins over the defaults.
    from aerobust.priors import GMMPrior

    trained = GMMPrior(3 * torch.eye(8)[:4], std=2.0)
    own, own_name = resolve_prior(tiny_vae, "auto", trained_prior=GMMPrior.from_description(trained.describe()))
    by_hand = torch.logsumexp(torch.distributions.Normal(trained.centers, 2.0).log_prob(z[:, None]).sum(-1), 1) \
        - np.log(4)
    assert own_name == "trained-gmm" and torch.allclose(own.log_prob(z), by_hand, atol=1e-4)
    with pytest.raises(AerobustError, match="unknown prior"):
        resolve_prior(small_ae, "laplace")


# -- calibration ------------------------------------------------------------------------------------------------------
def test_calibration_bins_and_spearman(classifier, small_ae, mnist_test):
    images, labels = mnist_test.images[:300], mnist_test.labels[:300]
    points = calibration_data(classifier, small_ae, images, labels)
    bins, summary = calibration_summary(points, bins=5)
    assert bins["n"].sum() == 300 and (bins["mean_confidence"].diff().dropna() >= 0).all()
    ranks_loss, ranks_conf = stats.rankdata(points["reconstruction_error"]), stats.rankdata(points["confidence"])
    assert summary["spearman_rho"] == pytest.approx(np.corrcoef(ranks_loss, ranks_conf)[0, 1])
    assert bins["accuracy"].iloc[-1] >= bins["accuracy"].iloc[0]  # the most confident fifth is not worse
    with pytest.raises(AerobustError, match="bins"):
        calibration_summary(points, bins=0)


# -- CLI ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, mnist_train_small, classifier):
    folder = tmp_path_factory.mktemp("defend_cli")
    model = train_small_ae(mnist_train_small.images, steps=100, hidden=(64,))
    checkpoint = save_checkpoint(folder / "ae.pt", model, architecture="mlp-ae-32",
                                 arch_kwargs={"hidden": [64], "latent_dim": 10})
    return folder, checkpoint, save_classifier(folder / "clf.pt", classifier)


def _base_args(checkpoint, weights, out):
    return ["defend", "run", "--checkpoint", str(checkpoint), "--classifier", "tests.test_defend:make_tiny_classifier",
            "--classifier-weights", str(weights), "--eval-data", MNIST_TEST_SPEC, "--pad", "32",
            "--limit", "80", "--attack-images", "16", "--attacks", "fgsm,lbfgs", "--linf-eps", "0.1",
            "--l2-eps", "2", "--lbfgs-iterations", "5", "--samples", "4", "--bins", "4", "--quiet", "--out", str(out)]


def test_cli_defend_run_writes_report(cli_files):
    folder, checkpoint, weights = cli_files
    out = folder / "report"
    result = CliRunner().invoke(main, _base_args(checkpoint, weights, out))
    assert result.exit_code == 0, result.output
    for stem in ("purification", "detection", "ood", "calibration_bins", "summary"):
        assert (out / f"{stem}.csv").is_file() and (out / f"{stem}.md").is_file()
    for figure in ("purification", "detection", "ood_scores", "calibration"):
        assert (out / f"{figure}.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["attacks"]["lbfgs"]["norm"] == "l2" and len(manifest["sample_ids"]) == 80
    summary = (out / "summary.md").read_text()
    assert "adaptive" in summary and "Spearman" in summary
    findings = (out / "findings.md").read_text()
    assert "honest number" in findings and "OOD ROC-AUC" in findings


def test_cli_defend_rerun_reuses_saved_adversarials(cli_files, monkeypatch):
    """An interrupted or repeated run resumes: finished attacks are read back, not recomputed."""
    folder, checkpoint, weights = cli_files
    out = folder / "resume"
    assert CliRunner().invoke(main, _base_args(checkpoint, weights, out)).exit_code == 0
    cached = sorted((out / "cache").rglob("*.pt"))
    assert cached, "no adversarial images were saved"
    first = (out / "purification.csv").read_text()

    def no_attacks(*args, **kwargs):
        raise AssertionError("attack recomputed although its images were saved")

    monkeypatch.setattr("aerobust.classifier_defense.purify.attack_classifier", no_attacks)
    assert CliRunner().invoke(main, _base_args(checkpoint, weights, out), catch_exceptions=False).exit_code == 0
    assert (out / "purification.csv").read_text() == first
    other = [*_base_args(checkpoint, weights, out), "--seed", "1"]
    with pytest.raises(AssertionError, match="recomputed"):  # other settings get their own cache key
        CliRunner().invoke(main, other, catch_exceptions=False)


@pytest.mark.parametrize("change, message", [
    (("--attacks", "fgsm,jsma"), "unknown classifier attack 'jsma'"),
    (("--classifier-weights", "nowhere.pt"), "nowhere.pt does not exist"),
    (("--classifier", "resnet"), "unknown classifier 'resnet'"),
    (("--linf-eps", "a,b"), "--linf-eps must be comma-separated"),
])
def test_cli_bad_inputs_fail_in_one_line(cli_files, change, message):
    folder, checkpoint, weights = cli_files
    args = _base_args(checkpoint, weights, folder / "bad")
    index = args.index(change[0])
    args[index + 1] = change[1]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


# -- verdicts follow the paired tests -----------------------------------------------------------------------------
def test_an_auc_below_one_half_is_an_inverted_detector():
    from aerobust.report.defend import auc_verdict

    assert auc_verdict(0.28).startswith("inverted detector") and "1 - AUC = 0.720" in auc_verdict(0.28)
    assert auc_verdict(0.55) == "barely better than chance"


def test_a_stalled_adaptive_attack_gets_no_helps_verdict(classifier, small_ae, eval_images):
    from aerobust.classifier_defense.purify import STALLED_FLAG, AdversarialSet

    images, labels = eval_images
    plain = generate_adversarials(classifier, small_ae, images, labels, attacks=["pgd"],
                                  budgets={"linf": [0.15], "l2": []}, options=FAST, adaptive=False)[0]
    # the same adaptive images at two budgets: an attack that stopped moving with its budget
    sets = [AdversarialSet("pgd", "linf", budget, target, plain.images if target == "classifier" else images)
            for budget in (0.1, 0.15) for target in ("classifier", "purifier")]
    table = purification_table(classifier, small_ae, images, labels, sets)
    assert (table["flags"] == STALLED_FLAG).all()
    assert not table["verdict"].str.startswith("helps, also").any()
    assert table["verdict"].str.contains("stalled").all() | table["verdict"].str.startswith("no help").all()
    # the plain gain is a paired test with its interval: purification undoes plain PGD here
    assert (table["purify_gain_low"] > 0).all() and (table["purify_gain_p_holm"] < 0.05).all()


def test_an_adaptive_accuracy_that_stops_moving_with_the_budget_is_flagged_there():
    from aerobust.classifier_defense.purify import _stalled

    table = pd.DataFrame({"attack": ["lbfgs"] * 3 + ["pgd"] * 3, "norm": ["l2"] * 3 + ["linf"] * 3,
                          "budget": [1.0, 2.0, 3.0, 0.05, 0.1, 0.2], "adaptive_acc": [0.645, 0.59, 0.59, 0.2, 0.07, 0.02]})
    assert _stalled(table) == {("lbfgs", "l2", 2.0), ("lbfgs", "l2", 3.0)}
