"""Trustworthy verdicts: fidelity beside robustness, identity of what was audited, non-finite values,
flags across lambdas and the recorded compute environment (issue 9)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from aerobust import runtime, save_checkpoint
from aerobust.architectures import MLPAutoencoder
from aerobust.attacks.sanity import DEGENERATE_SPREAD_RATIO, degenerate_model_flag
from aerobust.audit import FINGERPRINT_FILE, Audit, AuditConfig, ModelSpec
from aerobust.cli import main
from aerobust.errors import AerobustError
from aerobust.metrics import code_separation, ms_ssim, spread_ratio
from aerobust.report import lambda_flags, sanity_flags_table
from tests.conftest import MNIST_TEST_SPEC

FAST = {"max-damage": {"steps": 3}, "latent": {"steps": 3}}


def _config(models, **overrides):
    settings = dict(models=models, data=MNIST_TEST_SPEC, pad_to=32, attacks=["max-damage"], lambdas=[1.0],
                    images=4, trials=1, seed=0, classifier_epochs=1, classifier_images=200, examples=2,
                    attack_options=FAST)
    settings.update(overrides)
    return AuditConfig(**settings)


def _random_checkpoint(path, seed):
    torch.manual_seed(seed)
    model = MLPAutoencoder(input_shape=(1, 32, 32), latent_dim=10, hidden=(32,))
    return save_checkpoint(path, model, architecture="mlp-ae-32", arch_kwargs={"hidden": [32], "latent_dim": 10})


def _one_line_exit_2(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[0]


# -- fidelity -----------------------------------------------------------------------------------------

def test_a_model_whose_decoder_ignores_the_code_is_flagged_degenerate(tmp_path, mnist_test):
    out = tmp_path / "audit"
    data = tmp_path / "digits.npz"
    np.savez(data, x=mnist_test.images[:20].numpy())  # unlabelled: no latent classifier to train, a fast test
    result = CliRunner().invoke(main, [
        "audit", "--model", "tests.degenerate_models:constant_decoder", "--data", f"npz:{data}",
        "--attacks", "max-damage", "--lambdas", "1", "--images", "4", "--trials", "1",
        "--attack-option", "max-damage.steps=3", "--threads", "1", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    assert {"msssim_input_recon", "mse_input_recon", "relative_code_shift"} <= set(results.columns)
    # "perfectly robust": the reconstructions never move, and the report must say that this means nothing
    assert (results["msssim_recon_advrecon"] > 0.999).all()
    flags = pd.read_csv(out / "report" / "sanity_flags.csv")
    assert flags.loc[flags["flag"] == "degenerate-model", "model"].tolist() == ["constant_decoder"]
    page = (out / "report" / "report.html").read_text()
    assert "degenerate-model: constant_decoder" in page and "robustness scores mean nothing" in page
    fidelity = pd.read_csv(out / "report" / "fidelity.csv", index_col=0)
    assert fidelity.loc["constant_decoder", "clean/msssim_input_recon/n"] == 4


def test_degenerate_thresholds_separate_a_trained_ae_from_constant_output(small_ae, mnist_test):
    x = mnist_test.images[:32]
    with torch.no_grad():
        recon = small_ae.reconstruct(x)
    assert degenerate_model_flag(x, recon, ms_ssim(x, recon, "paper")) is None
    constant = recon[:1].expand_as(recon)
    flag = degenerate_model_flag(x, constant, ms_ssim(x, constant, "paper"))
    assert flag["flag"] == "degenerate-model" and flag["spread_ratio"] < DEGENERATE_SPREAD_RATIO


def test_fidelity_helpers_match_direct_computations(mnist_test):
    x = mnist_test.images[:6]
    codes = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    direct = [np.median([float((codes[i] - codes[j]).norm()) for j in range(6) if j != i]) for i in range(6)]
    assert code_separation(codes).tolist() == pytest.approx(direct, rel=1e-5)
    flat = x.flatten(1).double().numpy()
    half = 0.5 * flat
    expected = ((half - half.mean(0)) ** 2).sum() / ((flat - flat.mean(0)) ** 2).sum()
    assert spread_ratio(0.5 * x, x) == pytest.approx(expected) == pytest.approx(0.25)


# -- identity -----------------------------------------------------------------------------------------

def test_changed_weights_under_the_same_path_are_refused(tmp_path):
    audited = _random_checkpoint(tmp_path / "ckpt" / "model.pt", seed=1)
    other = _random_checkpoint(tmp_path / "other" / "model.pt", seed=2)
    args = ["audit", "--checkpoint", f"m={audited}", "--data", MNIST_TEST_SPEC, "--pad", "32", "--attacks",
            "max-damage", "--lambdas", "1", "--images", "2", "--trials", "1", "--attack-option",
            "max-damage.steps=2", "--quiet", "--no-report", "--out", str(tmp_path / "out")]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert CliRunner().invoke(main, args).exit_code == 0  # the same weights resume
    for suffix in (".pt", ".json"):  # a consistent pair: the sidecar hash check passes, the content differs
        shutil.copy(other.with_suffix(suffix), audited.with_suffix(suffix))
    line = _one_line_exit_2(args)
    assert "model 'm' changed" in line and "weights sha256" in line


def test_changed_data_under_the_same_name_is_refused(tmp_path, mnist_test):
    data = tmp_path / "digits.npz"
    np.savez(data, x=mnist_test.images[:20].numpy(), y=mnist_test.labels[:20].numpy())
    config = _config([ModelSpec("m", model="tests.degenerate_models:constant_decoder")], data=f"npz:{data}",
                     pad_to=None, images=3)
    Audit(config, tmp_path / "out", device="cpu", quiet=True).run()
    np.savez(data, x=mnist_test.images[20:40].numpy(), y=mnist_test.labels[20:40].numpy())
    with pytest.raises(AerobustError, match="audited data .* changed"):
        Audit(config, tmp_path / "out", device="cpu", quiet=True).run()


def test_another_thread_count_does_not_resume(tmp_path):
    config = _config([ModelSpec("m", model="tests.degenerate_models:constant_decoder")], images=2)
    runtime.set_threads(1)
    Audit(config, tmp_path, device="cpu", quiet=True).run()
    assert json.loads((tmp_path / FINGERPRINT_FILE).read_text())["compute"]["torch_threads"] == 1
    runtime.set_threads(2)  # an explicit other count: refused
    try:
        with pytest.raises(AerobustError, match="1 torch thread.* resume with --threads 1"):
            Audit(config, tmp_path, device="cpu", quiet=True).run()
    finally:
        runtime.set_threads(1)


def test_the_automatic_thread_count_takes_the_idle_cores_and_a_resume_adopts_the_recorded_one(tmp_path, monkeypatch):
    assert [runtime.automatic_threads(cores, load) for cores, load in
            [(2, 0.0), (2, 0.4), (2, 1.2), (2, 3.0), (16, 4.4), (1, 0.0)]] == [2, 2, 1, 1, 12, 1]
    monkeypatch.setattr(runtime, "usable_cores", lambda: 4)
    monkeypatch.setattr(runtime, "_load_average", lambda: 1.3)
    assert runtime.set_threads(None) == 3 and torch.get_num_threads() == 3
    assert runtime.compute_environment()["thread_choice"] == {"mode": "auto", "usable_cores": 4,
                                                               "load_average_1min": 1.3}
    config = _config([ModelSpec("m", model="tests.degenerate_models:constant_decoder")], images=2)
    try:
        runtime.set_threads(1)
        first = Audit(config, tmp_path, device="cpu", quiet=True).run()
        # Killed and rerun on a busier or idler machine: the automatic count is replaced by the recorded one.
        (tmp_path / "results.csv").unlink()
        for block in (tmp_path / "blocks").glob("*.csv"):
            block.unlink()
        runtime.set_threads(None)
        assert torch.get_num_threads() == 3
        again = Audit(config, tmp_path, device="cpu", quiet=True).run()
        assert torch.get_num_threads() == 1
        pd.testing.assert_frame_equal(again, first)
        choice = json.loads((tmp_path / "manifest.json").read_text())["compute"]["thread_choice"]
        assert choice["mode"] == "auto" and choice["adopted_from"].endswith(FINGERPRINT_FILE)
    finally:
        runtime.set_threads(1)


@pytest.mark.parametrize("flags, message", [
    (["--checkpoint", "A B={ckpt}", "--checkpoint", "A_B={ckpt}"], "'A B' and 'A_B' share one results file name"),
    (["--checkpoint", "ae={ckpt}", "--checkpoint", "AE={ckpt}"], "'ae' and 'AE' share one results file name"),
    (["--checkpoint", "m={ckpt}", "--lambdas", "1,1.0000001"], "--lambdas 1.0 and 1.0000001 print as the same"),
    (["--checkpoint", "m={ckpt}", "--lambdas", "1,1"], "--lambdas 1.0 and 1.0 print as the same"),
    (["--checkpoint", "m={ckpt}", "--attacks", "max-damage,latent,max-damage"],
     "--attacks 'max-damage' and 'max-damage' are the same attack listed twice"),
])
def test_two_results_under_one_key_are_refused(tmp_path, flags, message):
    ckpt = _random_checkpoint(tmp_path / "m.pt", seed=0)
    args = ["audit", *[f.format(ckpt=ckpt) for f in flags], "--data", MNIST_TEST_SPEC, "--pad", "32",
            "--images", "2", "--trials", "1", "--quiet", "--out", str(tmp_path / "out")]
    assert message in _one_line_exit_2(args)
    assert not (tmp_path / "out").exists()


def test_a_label_collision_is_one_line_from_a_subprocess(tmp_path):
    ckpt = _random_checkpoint(tmp_path / "m.pt", seed=0)
    run = subprocess.run([sys.executable, "-m", "aerobust", "audit", "--threads", "1", "--checkpoint", f"A B={ckpt}",
                          "--checkpoint", f"A_B={ckpt}", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        "Error: model labels 'A B' and 'A_B' share one results file name (only letters, digits, '_', '.' and '-' "
        "are kept, and case is ignored); name them apart with LABEL=SOURCE"]


# -- non-finite values ----------------------------------------------------------------------------------

def test_non_finite_codes_are_flagged_and_counted_in_every_cell(tmp_path):
    config = _config([ModelSpec("nan", model="tests.degenerate_models:nan_for_bright_images")], images=8,
                     lambdas=[0.5])
    results = Audit(config, tmp_path, device="cpu", quiet=True).run()
    from aerobust.report import build_report

    written = build_report(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["compute"]["torch_threads"] == torch.get_num_threads()
    flag = next(f for f in manifest["flags"] if f["flag"] == "non-finite")
    bad = int(results["latent_shift"].isna().sum())
    assert 0 < bad < len(results) and flag["count"] == bad and flag["of"] == len(results)
    summary = written["summary.md"].read_text()
    assert f"(n={len(results) - bad} of {len(results)})" in summary
    # a NaN code is neither a right nor a wrong classification
    assert results["classifier_correct"].isna().sum() == bad


# -- flags across lambdas -------------------------------------------------------------------------------

def test_loss_not_monotone_in_lambda_is_flagged_per_sample_across_blocks():
    rng = np.random.default_rng(0)
    rows = []
    for lam in (1.0, 3.0, 5.0):
        for image in range(5):
            loss = lam + rng.normal(0, 0.01) - (3.0 if (lam == 5.0 and image < 2) else 0.0)
            rows.append({"model": "m", "attack": "max-damage", "lambda": lam, "trial": 0, "image_id": image,
                         "attack_loss": loss})
    results = pd.DataFrame(rows)
    manifest = {"attacks": {"max-damage": {"maximize": True}}}
    (flag,) = lambda_flags(results, manifest)
    assert (flag["flag"], flag["count"], flag["of"], flag["lambda"]) == ("non-monotone-lambda", 2, 10, "1, 3, 5")
    # minimizing the same losses: every growing loss is a weaker attack
    assert lambda_flags(results, {"attacks": {"max-damage": {"maximize": False}}})[0]["count"] == 8
    assert lambda_flags(results[results["lambda"] < 5], manifest) == []


def test_a_flag_repeated_per_lambda_is_one_row_with_counts():
    flags = [{"model": "m", "attack": "latent", "lambda": lam, "flag": "unbounded-target-missed", "count": c,
              "of": 4, "message": "missed"} for lam, c in ((1.0, 2), (3.0, 2), (5.0, 3))]
    table = sanity_flags_table({"flags": flags})
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["lambda"], row["count"], row["of"]) == ("1, 3, 5", 7, 12)
    assert "λ = 5: 3 of 4" in row["message"]


# -- the compute environment ----------------------------------------------------------------------------

def test_manifests_record_threads_and_backend(tmp_path, mnist_train_small):
    from aerobust.training import train

    torch.set_num_threads(1)
    train("ae", "mlp-ae-32", mnist_train_small.subset(range(200)), epochs=1, seed=0, device="cpu",
          out_dir=tmp_path / "run", quiet=True, arch_kwargs={"hidden": [16]})
    compute = json.loads((tmp_path / "run" / "manifest.json").read_text())["compute"]
    assert compute["torch_threads"] == 1 and compute["torch_interop_threads"] >= 1
    assert compute["deterministic_algorithms"] is False and compute["parallel_backend"]


def test_threads_is_accepted_on_every_subcommand_and_named_in_help():
    runner = CliRunner()
    assert "AEROBUST_THREADS" in runner.invoke(main, ["--help"]).output
    for command in (["list"], ["audit"], ["report"], ["compare"], ["train"], ["demo"], ["defend", "purify"]):
        assert "--threads" in runner.invoke(main, [*command, "--help"]).output, command
    try:
        assert runner.invoke(main, ["list", "metrics", "--threads", "2"]).exit_code == 0
        assert torch.get_num_threads() == 2
        assert runner.invoke(main, ["list", "metrics"], env={"AEROBUST_THREADS": "3"}).exit_code == 0
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(1)
    assert "Error" in runner.invoke(main, ["--threads", "0", "list"]).output


def test_a_training_run_does_not_resume_with_another_thread_count(tmp_path, mnist_train_small):
    from aerobust.training import train

    data = mnist_train_small.subset(range(200))
    options = dict(seed=0, device="cpu", out_dir=tmp_path, quiet=True, arch_kwargs={"hidden": [16]})
    train("ae", "mlp-ae-32", data, epochs=1, **options)
    torch.set_num_threads(2)
    try:
        with pytest.raises(AerobustError, match="different torch_threads"):
            train("ae", "mlp-ae-32", data, epochs=2, resume=True, **options)
    finally:
        torch.set_num_threads(1)


def test_a_changed_attack_default_does_not_resume_into_the_old_blocks(tmp_path, monkeypatch):
    from aerobust.attacks.max_damage import MaxDamageAttack

    config = _config([ModelSpec("m", model="tests.degenerate_models:constant_decoder")], images=2,
                     attack_options={})
    default = MaxDamageAttack.default_optimizer
    monkeypatch.setattr(MaxDamageAttack, "optimizer_defaults", {default: {"steps": 2, "restarts": 1}})
    Audit(config, tmp_path, device="cpu", quiet=True).run()
    recorded = json.loads((tmp_path / FINGERPRINT_FILE).read_text())["attacks"]["max-damage"]
    assert recorded["steps"] == 2 and recorded["restarts"] == 1
    # another version's default: the same command is refused instead of mixing the two strengths
    monkeypatch.setattr(MaxDamageAttack, "optimizer_defaults", {default: {"steps": 3, "restarts": 1}})
    with pytest.raises(AerobustError, match=r"attack settings differ \(max-damage"):
        Audit(config, tmp_path, device="cpu", quiet=True).run()


def test_each_paper_attack_has_its_measured_default_optimizer_and_pgd_stays_available():
    from aerobust.registry import ATTACKS

    latent, damage, head = (ATTACKS.create(name) for name in ("latent", "max-damage", "latent-classifier"))
    assert (latent.optimizer, damage.optimizer, head.optimizer) == ("pqn", "pgd", "pgd-halving")
    settings = latent.config()
    assert (settings["steps"], latent.restarts, settings["early_stop"], settings["early_stop_rtol"]) == (96, 1, 12, 1e-4)
    settings = damage.config()
    assert (settings["steps"], settings["schedule"], damage.restarts, settings["early_stop"],
            settings["early_stop_rtol"]) == (100, "cosine", 2, 24, 1e-4)
    assert {key: head.config()[key] for key in ("steps", "patience", "rtol", "halvings", "restarts")} == \
        {"steps": 100, "patience": 4, "rtol": 1e-4, "halvings": 3, "restarts": 2}
    # PGD 100 x 2, the former default, and pgd-halving stay one option away
    former = ATTACKS.create("max-damage", early_stop=None)
    assert (former.optimizer, former.config()["steps"], former.restarts, former.config()["early_stop"]) == \
        ("pgd", 100, 2, None)
    assert ATTACKS.create("max-damage", optimizer="pgd-halving").restarts == 2
    pgd = ATTACKS.create("latent", optimizer="pgd")
    assert (pgd.config()["steps"], pgd.restarts) == (200, 1)
    # the user's own choice wins, and other optimizers keep their own defaults
    assert ATTACKS.create("latent", steps=50, restarts=3).config()["steps"] == 50
    assert ATTACKS.create("latent", restarts=3).restarts == 3
    assert ATTACKS.create("latent", optimizer="apgd").restarts == 1
